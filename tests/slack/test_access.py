"""Where the bot answers on Slack and who may DM it: SLACK_CHANNEL_IDS and SLACK_DM_POLICY."""

from __future__ import annotations

import pytest

from bots.slack.access import parse_channel_ids
from core.errors import ConfigError
from tests.fakes.slack_api import app_mention, im_message
from tests.slack.conftest import StartSlack
from tests.support.waiting import in_one_rate_window

NOT_HERE = "I'm not enabled in this channel."


async def test_a_channel_list_limits_where_mentions_are_answered(start_slack: StartSlack) -> None:
    rig = await start_slack(slack_channel_ids="C1,C3")
    await rig.deliver(app_mention("anyone?", channel="C2"))
    assert (await rig.outcome()).result == "ignored"
    here = app_mention("here", channel="C1")
    await rig.deliver(here)
    assert (await rig.outcome()).result == "answered"
    assert rig.reply_texts("C1", here["ts"]) == ["echo: here"]
    assert all(call.args.get("channel") != "C2" for call in rig.slack.calls)  # no reply, no reaction there


async def test_with_a_channel_list_only_members_of_a_listed_channel_may_dm(start_slack: StartSlack) -> None:
    rig = await start_slack(slack_channel_ids="C1")
    rig.slack.set_members("C1", ["U1", "U3"])
    await rig.deliver(im_message("let me in", user="U2", channel="D2"))
    assert (await rig.outcome()).result == "ignored"
    for text in ("hi", "again"):
        await rig.deliver(im_message(text, user="U1", channel="D1"))
        assert (await rig.outcome()).result == "answered"
    assert rig.reply_texts("D1") == ["echo: hi", "echo: again"] and rig.reply_texts("D2") == []
    assert len(rig.slack.calls_to("conversations.members")) == 1  # remembered, not asked per message


async def test_dm_policy_off_answers_no_dm_but_still_answers_mentions(start_slack: StartSlack) -> None:
    rig = await start_slack(slack_dm_policy="off")
    await rig.deliver(im_message("psst"))
    assert (await rig.outcome()).result == "ignored"
    await rig.deliver(app_mention("in the channel"))
    assert (await rig.outcome()).result == "answered"


async def test_dm_policy_open_with_a_channel_list_lets_anyone_dm(start_slack: StartSlack) -> None:
    rig = await start_slack(slack_channel_ids="C1", slack_dm_policy="open")
    await rig.deliver(im_message("let me in", user="U2", channel="D2"))
    assert (await rig.outcome()).result == "answered"
    assert rig.slack.calls_to("conversations.members") == []


async def test_a_slash_command_outside_the_listed_channels_is_refused_ephemerally(start_slack: StartSlack) -> None:
    rig = await start_slack(slack_channel_ids="C1")
    envelope = await rig.slack.send_slash_command("/reset", user_id="U1", channel_id="C2")
    ack = await rig.slack.wait_ack(envelope, timeout=5)
    assert ack.payload is not None and ack.payload.get("text") == NOT_HERE
    assert (await rig.outcome()).result == "ignored"


def test_channel_ids_are_parsed_and_a_channel_name_is_refused() -> None:
    assert parse_channel_ids("C01, G02 C03") == {"C01", "G02", "C03"} and parse_channel_ids(None) == frozenset()
    with pytest.raises(ConfigError, match="SLACK_CHANNEL_IDS: 'general' is not a channel ID"):
        parse_channel_ids("C01,general")


async def test_over_the_rate_limit_one_notice_per_window_and_no_other_slack_call(start_slack: StartSlack) -> None:
    await in_one_rate_window()
    rig = await start_slack(rate_limit_per_minute=2)
    for text in ("one", "two", "three", "four", "help"):
        await rig.deliver(im_message(text))
        assert (await rig.outcome()).result == "answered"
    texts = rig.reply_texts("D1")
    assert texts[:2] == ["echo: one", "echo: two"] and len(texts) == 3 and "faster than I can answer" in texts[2]
    assert len(rig.slack.calls_to("reactions.add")) == 2  # the answered two only: a refusal shows no indicator
    assert len(rig.slack.calls_to("reactions.remove")) == 2
    assert len(rig.slack.calls_to("chat.postMessage")) == 3
