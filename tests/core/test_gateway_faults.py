"""The delivery runner when Redis goes away and comes back, or holds data that is not ours.

A message is either stored (then it is answered once) or `receive` raises and nothing is stored, so the
platform, not acknowledged, delivers it again. Data that is not ours never crashes the runtime.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from redis.asyncio import Redis

from core.errors import StoreError, StoreUnavailableError
from core.llm import OpenAIChatModel
from core.turns import IncomingMessage
from tests.conftest import make_settings, openai_client
from tests.fakes.openai_server import FakeOpenAI, Hang
from tests.support.delivery import Runtime, start_runtime, stop_runtime
from tests.support.redis_proc import RedisServer
from tests.support.waiting import wait_until

THREAD = "user_U1_session_C1"


def msg(text: str, event_id: str, user: str = "U1") -> IncomingMessage:
    return IncomingMessage(platform="test", event_id=event_id, user_id=user, channel_id="C1", text=text)


def model(fake: FakeOpenAI) -> OpenAIChatModel:
    return OpenAIChatModel("m", async_client=openai_client(fake))


async def history(rt: Runtime, thread_id: str = THREAD) -> list[str]:
    return [m.text for m in await rt.gateway.backend.store(thread_id, "test").list_messages()]


async def settled(rt: Runtime) -> None:
    """Every turn of the runtime has finished (its delivery is recorded, not only its reply posted)."""

    async def idle() -> bool:
        return rt.delivery.in_flight == 0

    await wait_until(idle, timeout=10)


async def test_redis_stopped_mid_conversation_refuses_the_message_then_answers_its_retry_once(
    tmp_path: Path, fake_openai: FakeOpenAI
) -> None:
    """Redis down: `receive` raises (nothing stored, the platform retries); back up: the retry is answered once."""
    server = RedisServer(tmp_path / "redis", args=["--appendonly", "yes", "--appendfsync", "always"])
    server.start()
    settings = make_settings(redis_url=server.url, redis_timeout_seconds=0.5)
    rt = await start_runtime(settings, model(fake_openai))
    try:
        assert await rt.ask(msg("before", "E1")) == "echo: before"
        await settled(rt)
        server.stop()
        during = msg("during", "E2")
        with pytest.raises(StoreUnavailableError) as refused:
            await asyncio.wait_for(rt.delivery.receive(during), 15)
        assert "memory is unreachable" in refused.value.user_message
        assert during.dedupe_key not in rt.replies.texts and during.dedupe_key not in rt.replies.notices
        server.start()
        assert await asyncio.wait_for(rt.ask(during), 15) == "echo: during"  # the platform's retry
        assert await rt.ask(msg("after", "E3")) == "echo: after"
        await settled(rt)
        assert rt.replies.texts == {"E1": ["echo: before"], "E2": ["echo: during"], "E3": ["echo: after"]}
        assert rt.replies.notices == {}
        assert await history(rt) == ["before", "echo: before", "during", "echo: during", "after", "echo: after"]
        assert await rt.delivery.receive(during) == "duplicate"  # a late redelivery is not answered again
    finally:
        await stop_runtime(rt)
        server.stop()


async def test_corrupt_history_is_skipped_and_the_turn_still_answers(
    redis_url: str, redis_client: Redis, key_prefix: str, fake_openai: FakeOpenAI
) -> None:
    rt = await start_runtime(make_settings(redis_url=redis_url, key_prefix=key_prefix), model(fake_openai))
    try:
        key = f"{key_prefix}:test:{{{THREAD}}}:messages"
        await redis_client.rpush(key, b"\xff\xfe not utf8", "[1,2,3]", '{"role":"user"}')
        assert await rt.ask(msg("still works?", "E1")) == "echo: still works?"
        assert fake_openai.requests[-1].messages[-1] == {"role": "user", "content": "still works?"}
        assert len(fake_openai.requests[-1].messages) == 2  # system prompt + the new message; no garbage sent
        assert await history(rt) == ["still works?", "echo: still works?"]  # the garbage is skipped on read too
    finally:
        await stop_runtime(rt)


async def test_a_wrong_type_key_at_commit_is_a_clear_reply_not_a_crash(
    redis_url: str, redis_client: Redis, key_prefix: str, fake_openai: FakeOpenAI
) -> None:
    """The store refuses the turn's commit: the user is told nothing was saved (true), the runtime goes on."""
    rt = await start_runtime(make_settings(redis_url=redis_url, key_prefix=key_prefix), model(fake_openai))
    try:
        key = f"{key_prefix}:test:{{{THREAD}}}:messages"
        fake_openai.script(Hang())
        hello = msg("hello", "E1")
        assert await rt.delivery.receive(hello) == "taken"
        await asyncio.wait_for(fake_openai.received.get(), 5)  # the turn has its history; the model answers next
        await redis_client.set(key, "oops")
        fake_openai.release()
        reply = await rt.replies.wait_for(hello.dedupe_key)
        assert "memory had a problem" in reply and "saved nothing" in reply
        assert await redis_client.get(key) == b"oops"  # nothing of the turn was written
        assert await rt.ask(msg("other conversation", "E2", user="U2")) == "echo: other conversation"
        await settled(rt)
        await redis_client.delete(key)  # the operator repairs the key: the conversation goes on
        assert await rt.ask(msg("again", "E3")) == "echo: again"
        assert await history(rt) == ["again", "echo: again"]
        assert rt.replies.texts["E1"] == [reply] and rt.replies.notices == {}
    finally:
        await stop_runtime(rt)


async def test_a_wrong_type_key_at_arrival_is_a_clear_error_and_the_message_is_answered_once_repaired(
    redis_url: str, redis_client: Redis, key_prefix: str, fake_openai: FakeOpenAI
) -> None:
    """The store refuses the message: `receive` raises a clear StoreError; the platform's retry after the
    repair is answered once (never dropped as a duplicate of the refused attempt)."""
    rt = await start_runtime(make_settings(redis_url=redis_url, key_prefix=key_prefix), model(fake_openai))
    try:
        key = f"{key_prefix}:test:{{{THREAD}}}:messages"
        await redis_client.set(key, "oops")
        hello = msg("hello", "E1")
        with pytest.raises(StoreError) as refused:
            await rt.delivery.receive(hello)
        assert not isinstance(refused.value, StoreUnavailableError)
        assert "memory had a problem" in refused.value.user_message
        assert await rt.ask(msg("other conversation", "E2", user="U2")) == "echo: other conversation"
        await redis_client.delete(key)
        await rt.delivery.receive(hello)  # the platform delivers it again
        assert await rt.replies.wait_for(hello.dedupe_key) == "echo: hello"
        await settled(rt)
        assert rt.replies.texts["E1"] == ["echo: hello"] and rt.replies.notices == {}
        assert await history(rt) == ["hello", "echo: hello"]
    finally:
        await stop_runtime(rt)
