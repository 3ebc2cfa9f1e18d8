"""Faults between the gateway and Redis or the model, injected by a TCP proxy the tests steer.

Each test states what must never happen: an acknowledged (answered) turn lost, a turn stored twice,
a thread stuck behind a dead turn, a crash. What may happen is a clear reply saying to try again.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from itertools import count
from pathlib import Path

import pytest

from core.gateway import Gateway
from core.llm import OpenAIChatModel
from core.store import open_backend
from core.turns import IncomingMessage, Reply
from tests.conftest import make_settings, openai_client
from tests.fakes.openai_server import Delay, FakeOpenAI, Hang
from tests.fakes.openai_server import Reply as ModelReply
from tests.support.redis_proc import RedisServer
from tests.support.tcp_proxy import FaultProxy

_events = count()
CLEAR = ("memory", "language model", "try again", "retry")


def message(text: str, user: str = "U1") -> IncomingMessage:
    return IncomingMessage("slack", f"F{next(_events)}", user, "C1", text)


def assert_clear(reply: Reply | None) -> None:
    assert reply is not None and reply.kind in ("error", "busy"), reply
    assert any(word in reply.text.lower() for word in CLEAR), reply.text


async def history(gateway: Gateway, user: str = "U1") -> list[str]:
    return [m.text for m in await gateway.backend.store(f"user_{user}_session_C1", "slack").list_messages()]


@pytest.fixture
async def redis_proxy(redis_server: RedisServer) -> AsyncIterator[FaultProxy]:
    async with FaultProxy(redis_server.port) as proxy:
        yield proxy


async def gateway_through(redis_port: int, model: OpenAIChatModel, key_prefix: str, **overrides: object) -> Gateway:
    settings = make_settings(redis_url=f"redis://127.0.0.1:{redis_port}", key_prefix=key_prefix,
                             redis_timeout_seconds=0.5, lock_timeout_seconds=3, **overrides)  # fmt: skip
    return Gateway(settings, open_backend(settings), model)


async def test_redis_slower_than_the_timeout_gives_clear_replies_then_recovers(
    redis_proxy: FaultProxy, fake_openai: FakeOpenAI, key_prefix: str
) -> None:
    """Never: a hang, a crash, or a turn answered twice."""
    gateway = await gateway_through(
        redis_proxy.port, OpenAIChatModel("m", async_client=openai_client(fake_openai)), key_prefix
    )
    assert (await gateway.handle(message("before"))).kind == "answer"  # type: ignore[union-attr]
    redis_proxy.latency_seconds = 3.0
    started = time.monotonic()
    assert_clear(await asyncio.wait_for(gateway.handle(message("while slow")), 20))
    assert time.monotonic() - started < 15
    redis_proxy.heal()
    after = await asyncio.wait_for(gateway.handle(message("after")), 10)
    assert after is not None and after.text == "echo: after"
    stored = await history(gateway)
    assert stored[:2] == ["before", "echo: before"] and stored[-2:] == ["after", "echo: after"]
    assert len(stored) == len(set(stored))
    await gateway.backend.aclose()


async def test_connections_cut_mid_traffic_lose_and_duplicate_nothing(
    redis_proxy: FaultProxy, fake_openai: FakeOpenAI, key_prefix: str
) -> None:
    """Never: an answered turn missing from memory, or any turn stored twice."""
    model = OpenAIChatModel("m", async_client=openai_client(fake_openai))
    gateway = await gateway_through(redis_proxy.port, model, key_prefix, rate_limit_per_minute=0)
    users = [f"U{i}" for i in range(8)]

    async def talk(user: str) -> list[tuple[str, Reply | None]]:
        results = []
        for turn in range(6):
            text = f"{user} turn {turn}"
            results.append((text, await gateway.handle(message(text, user))))
        return results

    async def cut() -> None:
        for _ in range(4):
            await asyncio.sleep(0.02)  # spacing the cuts through the traffic is the fault pattern
            await redis_proxy.drop_connections()

    outcomes, _ = await asyncio.gather(asyncio.gather(*(talk(u) for u in users)), cut())
    for user, results in zip(users, outcomes, strict=True):
        stored = await history(gateway, user)
        assert len(stored) == len(set(stored)), f"a turn stored twice: {stored}"
        for text, reply in results:
            if reply is not None and reply.kind == "answer":
                assert [text, f"echo: {text}"] == stored[stored.index(text) : stored.index(text) + 2]
            else:
                assert_clear(reply)
    await gateway.backend.aclose()


async def test_a_black_holed_model_times_out_releases_the_thread_and_the_next_message_works(
    redis_url: str, key_prefix: str, fake_openai: FakeOpenAI
) -> None:
    """Never: a thread stuck behind a turn whose model never answered, or half a turn stored."""
    async with FaultProxy(int(fake_openai.base_url.split(":")[2].split("/")[0])) as model_proxy:
        model = OpenAIChatModel("m", base_url=f"http://127.0.0.1:{model_proxy.port}/v1", max_retries=0, timeout=30)
        settings = make_settings(redis_url=redis_url, key_prefix=key_prefix, model_timeout_seconds=1.0)
        gateway = Gateway(settings, open_backend(settings), model)
        model_proxy.black_hole = True
        assert_clear(await asyncio.wait_for(gateway.handle(message("into the void")), 10))
        model_proxy.heal()
        nxt = await asyncio.wait_for(gateway.handle(message("hello again")), 5)
        assert nxt is not None and nxt.text == "echo: hello again"
        assert await history(gateway) == ["hello again", "echo: hello again"]
        await gateway.backend.aclose()
        await model.aclose()


async def test_a_model_connection_cut_mid_stream_is_a_clear_reply(
    redis_url: str, key_prefix: str, fake_openai: FakeOpenAI
) -> None:
    async with FaultProxy(int(fake_openai.base_url.split(":")[2].split("/")[0])) as model_proxy:
        model = OpenAIChatModel("m", base_url=f"http://127.0.0.1:{model_proxy.port}/v1", max_retries=0)
        settings = make_settings(redis_url=redis_url, key_prefix=key_prefix)
        gateway = Gateway(settings, open_backend(settings), model)
        fake_openai.script(Hang())
        seen: list[str] = []

        async def progress(text: str) -> None:
            seen.append(text)

        turn = asyncio.create_task(gateway.handle(message("stream please"), on_progress=progress))
        await asyncio.wait_for(fake_openai.received.get(), 5)
        await model_proxy.drop_connections()
        assert_clear(await asyncio.wait_for(turn, 10))
        assert await history(gateway) == []
        await gateway.backend.aclose()
        await model.aclose()


async def test_a_process_killed_mid_turn_stores_no_half_turn_and_its_lock_expires(
    tmp_path: Path, redis_url: str, key_prefix: str
) -> None:
    """Never: half a turn stored, or the thread blocked for good by the dead process's lock."""
    async with FakeOpenAI() as fake:
        fake.script(Delay(30, then=ModelReply("never seen")))
        env = {**{k: v for k, v in os.environ.items() if not k.startswith(("REDIS_", "OPENAI_", "KEY_PREFIX"))},
               "REDIS_URL": redis_url, "KEY_PREFIX": key_prefix, "OPENAI_BASE_URL": fake.base_url,
               "LOCK_TIMEOUT_SECONDS": "2"}  # fmt: skip

        async def console(stdin: bytes | None = None) -> asyncio.subprocess.Process:
            return await asyncio.create_subprocess_exec(
                sys.executable, "-c", "from bots.cli import main; main()", "run", "console", cwd=tmp_path, env=env,
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            )  # fmt: skip

        doomed = await console()
        assert doomed.stdin is not None
        doomed.stdin.write(b"first words\n")
        await doomed.stdin.drain()
        await asyncio.wait_for(fake.received.get(), 15)  # the turn holds the lock and waits on the model
        doomed.send_signal(signal.SIGKILL)
        await doomed.wait()
        settings = make_settings(redis_url=redis_url, key_prefix=key_prefix)
        backend = open_backend(settings)
        assert await backend.store("user_local_session_console", "console").list_messages() == []
        survivor = await console()
        stdout, stderr = await asyncio.wait_for(survivor.communicate(b"second words\n"), 30)
        assert survivor.returncode == 0, stderr.decode()
        assert "echo: second words" in stdout.decode()
        stored = [m.text for m in await backend.store("user_local_session_console", "console").list_messages()]
        assert stored == ["second words", "echo: second words"]
        await backend.aclose()
