"""Conversations through a running adapter: where replies go, whose memory is whose, what survives a restart."""

from __future__ import annotations

import asyncio

import pytest

from core.gateway import Gateway
from core.llm import OpenAIChatModel
from core.store import open_backend
from tests.conftest import make_settings, openai_client
from tests.fakes.openai_server import FakeOpenAI, Hang
from tests.fakes.slack_api import app_mention, channel_message, im_message
from tests.slack.conftest import WAIT, Mode, StartSlack


def user_texts(fake_openai: FakeOpenAI) -> list[str]:
    """The user messages the model was sent in its latest request (history and the new one)."""
    return [m["content"] for m in fake_openai.requests[-1].messages if m["role"] == "user"]


async def test_mention_in_channel_is_answered_in_the_mentions_thread(start_slack: StartSlack, mode: Mode) -> None:
    rig = await start_slack(mode)
    mention = app_mention("hello there", channel="C1")

    assert await rig.deliver(mention) == 200
    outcome = await rig.outcome()

    assert outcome.result == "answered" and outcome.reply is not None
    assert outcome.reply.thread_id == "user_U1_session_T1-C1"
    assert rig.reply_texts("C1", mention["ts"]) == ["echo: hello there"]
    assert [m.thread_ts for m in rig.replies("C1", mention["ts"])] == [mention["ts"]]
    # The working indicator was shown on the mention and taken away at the end.
    assert [c.args["name"] for c in rig.slack.calls_to("reactions.add")] == ["eyes"]
    assert rig.slack.reactions("C1", mention["ts"]) == []


async def test_direct_message_is_answered_in_the_dm(start_slack: StartSlack, mode: Mode) -> None:
    rig = await start_slack(mode)
    await rig.deliver(im_message("hi there", channel="D1"))
    assert (await rig.outcome()).result == "answered"
    assert rig.reply_texts("D1") == ["echo: hi there"]


@pytest.mark.parametrize("status_refused", [False, True])
async def test_dm_thread_shows_the_assistant_status_while_working(
    start_slack: StartSlack, fake_openai: FakeOpenAI, status_refused: bool
) -> None:
    rig = await start_slack()
    if status_refused:  # an app that is no assistant: the reaction stands in
        rig.slack.fail_next("assistant.threads.setStatus", "not_allowed")
    root = rig.slack.add_message("D1", "earlier", user="U1")
    message = im_message("in a thread", thread_ts=root.ts)
    fake_openai.script(Hang())

    await rig.deliver(message)
    await asyncio.wait_for(fake_openai.received.get(), WAIT)
    working = (rig.slack.assistant_status("D1", root.ts), rig.slack.reactions("D1", message["ts"]))
    fake_openai.release()
    await rig.outcome()

    assert working == ((None, ["eyes"]) if status_refused else ("is thinking…", []))
    assert not rig.slack.assistant_status("D1", root.ts) and rig.slack.reactions("D1", message["ts"]) == []
    assert rig.reply_texts("D1", root.ts)[-1] == "echo: in a thread"


async def test_mention_inside_an_existing_thread_replies_in_that_thread(start_slack: StartSlack) -> None:
    rig = await start_slack()
    root = rig.slack.add_message("C1", "a thread someone started", user="U2")
    await rig.deliver(app_mention("thoughts?", thread_ts=root.ts))
    await rig.outcome()
    assert rig.reply_texts("C1", root.ts) == ["echo: thoughts?"]
    assert all(m.thread_ts == root.ts for m in rig.replies("C1", root.ts))


async def test_thread_the_bot_answered_in_gets_follow_ups_without_a_mention(start_slack: StartSlack) -> None:
    rig = await start_slack()
    mention = app_mention("start", user="U1")
    await rig.deliver(mention)
    await rig.outcome()

    await rig.deliver(channel_message("and another thing", user="U2", thread_ts=mention["ts"]))
    assert (await rig.outcome()).result == "answered"
    elsewhere = rig.slack.add_message("C1", "not the bot's thread", user="U2")
    await rig.deliver(channel_message("ignored here", user="U2", thread_ts=elsewhere.ts))
    assert (await rig.outcome()).result == "ignored"

    assert rig.reply_texts("C1", mention["ts"]) == ["echo: start", "echo: and another thing"]
    assert rig.replies("C1", elsewhere.ts) == []


async def test_two_users_in_one_channel_keep_separate_memories(
    start_slack: StartSlack, fake_openai: FakeOpenAI
) -> None:
    rig = await start_slack()
    await rig.deliver(app_mention("my name is Alice", user="U1"))
    await rig.outcome()
    await rig.deliver(app_mention("what is my name?", user="U2"))
    await rig.outcome()
    assert user_texts(fake_openai) == ["what is my name?"]
    await rig.deliver(app_mention("and mine?", user="U1"))
    await rig.outcome()
    assert user_texts(fake_openai) == ["my name is Alice", "and mine?"]


async def test_one_user_in_two_channels_keeps_separate_memories(
    start_slack: StartSlack, fake_openai: FakeOpenAI
) -> None:
    rig = await start_slack()
    await rig.deliver(app_mention("the code is 42", channel="C1"))
    await rig.outcome()
    await rig.deliver(app_mention("what is the code?", channel="C2"))
    await rig.outcome()
    assert user_texts(fake_openai) == ["what is the code?"]
    await rig.deliver(im_message("and in a DM?"))
    await rig.outcome()
    assert user_texts(fake_openai) == ["and in a DM?"]


async def test_memory_and_threads_survive_an_adapter_restart(
    start_slack: StartSlack, fake_openai: FakeOpenAI, redis_url: str, key_prefix: str
) -> None:
    first = await start_slack()
    mention = app_mention("remember the number 42")
    await first.deliver(mention)
    await first.outcome()
    await first.stop()

    # A new process: its own gateway and connection pool, the same Redis.
    settings = make_settings(redis_url=redis_url, key_prefix=key_prefix)
    backend = open_backend(settings)
    gateway = Gateway(settings, backend, OpenAIChatModel("m", async_client=openai_client(fake_openai)))
    second = await start_slack(gateway=gateway)
    try:
        await second.deliver(channel_message("which number?", thread_ts=mention["ts"]))
        assert (await second.outcome()).result == "answered"  # the thread is still the bot's
    finally:
        await second.stop()
        await backend.aclose()
    assert user_texts(fake_openai) == ["remember the number 42", "which number?"]


async def test_reset_command_forgets_and_answers_ephemerally(
    start_slack: StartSlack, mode: Mode, fake_openai: FakeOpenAI
) -> None:
    rig = await start_slack(mode)
    await rig.deliver(app_mention("remember blue", user="U1", channel="C1"))
    await rig.outcome()
    await rig.deliver(app_mention("remember red", user="U2", channel="C1"))
    await rig.outcome()

    await rig.command("/reset", user_id="U1", channel_id="C1")
    outcome = await rig.outcome()
    answer = await rig.slack.next_call("response_url")

    assert outcome.result == "answered" and outcome.reply is not None and outcome.reply.kind == "command"
    assert answer.args["response_type"] == "ephemeral" and "forgotten" in answer.args["text"]
    await rig.deliver(app_mention("what do you remember?", user="U1", channel="C1"))
    await rig.outcome()
    assert user_texts(fake_openai) == ["what do you remember?"]
    await rig.deliver(app_mention("and me?", user="U2", channel="C1"))
    await rig.outcome()
    assert user_texts(fake_openai) == ["remember red", "and me?"]  # only the caller's memory went


async def test_usage_command_shows_the_callers_tokens_ephemerally(start_slack: StartSlack, mode: Mode) -> None:
    rig = await start_slack(mode)
    await rig.deliver(app_mention("hello there", user="U1", channel="C1"))
    await rig.outcome()
    await rig.command("/usage", user_id="U1", channel_id="C1")
    outcome = await rig.outcome()
    answer = await rig.slack.next_call("response_url")
    assert outcome.reply is not None and outcome.reply.kind == "command"
    assert answer.args["response_type"] == "ephemeral"
    assert (
        answer.args["text"].startswith("Today (UTC) you used ")
        and "There is no daily token budget" in answer.args["text"]
    )
    assert not answer.args["text"].startswith("Today (UTC) you used 0 tokens")


async def test_commands_typed_in_a_dm_are_answered_by_the_gateway(
    start_slack: StartSlack, fake_openai: FakeOpenAI
) -> None:
    rig = await start_slack()
    for text in ("help", "memory", "reset"):
        await rig.deliver(im_message(text))
        outcome = await rig.outcome()
        assert outcome.reply is not None and outcome.reply.kind == "command"
    assert fake_openai.requests == []
    assert len(rig.reply_texts("D1")) == 3


async def test_in_thread_scope_slash_reset_points_to_the_thread_and_a_typed_reset_there_forgets_it(
    start_slack: StartSlack, fake_openai: FakeOpenAI
) -> None:
    rig = await start_slack(memory_scope="thread")
    root = app_mention("remember green", user="U1", channel="C1")
    await rig.deliver(root)
    await rig.outcome()

    await rig.command("/reset", user_id="U1", channel_id="C1")  # Slack never sends one from inside a thread
    await rig.outcome()
    answer = await rig.slack.next_call("response_url")
    assert answer.args["text"].startswith("There was nothing to forget") and "thread" in answer.args["text"]

    await rig.deliver(app_mention("reset", user="U1", channel="C1", thread_ts=root["ts"]))
    await rig.outcome()
    assert rig.reply_texts("C1", root["ts"])[-1].startswith("Done: I've forgotten the 2 messages of this thread's")
    await rig.deliver(app_mention("what colour?", user="U1", channel="C1", thread_ts=root["ts"]))
    await rig.outcome()
    assert user_texts(fake_openai) == ["what colour?"]
