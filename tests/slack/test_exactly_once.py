"""Slack replies posted exactly once: a post whose answer was lost, and a turn handed to another process."""

from __future__ import annotations

import asyncio

from tests.fakes.openai_server import FakeOpenAI, Hang, Reply
from tests.fakes.slack_api import app_mention, im_message
from tests.slack.conftest import StartSlack
from tests.slack.test_replies import ask


async def test_a_post_slack_stored_but_answered_with_500_appears_once(
    start_slack: StartSlack, fake_openai: FakeOpenAI
) -> None:
    rig = await start_slack(progress_interval_seconds=3600)
    fake_openai.script(Reply("the one and only answer"))
    rig.slack.lose_responses("chat.postMessage", count=1, status=500)
    assert await ask(rig, im_message("post it once")) == ["the one and only answer"]
    assert len([c for c in rig.slack.calls_to("chat.postMessage") if c.lost]) == 1


async def test_a_post_whose_connection_dropped_after_slack_stored_it_appears_once(
    start_slack: StartSlack, fake_openai: FakeOpenAI
) -> None:
    rig = await start_slack(progress_interval_seconds=3600)
    fake_openai.script(Reply("dropped but there"))
    rig.slack.drop_responses("chat.postMessage", count=1)
    assert await ask(rig, im_message("again once")) == ["dropped but there"]


async def test_a_turn_released_at_shutdown_is_answered_once_by_another_process(
    start_slack: StartSlack, fake_openai: FakeOpenAI
) -> None:
    """The first process drains with no grace while the model hangs; the second answers the message."""
    first = await start_slack("http", lock_timeout_seconds=2)
    second = await start_slack("http", lock_timeout_seconds=2)
    fake_openai.script(Hang(then=Reply("late, from the first")), Reply("answered by the second"))
    mention = app_mention("who answers?")
    assert await first.deliver(mention) == 200  # acknowledged: it is in the inbox
    await asyncio.wait_for(fake_openai.received.get(), 5)
    await first.stop(grace_seconds=0)  # releases the lease; the message stays in the inbox
    fake_openai.release()
    outcome = await asyncio.wait_for(second.outcomes.get(), 15)
    assert outcome.result == "answered"
    assert second.reply_texts("C1", mention["ts"]) == ["answered by the second"]
    history = await second.gateway.backend.store("user_U1_session_T1-C1", "slack").list_messages()
    assert [m.text for m in history] == ["who answers?", "answered by the second"]
