"""Getting events in: acks before turns, one reply per message, what is ignored, signatures, credentials."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from typing import Any

import pytest

from bots.base import Adapter
from bots.slack import SlackAdapter
from core.delivery import Delivery
from core.errors import ConfigError
from core.gateway import Gateway
from tests.conftest import make_settings
from tests.fakes.openai_server import FakeOpenAI, Hang
from tests.fakes.slack_api import FakeSlack, app_mention, bot_message, channel_message, im_message, next_ts, sign
from tests.slack.conftest import SIGNING_SECRET, WAIT, Mode, StartSlack


async def test_event_is_acked_before_the_model_answers(
    start_slack: StartSlack, mode: Mode, fake_openai: FakeOpenAI
) -> None:
    rig = await start_slack(mode)
    fake_openai.script(Hang())
    mention = app_mention("take your time")

    assert await rig.deliver(mention) == 200  # acked (or HTTP 200) while the model has not answered
    await asyncio.wait_for(fake_openai.received.get(), WAIT)
    assert rig.replies("C1", mention["ts"]) == []
    assert rig.slack.reactions("C1", mention["ts"]) == ["eyes"]  # but the user sees it is working

    fake_openai.release()
    assert (await rig.outcome()).result == "answered"
    assert rig.reply_texts("C1", mention["ts"]) == ["echo: take your time"]


async def test_retries_and_repeated_event_ids_get_one_reply(start_slack: StartSlack, mode: Mode) -> None:
    rig = await start_slack(mode)
    mention = app_mention("once, please")

    for retry_num in (0, 1, 0, 2):  # Slack's retries, and a plain duplicate delivery
        assert await rig.deliver(mention, event_id="EvSAME", retry_num=retry_num) == 200
    results = sorted([(await rig.outcome()).result for _ in range(4)])

    assert results == ["answered", "duplicate", "duplicate", "duplicate"]
    assert rig.reply_texts("C1", mention["ts"]) == ["echo: once, please"]
    assert rig.slack.reactions("C1", mention["ts"]) == []


async def test_app_mention_and_message_of_one_message_are_one_turn(start_slack: StartSlack, mode: Mode) -> None:
    rig = await start_slack(mode)
    root = app_mention("start a thread")
    await rig.deliver(root)
    await rig.outcome()

    # In a thread the bot takes part in, one message with a mention arrives twice, under two event IDs.
    ts = next_ts()
    await rig.deliver(app_mention("again", ts=ts, thread_ts=root["ts"]))
    await rig.deliver(channel_message("<@UBOT> again", ts=ts, thread_ts=root["ts"]))
    results = sorted([(await rig.outcome()).result for _ in range(2)])

    assert results == ["answered", "duplicate"]
    assert rig.reply_texts("C1", root["ts"]) == ["echo: start a thread", "echo: again"]


def edited(event: dict[str, Any], subtype: str) -> dict[str, Any]:
    return {
        "type": "message",
        "subtype": subtype,
        "channel": event["channel"],
        "channel_type": event["channel_type"],
        "hidden": True,
        "message": {**event, "text": "edited text"},
        "previous_message": event,
        "ts": next_ts(),
        "event_ts": event["ts"],
    }


async def test_bot_messages_edits_and_channel_events_are_ignored(start_slack: StartSlack) -> None:
    rig = await start_slack()
    original = im_message("original")
    join = channel_message("<@U5> has joined the channel", user="U5")
    join["subtype"] = "channel_join"

    await rig.deliver(bot_message("my own echo", channel_type="im", channel="D1"))  # dropped by bolt itself
    for event in (
        bot_message("another bot", bot_user_id="UOTHER", bot_id="BOTHER", channel="D1", channel_type="im"),
        edited(original, "message_changed"),
        edited(original, "message_deleted"),
        join,
    ):
        await rig.deliver(event)
        assert (await rig.outcome()).result == "ignored"
    await rig.deliver(im_message("a person"))

    assert (await rig.outcome()).result == "answered"
    assert rig.outcomes.empty()
    assert rig.reply_texts("D1") == ["my own echo", "echo: a person"]  # the echo stands for an earlier post
    assert len(rig.slack.calls_to("reactions.add")) == 1


async def test_other_bots_are_answered_when_allowed(start_slack: StartSlack) -> None:
    rig = await start_slack(slack_allow_bots=True)
    await rig.deliver(bot_message("beep", bot_user_id="UOTHER", bot_id="BOTHER", channel="D1", channel_type="im"))
    assert (await rig.outcome()).result == "answered"
    assert rig.reply_texts("D1") == ["echo: beep"]


async def test_forged_stale_and_unsigned_requests_get_401_and_reach_nothing(
    start_slack: StartSlack, fake_openai: FakeOpenAI
) -> None:
    rig = await start_slack("http")
    body = json.dumps(rig.slack.event_callback(app_mention("let me in"))).encode()
    calls_before = len(rig.slack.calls)
    json_type = {"Content-Type": "application/json"}
    attempts = {
        "forged": sign(body, "not-the-secret"),
        "stale": sign(body, SIGNING_SECRET, timestamp=int(time.time()) - 600),
        "unsigned": {},
        "tampered": sign(body.replace(b"let me in", b"let me out"), SIGNING_SECRET),
    }

    for name, headers in attempts.items():
        assert await rig.post(body, json_type | headers) == 401, name

    assert len(rig.slack.calls) == calls_before and fake_openai.requests == [] and rig.outcomes.empty()
    await rig.deliver(im_message("signed properly"))
    assert (await rig.outcome()).result == "answered"
    assert rig.outcomes.empty() and len(fake_openai.requests) == 1


async def test_api_url_without_trailing_slash_carries_every_call(start_slack: StartSlack, slack: FakeSlack) -> None:
    rig = await start_slack("socket", slack_api_url=slack.api_url.rstrip("/"))
    await rig.deliver(im_message("through the proxy"))
    assert (await rig.outcome()).result == "answered"
    assert [c.token for c in slack.calls_to("apps.connections.open")] == ["xapp-test"]
    assert rig.adapter.connected
    await rig.stop()
    assert not rig.adapter.connected


def test_slack_adapter_is_an_adapter_and_its_constructor_does_no_io(
    slack: FakeSlack, gateway: Gateway, delivery: Delivery
) -> None:
    adapter: Adapter = SlackAdapter(
        settings=settings_for(slack, slack_app_token="xapp-1"), gateway=gateway, delivery=delivery
    )
    assert (adapter.name, adapter.connected, slack.calls) == ("slack", False, [])


def settings_for(slack: FakeSlack, **overrides: Any) -> Any:
    fields = {"slack_bot_token": "xoxb-test", "slack_api_url": slack.api_url, "port": 0} | overrides
    return make_settings(**fields)


@pytest.mark.parametrize(
    ("overrides", "variable"),
    [
        ({"slack_bot_token": None, "slack_app_token": "xapp-1"}, "SLACK_BOT_TOKEN"),
        ({"slack_bot_token": "xoxp-user-token", "slack_app_token": "xapp-1"}, "SLACK_BOT_TOKEN"),
        ({"slack_app_token": "xoxb-wrong-kind"}, "SLACK_APP_TOKEN"),
        ({"slack_app_token": None, "slack_signing_secret": None}, "SLACK_SIGNING_SECRET"),
    ],
)
def test_missing_or_wrong_tokens_raise_config_error_naming_the_variable(
    slack: FakeSlack, gateway: Gateway, delivery: Delivery, overrides: dict[str, Any], variable: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        SlackAdapter(settings=settings_for(slack, **overrides), gateway=gateway, delivery=delivery)
    assert str(caught.value).startswith(variable) and "\n" not in str(caught.value)


@pytest.mark.parametrize(
    ("method", "overrides", "variable"),
    [
        ("auth.test", {"slack_app_token": "xapp-1"}, "SLACK_BOT_TOKEN"),
        ("apps.connections.open", {"slack_app_token": "xapp-1"}, "SLACK_APP_TOKEN"),
        ("auth.test", {"slack_signing_secret": SIGNING_SECRET}, "SLACK_BOT_TOKEN"),
    ],
)
async def test_rejected_tokens_stop_run_with_config_error(
    slack: FakeSlack, gateway: Gateway, delivery: Delivery, method: str, overrides: dict[str, Any], variable: str
) -> None:
    slack.fail_next(method, "invalid_auth")
    adapter = SlackAdapter(
        settings=settings_for(slack, **overrides), gateway=gateway, delivery=delivery, host="127.0.0.1"
    )
    with pytest.raises(ConfigError, match=f"^{variable} was rejected by Slack \\(invalid_auth\\)"):
        await asyncio.wait_for(adapter.run(), WAIT)
    assert not adapter.connected


async def test_port_in_use_is_a_config_error(slack: FakeSlack, gateway: Gateway, delivery: Delivery) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        settings = settings_for(slack, slack_signing_secret=SIGNING_SECRET, port=port)
        adapter = SlackAdapter(settings=settings, gateway=gateway, delivery=delivery, host="127.0.0.1")
        with pytest.raises(ConfigError, match=f"^PORT {port} "):
            await asyncio.wait_for(adapter.run(), WAIT)
