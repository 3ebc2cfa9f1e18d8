"""Faults between the delivery runner and Redis or the model, injected by a TCP proxy the tests steer.

Each test states what must never happen: a message that `receive` accepted left unanswered or answered
twice, a turn stored twice or by halves, a conversation stuck behind a dead turn, a crash. What may
happen is `receive` refusing a message (nothing stored: the platform delivers it again) or a clear reply
saying to try again.
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
from typing import Any

import pytest

from core.errors import StoreError
from core.llm import OpenAIChatModel
from core.store import open_backend
from core.turns import IncomingMessage
from tests.conftest import make_settings, openai_client
from tests.fakes.openai_server import Delay, FakeOpenAI, Hang
from tests.fakes.openai_server import Reply as ModelReply
from tests.support.delivery import Runtime, start_runtime, stop_runtime
from tests.support.redis_proc import RedisServer
from tests.support.tcp_proxy import FaultProxy
from tests.support.waiting import wait_until

_events = count()
CLEAR = ("memory", "language model", "try again", "retry")


def message(text: str, user: str = "U1") -> IncomingMessage:
    return IncomingMessage("test", f"F{next(_events)}", user, "C1", text)


def assert_clear(text: str) -> None:
    assert any(word in text.lower() for word in CLEAR), text


async def history(rt: Runtime, user: str = "U1") -> list[str]:
    return [m.text for m in await rt.gateway.backend.store(f"user_{user}_session_C1", "test").list_messages()]


async def deliver(rt: Runtime, incoming: IncomingMessage, *, within: float = 20) -> str:
    """`receive` as a platform drives it: a refused message (nothing stored, not acknowledged) comes again."""
    async with asyncio.timeout(within):
        while True:
            try:
                return await rt.delivery.receive(incoming)
            except StoreError:
                await asyncio.sleep(0.1)  # the platform's redelivery interval, not synchronisation


def answered_once(rt: Runtime, incoming: IncomingMessage) -> str:
    key = incoming.dedupe_key
    assert key not in rt.replies.notices, rt.replies.notices[key]
    [text] = rt.replies.texts[key]
    return text


async def settled(rt: Runtime) -> None:
    async def idle() -> bool:
        return rt.delivery.in_flight == 0

    await wait_until(idle, timeout=15)


@pytest.fixture
async def redis_proxy(redis_server: RedisServer) -> AsyncIterator[FaultProxy]:
    async with FaultProxy(redis_server.port) as proxy:
        yield proxy


@pytest.fixture
async def runtimes() -> AsyncIterator[list[Runtime]]:
    started: list[Runtime] = []
    yield started
    for rt in started:
        await stop_runtime(rt)


async def runtime_through(
    runtimes: list[Runtime], redis_port: int, model: Any, key_prefix: str, **overrides: object
) -> Runtime:
    settings = make_settings(redis_url=f"redis://127.0.0.1:{redis_port}", key_prefix=key_prefix,
                             redis_timeout_seconds=0.5, lock_timeout_seconds=3, **overrides)  # fmt: skip
    rt = await start_runtime(settings, model)
    runtimes.append(rt)
    return rt


def model_port(fake: FakeOpenAI) -> int:
    return int(fake.base_url.split(":")[2].split("/")[0])


async def test_redis_slower_than_the_timeout_refuses_or_answers_once_then_recovers(
    redis_proxy: FaultProxy, fake_openai: FakeOpenAI, key_prefix: str, runtimes: list[Runtime]
) -> None:
    """Never: a hang, a crash, a message answered twice, or one accepted and then never answered."""
    model = OpenAIChatModel("m", async_client=openai_client(fake_openai))
    rt = await runtime_through(runtimes, redis_proxy.port, model, key_prefix)
    before, slow, after = message("before"), message("while slow"), message("after")
    assert await rt.ask(before) == "echo: before"
    await settled(rt)
    redis_proxy.latency_seconds = 3.0
    started = time.monotonic()
    try:
        await asyncio.wait_for(rt.delivery.receive(slow), 20)
    except StoreError as exc:  # each attempt timed out: not acknowledged, so the platform sends it again
        assert_clear(exc.user_message)
    assert time.monotonic() - started < 15
    redis_proxy.heal()
    await deliver(rt, slow)  # a repeat after an accepted delivery is a duplicate: that is fine too
    assert await rt.replies.wait_for(slow.dedupe_key, timeout=15) == "echo: while slow"
    assert await rt.ask(after) == "echo: after"
    await settled(rt)
    for incoming in (before, slow, after):
        assert answered_once(rt, incoming) == f"echo: {incoming.text}"
    assert await history(rt) == ["before", "echo: before", "while slow", "echo: while slow", "after", "echo: after"]


async def test_connections_cut_mid_traffic_lose_and_duplicate_nothing(
    redis_proxy: FaultProxy, fake_openai: FakeOpenAI, key_prefix: str, runtimes: list[Runtime]
) -> None:
    """Never: an accepted message unanswered or answered twice, a turn missing from memory or stored twice."""
    model = OpenAIChatModel("m", async_client=openai_client(fake_openai))
    rt = await runtime_through(runtimes, redis_proxy.port, model, key_prefix, rate_limit_per_minute=0)
    users = [f"U{i}" for i in range(8)]
    sent: dict[str, list[IncomingMessage]] = {user: [] for user in users}

    async def talk(user: str) -> None:
        for turn in range(6):
            incoming = message(f"{user} turn {turn}", user)
            await deliver(rt, incoming)
            sent[user].append(incoming)
            await rt.replies.wait_for(incoming.dedupe_key, timeout=20)

    async def cut() -> None:
        for _ in range(4):
            await asyncio.sleep(0.02)  # spacing the cuts through the traffic is the fault pattern
            await redis_proxy.drop_connections()

    await asyncio.gather(*(talk(u) for u in users), cut())
    await settled(rt)
    for user in users:
        for incoming in sent[user]:
            assert answered_once(rt, incoming) == f"echo: {incoming.text}"
        stored = await history(rt, user)
        assert stored == [t for m in sent[user] for t in (m.text, f"echo: {m.text}")], stored


async def test_a_black_holed_model_times_out_releases_the_thread_and_the_next_message_works(
    redis_url: str, key_prefix: str, fake_openai: FakeOpenAI, runtimes: list[Runtime]
) -> None:
    """Never: a conversation stuck behind a turn whose model never answered, or half a turn stored."""
    async with FaultProxy(model_port(fake_openai)) as model_proxy:
        model = OpenAIChatModel("m", base_url=f"http://127.0.0.1:{model_proxy.port}/v1", max_retries=0, timeout=30)
        settings = make_settings(redis_url=redis_url, key_prefix=key_prefix, model_timeout_seconds=1.0)
        rt = await start_runtime(settings, model)
        runtimes.append(rt)
        model_proxy.black_hole = True
        void = message("into the void")
        reply = await rt.ask(void, timeout=10)
        assert "took too long" in reply
        assert_clear(reply)
        model_proxy.heal()
        nxt = message("hello again")
        assert await rt.ask(nxt, timeout=5) == "echo: hello again"
        await settled(rt)
        assert answered_once(rt, void) == reply and answered_once(rt, nxt) == "echo: hello again"
        assert await history(rt) == ["hello again", "echo: hello again"]
        await model.aclose()


async def test_a_model_connection_cut_mid_stream_is_a_clear_reply(
    redis_url: str, key_prefix: str, fake_openai: FakeOpenAI, runtimes: list[Runtime]
) -> None:
    async with FaultProxy(model_port(fake_openai)) as model_proxy:
        model = OpenAIChatModel("m", base_url=f"http://127.0.0.1:{model_proxy.port}/v1", max_retries=0)
        rt = await start_runtime(make_settings(redis_url=redis_url, key_prefix=key_prefix), model)
        runtimes.append(rt)
        fake_openai.script(Hang())
        streamed = message("stream please")
        assert await rt.delivery.receive(streamed) == "taken"
        await asyncio.wait_for(fake_openai.received.get(), 5)
        await model_proxy.drop_connections()
        assert_clear(await rt.replies.wait_for(streamed.dedupe_key))
        await settled(rt)
        assert await history(rt) == []
        assert await rt.ask(message("still there?")) == "echo: still there?"
        fake_openai.release()
        await model.aclose()


async def test_a_process_killed_mid_turn_stores_no_half_turn_and_its_message_is_resumed_once(
    tmp_path: Path, redis_url: str, key_prefix: str
) -> None:
    """Never: half a turn stored, a conversation blocked for good by the dead process's lease, or the
    message it had accepted lost: once its lease expires the next process answers it, then the new one."""
    async with FakeOpenAI() as fake:
        fake.script(Delay(30, then=ModelReply("never seen")))
        env = {**{k: v for k, v in os.environ.items() if not k.startswith(("REDIS_", "OPENAI_", "KEY_PREFIX"))},
               "REDIS_URL": redis_url, "KEY_PREFIX": key_prefix, "OPENAI_BASE_URL": fake.base_url,
               "LOCK_TIMEOUT_SECONDS": "2"}  # fmt: skip

        async def console() -> asyncio.subprocess.Process:
            return await asyncio.create_subprocess_exec(
                sys.executable, "-c", "from bots.cli import main; main()", "run", "console", cwd=tmp_path, env=env,
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            )  # fmt: skip

        doomed = await console()
        assert doomed.stdin is not None
        doomed.stdin.write(b"first words\n")
        await doomed.stdin.drain()
        await asyncio.wait_for(fake.received.get(), 15)  # stored, leased, and waiting on the model
        doomed.send_signal(signal.SIGKILL)
        await doomed.wait()
        backend = open_backend(make_settings(redis_url=redis_url, key_prefix=key_prefix))
        try:
            store = backend.store("user_local_session_console", "console")
            assert await store.list_messages() == []  # no half turn
            survivor = await console()
            stdout, stderr = await asyncio.wait_for(survivor.communicate(b"second words\n"), 30)
            assert survivor.returncode == 0, stderr.decode()
            out = stdout.decode()
            assert out.count("echo: first words") == 1 and out.count("echo: second words") == 1, out
            assert out.index("echo: first words") < out.index("echo: second words")
            stored = [m.text for m in await store.list_messages()]
            assert stored == ["first words", "echo: first words", "second words", "echo: second words"]
            assert [r.messages[-1]["content"] for r in fake.requests[1:]] == ["first words", "second words"]
        finally:
            await backend.aclose()
