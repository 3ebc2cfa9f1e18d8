"""The gateway when Redis goes away and comes back, or holds data that is not ours."""

from __future__ import annotations

import asyncio
from pathlib import Path

from redis.asyncio import Redis

from core.gateway import Gateway
from core.llm import OpenAIChatModel
from core.store import open_backend
from core.turns import IncomingMessage
from tests.conftest import make_settings, openai_client
from tests.fakes.openai_server import FakeOpenAI
from tests.support.redis_proc import RedisServer


def msg(text: str, event_id: str) -> IncomingMessage:
    return IncomingMessage(platform="slack", event_id=event_id, user_id="U1", channel_id="C1", text=text)


async def test_redis_stopped_mid_conversation_gives_clear_replies_then_full_service(
    tmp_path: Path, fake_openai: FakeOpenAI
) -> None:
    server = RedisServer(tmp_path / "redis", args=["--appendonly", "yes", "--appendfsync", "always"])
    server.start()
    settings = make_settings(redis_url=server.url, redis_timeout_seconds=0.5)
    backend = open_backend(settings)
    gateway = Gateway(settings, backend, OpenAIChatModel("m", async_client=openai_client(fake_openai)))
    try:
        assert (await gateway.handle(msg("before", "E1"))).text == "echo: before"  # type: ignore[union-attr]
        server.stop()
        down = await asyncio.wait_for(gateway.handle(msg("during", "E2")), 15)
        assert down is not None and down.kind == "error" and "memory is unreachable" in down.text
        server.start()
        back = await asyncio.wait_for(gateway.handle(msg("after", "E3")), 15)
        assert back is not None and back.text == "echo: after"
        stored = [m.text for m in await backend.store("user_U1_session_C1", "slack").list_messages()]
        assert stored == ["before", "echo: before", "after", "echo: after"]
    finally:
        await backend.aclose()
        server.stop()


async def test_corrupt_history_is_skipped_and_the_turn_still_answers(
    redis_url: str, redis_client: Redis, key_prefix: str, fake_openai: FakeOpenAI
) -> None:
    settings = make_settings(redis_url=redis_url, key_prefix=key_prefix)
    backend = open_backend(settings)
    gateway = Gateway(settings, backend, OpenAIChatModel("m", async_client=openai_client(fake_openai)))
    key = f"{key_prefix}:slack:{{user_U1_session_C1}}:messages"
    await redis_client.rpush(key, b"\xff\xfe not utf8", "[1,2,3]", '{"role":"user"}')  # type: ignore[misc]
    reply = await gateway.handle(msg("still works?", "E1"))
    assert reply is not None and reply.text == "echo: still works?"
    assert fake_openai.requests[-1].messages[-1] == {"role": "user", "content": "still works?"}
    assert len(fake_openai.requests[-1].messages) == 2  # system prompt + the new message; no garbage sent
    await backend.aclose()


async def test_a_wrong_type_key_is_a_clear_reply_not_a_crash(
    redis_url: str, redis_client: Redis, key_prefix: str, fake_openai: FakeOpenAI
) -> None:
    settings = make_settings(redis_url=redis_url, key_prefix=key_prefix)
    backend = open_backend(settings)
    gateway = Gateway(settings, backend, OpenAIChatModel("m", async_client=openai_client(fake_openai)))
    await redis_client.set(f"{key_prefix}:slack:{{user_U1_session_C1}}:messages", "oops")
    reply = await gateway.handle(msg("hello", "E1"))
    assert reply is not None and reply.kind == "error" and "memory had a problem" in reply.text
    await backend.aclose()
