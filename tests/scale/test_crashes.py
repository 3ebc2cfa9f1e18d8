"""Real `chat-gateway` processes killed and stopped mid-turn: every message is still answered once, stored once.

Each process is `chat-gateway run slack` (HTTP mode) or `chat-gateway run discord`, configured by its
environment alone, against FakeSlack or FakeDiscord, the fake OpenAI server and the session's Redis.
The lease is short (LOCK_TIMEOUT_SECONDS=2) so what a dead process held is free again quickly:
- SIGKILL mid-model, then a new process: it answers from the inbox, the model is asked again;
- SIGKILL of one of two replicas mid-turn: the other one's sweeper answers, no restart needed;
- SIGKILL after the answer was stored, while its post waits out a rate limit: the stored reply is posted,
  the model is not asked again;
- SIGTERM with a turn longer than SHUTDOWN_GRACE_SECONDS: exit 0 at once, the lease handed back, and
  the next process answers; nobody is asked to send the message again;
- SIGKILL mid-model on Discord, then a new process: one message created (its nonce is the message's).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bots.discord_adapter.writer import reply_nonce
from core.store import RedisConnection
from core.store.keys import ConversationKeys
from tests.fakes.discord_api import DEFAULT_TOKEN, FakeDiscord, SentMessage
from tests.fakes.discord_ids import ALICE_ID, APP_ID, BOT_ID, CHANNEL_ID, GUILD_ID
from tests.fakes.openai_server import Delay, FakeOpenAI, Hang
from tests.fakes.slack_api import FakeSlack, Message, im_message
from tests.support.processes import GatewayProcess, ProcessGroup
from tests.support.waiting import wait_until

pytestmark = pytest.mark.slow

SECRET = "crash-signing-secret"
LEASE = 2  # LOCK_TIMEOUT_SECONDS
RESUME_WITHIN = LEASE + 10  # a dead owner's lease runs out, then a sweep (every LEASE / 3 s) takes the message
GRACE = 1  # SHUTDOWN_GRACE_SECONDS in the SIGTERM test
USER, DM = "U1", "D1"
SLACK_THREAD = f"user_{USER}_session_T1-{DM}"
DISCORD_THREAD = f"user_{ALICE_ID}_session_{CHANNEL_ID}"


@pytest.fixture
async def store(redis_url: str, key_prefix: str) -> AsyncIterator[RedisConnection]:
    """The processes' Redis as a test reads it: histories, turn records, inboxes."""
    connection = RedisConnection.from_url(redis_url, key_prefix=key_prefix)
    try:
        yield connection
    finally:
        await connection.aclose()


@pytest.fixture
async def model() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI() as fake:
        yield fake


def common_env(redis_url: str, key_prefix: str, model: FakeOpenAI) -> dict[str, str]:
    return {
        "REDIS_URL": redis_url, "KEY_PREFIX": key_prefix, "OPENAI_BASE_URL": model.base_url,
        "LOCK_TIMEOUT_SECONDS": str(LEASE), "RATE_LIMIT_PER_MINUTE": "0", "LOG_LEVEL": "INFO",
    }  # fmt: skip


@pytest.fixture
async def slack_processes(
    tmp_path: Path, slack: FakeSlack, model: FakeOpenAI, redis_url: str, key_prefix: str
) -> AsyncIterator[ProcessGroup]:
    """`chat-gateway run slack` processes to start; those still running get SIGTERM at the end and exit 0."""
    env = common_env(redis_url, key_prefix, model) | {
        "SLACK_BOT_TOKEN": "xoxb-test", "SLACK_SIGNING_SECRET": SECRET, "SLACK_API_URL": slack.api_url,
    }  # fmt: skip
    async with ProcessGroup(tmp_path, ["slack"], env).running() as group:
        yield group


@pytest.fixture
async def discord() -> AsyncIterator[FakeDiscord]:
    async with FakeDiscord(bot_user_id=BOT_ID, application_id=APP_ID) as fake:
        fake.add_user(ALICE_ID, "alice", global_name="Alice")
        fake.add_guild(GUILD_ID, "Test Guild")
        fake.add_member(GUILD_ID, ALICE_ID)
        fake.add_text_channel(CHANNEL_ID, GUILD_ID, "general")
        yield fake


@pytest.fixture
async def discord_processes(
    tmp_path: Path, discord: FakeDiscord, model: FakeOpenAI, redis_url: str, key_prefix: str
) -> AsyncIterator[ProcessGroup]:
    env = common_env(redis_url, key_prefix, model) | {
        "DISCORD_TOKEN": DEFAULT_TOKEN,
        "DISCORD_API_URL": discord.api_url,
    }
    async with ProcessGroup(tmp_path, ["discord"], env).running() as group:
        yield group


# -- what the test reads ----------------------------------------------------------------------------------------


def bot_replies(slack: FakeSlack) -> list[Message]:
    return [m for m in slack.messages(DM) if m.bot_id]


async def history(store: RedisConnection, namespace: str, thread_id: str) -> list[str]:
    return [m.text for m in await store.store(thread_id, namespace).list_messages()]


async def turn_states(store: RedisConnection, namespace: str, thread_id: str) -> list[str]:
    turns = ConversationKeys.of(store.key_prefix, namespace, thread_id).turns
    return [json.loads(raw)["state"] for raw in await store.client.hvals(turns)]


async def delivered(store: RedisConnection, namespace: str, thread_id: str) -> None:
    """Until the conversation's inbox is empty: every message marked delivered, nothing left for anyone."""
    inbox = ConversationKeys.of(store.key_prefix, namespace, thread_id).inbox

    async def empty() -> bool:
        return await store.client.xlen(inbox) == 0

    await wait_until(empty, timeout=RESUME_WITHIN)


async def send_dm(process: GatewayProcess, slack: FakeSlack, text: str) -> tuple[bytes, str]:
    """A DM to the bot through `process`, acknowledged (200) only once it is in the inbox; the body and its ts."""
    event = im_message(text, user=USER, channel=DM)
    body = json.dumps(slack.event_callback(event)).encode()
    assert await process.post_slack_event(body, SECRET) == 200
    return body, event["ts"]


async def answered_within(slack: FakeSlack, seconds: float) -> None:
    """Until the bot's reply is in the DM; it must be there within `seconds` from now."""

    async def replied() -> bool:
        return bool(bot_replies(slack))

    try:
        await wait_until(replied, timeout=seconds, every=0.1)
    except TimeoutError:
        raise AssertionError(f"no reply within {seconds}s; Slack saw {[c.method for c in slack.calls]}") from None


async def assert_answered_once(
    slack: FakeSlack, store: RedisConnection, model: FakeOpenAI, text: str, ts: str, *, model_calls: int
) -> None:
    await delivered(store, "slack", SLACK_THREAD)
    assert slack.reactions(DM, ts) == []  # the :eyes: of the process that died went with the answer
    assert [m.visible_text for m in bot_replies(slack)] == [f"echo: {text}"]  # no notice, no second reply
    assert len([c for c in slack.calls_to("chat.postMessage") if c.ok]) == 1
    assert len(model.requests) == model_calls
    assert await history(store, "slack", SLACK_THREAD) == [text, f"echo: {text}"]
    assert await turn_states(store, "slack", SLACK_THREAD) == ["delivered"]


# -- the tests --------------------------------------------------------------------------------------------------


async def test_a_process_killed_mid_model_leaves_the_message_to_the_next_process(
    slack_processes: ProcessGroup, slack: FakeSlack, model: FakeOpenAI, store: RedisConnection
) -> None:
    first = await slack_processes.start_ready("first")
    model.script(Hang())
    body, ts = await send_dm(first, slack, "remember 42")
    await asyncio.wait_for(model.received.get(), 15)  # the turn is at the model
    first.kill()
    assert await first.wait(10) == -9
    assert not bot_replies(slack) and await turn_states(store, "slack", SLACK_THREAD) == ["received"]

    second = await slack_processes.start_ready("second")
    # Slack, which got its 200 from the first process, may still deliver the event again: a duplicate now.
    assert await second.post_slack_event(body, SECRET, retry_num=1) == 200
    await answered_within(slack, RESUME_WITHIN)
    await assert_answered_once(slack, store, model, "remember 42", ts, model_calls=2)


async def test_when_one_of_two_replicas_is_killed_mid_turn_the_other_answers(
    slack_processes: ProcessGroup, slack: FakeSlack, model: FakeOpenAI, store: RedisConnection
) -> None:
    doomed, survivor = [await slack_processes.start("doomed"), await slack_processes.start("survivor")]
    for process in (doomed, survivor):
        await process.wait_ready()
    model.script(Hang())
    _, ts = await send_dm(doomed, slack, "which replica?")  # the load balancer chose the doomed one
    await asyncio.wait_for(model.received.get(), 15)
    doomed.kill()
    await answered_within(slack, RESUME_WITHIN)  # no restart: the survivor's sweeper took the message over
    assert survivor.running and await doomed.wait(10) == -9
    await assert_answered_once(slack, store, model, "which replica?", ts, model_calls=2)


async def test_a_process_killed_after_storing_the_answer_posts_nothing_twice_and_asks_the_model_once(
    slack_processes: ProcessGroup, slack: FakeSlack, model: FakeOpenAI, store: RedisConnection
) -> None:
    # The progress post and the final post are rate limited: the final one waits a minute in slack_sdk,
    # after the answer was committed. The process dies in that wait.
    slack.fail_next("chat.postMessage", status=429, retry_after=60)
    slack.fail_next("chat.postMessage", status=429, retry_after=60)
    first = await slack_processes.start_ready("first")
    _, ts = await send_dm(first, slack, "answer me once")

    async def final_post_waiting() -> bool:
        return len(slack.calls_to("chat.postMessage")) >= 2

    await wait_until(final_post_waiting, timeout=15)
    assert await turn_states(store, "slack", SLACK_THREAD) == ["answered"]
    first.kill()
    assert await first.wait(10) == -9

    await slack_processes.start_ready("second")
    await answered_within(slack, RESUME_WITHIN)
    await assert_answered_once(slack, store, model, "answer me once", ts, model_calls=1)  # the stored reply, posted


async def test_sigterm_mid_turn_exits_0_within_the_grace_and_the_next_process_answers(
    slack_processes: ProcessGroup, slack: FakeSlack, model: FakeOpenAI, store: RedisConnection
) -> None:
    first = await slack_processes.start_ready("first", SHUTDOWN_GRACE_SECONDS=str(GRACE))
    model.script(Delay(30))  # far longer than the grace
    _, ts = await send_dm(first, slack, "a long question")
    await asyncio.wait_for(model.received.get(), 15)
    stopped = time.monotonic()
    first.terminate()
    assert await first.wait(GRACE + 15) == 0, first.log_tail()
    assert time.monotonic() - stopped < GRACE + 5
    inbox = ConversationKeys.of(store.key_prefix, "slack", SLACK_THREAD).inbox
    (pending,) = await store.client.xpending_range(inbox, "turns", min="-", max="+", count=10)
    assert int(pending["time_since_delivered"]) > 10 * LEASE * 1000  # handed back, not left to run out
    assert not bot_replies(slack)  # no notice, no half answer: nobody is asked to send it again

    await slack_processes.start_ready("second")
    await answered_within(slack, RESUME_WITHIN)
    await assert_answered_once(slack, store, model, "a long question", ts, model_calls=2)


async def test_a_discord_process_killed_mid_model_leaves_the_message_to_the_next_process(
    discord_processes: ProcessGroup, discord: FakeDiscord, model: FakeOpenAI, store: RedisConnection
) -> None:
    first = await discord_processes.start_ready("first")
    model.script(Hang())
    asked = await discord.send_message_create(
        channel_id=CHANNEL_ID, author_id=ALICE_ID, content=f"<@{BOT_ID}> remember 42", mentions=[BOT_ID]
    )
    await asyncio.wait_for(model.received.get(), 15)
    first.kill()
    assert await first.wait(10) == -9
    assert await turn_states(store, "discord", DISCORD_THREAD) == ["received"]

    second = await discord_processes.start_ready("second")

    def replies() -> list[SentMessage]:
        return [m for m in discord.sent_messages if m.channel_id == CHANNEL_ID]

    async def replied() -> bool:
        return bool(replies())

    await wait_until(replied, timeout=RESUME_WITHIN, every=0.1)
    await delivered(store, "discord", DISCORD_THREAD)
    (reply,) = replies()
    assert discord.messages[reply.id]["content"] == "echo: remember 42"
    assert reply.message_reference is not None and int(reply.message_reference["message_id"]) == asked
    assert reply.nonce == str(reply_nonce(str(asked), 0))  # any process posting this reply sends this nonce
    assert not discord.deduplicated_sends and len(model.requests) == 2 and second.running
    assert await history(store, "discord", DISCORD_THREAD) == ["remember 42", "echo: remember 42"]
    assert await turn_states(store, "discord", DISCORD_THREAD) == ["delivered"]
