"""Redis Cluster and Sentinel under a live conversation: the delivery runtime keeps going through a failover.

What must never happen: an acknowledged (answered) turn lost, a turn stored twice, an unclear error,
a crash. While the switch is under way a message may not be stored (the platform sends it again, as
Slack and Discord do with an event they got no acknowledgement for), or a user may be told the memory
is unreachable, and retries.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterator
from itertools import count
from pathlib import Path
from typing import Any

import pytest
from redis import Redis
from redis.crc import key_slot

from core.errors import ConfigError, StoreError
from core.llm import OpenAIChatModel
from core.messages import ChatMessage
from core.store import RedisConnection, open_backend
from core.store.keys import message_key
from core.turns import IncomingMessage
from tests.conftest import make_settings, openai_client
from tests.fakes.openai_server import FakeOpenAI
from tests.support.delivery import Runtime, start_runtime, stop_runtime
from tests.support.redis_cluster import LocalCluster, LocalSentinels, wait_until_sync

THREAD = "user_U1_session_C1"
LEASE_SECONDS = 5
_events = count()


async def deliver(rt: Runtime, incoming: IncomingMessage, deadline: float) -> None:
    """Hand `incoming` over as a platform does: again and again until the gateway has stored it."""
    while True:
        try:
            outcome = await rt.delivery.receive(incoming)
        except StoreError as exc:  # not stored, so not acknowledged: the platform sends the event again
            assert "Redis at" in str(exc), exc
            assert time.monotonic() < deadline, f"never stored: {exc}"
            await asyncio.sleep(0.2)  # the platform's retry interval, not synchronisation
            continue
        # `duplicate`: an earlier attempt was stored after all (its reply was lost), and it is answered
        assert outcome in ("taken", "queued", "duplicate"), outcome
        return


async def say(rt: Runtime, text: str, *, deadline_seconds: float = 40) -> str:
    """Send `text` until it is answered, as a user would; every refusal on the way must be a clear one."""
    deadline = time.monotonic() + deadline_seconds
    while True:
        incoming = IncomingMessage("slack", f"E{next(_events)}", "U1", "C1", text)
        await deliver(rt, incoming, deadline)
        # A turn whose commit went unconfirmed past its lease is resumed once the lease is over.
        wait = max(deadline - time.monotonic(), 3 * LEASE_SECONDS)
        reply = await rt.replies.wait_for(incoming.dedupe_key, timeout=wait)
        if reply == f"echo: {text}":
            return reply
        assert "memory" in reply or "try again" in reply.lower(), reply
        assert time.monotonic() < deadline, f"still failing: {reply}"


async def stored(rt: Runtime) -> list[str]:
    return [m.text for m in await rt.gateway.backend.store(THREAD, "slack").list_messages()]


def expected(texts: list[str]) -> list[str]:
    return [t for text in texts for t in (text, f"echo: {text}")]


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    local = LocalCluster(tmp_path / "cluster")
    local.start()
    try:
        yield local
    finally:
        local.stop()


def owner_and_replica(cluster: LocalCluster, key: str) -> tuple[int, int | None]:
    """Ports of the live primary serving `key` and of its live replica, as a surviving node sees them."""
    live = next(n for n in cluster.nodes if n.proc is not None)
    with Redis(host="127.0.0.1", port=live.port) as client:
        nodes = [line.split() for line in client.execute_command("CLUSTER", "NODES").decode().splitlines()]
    slot = key_slot(key.encode())

    def port(fields: list[str]) -> int:
        return int(fields[1].split(":")[1].split("@")[0])

    for fields in nodes:
        ranges = [r.split("-") for r in fields[8:] if "-" in r]
        if "master" in fields[2] and "fail" not in fields[2] and any(int(a) <= slot <= int(b) for a, b in ranges):
            replicas = [port(f) for f in nodes if f[3] == fields[0] and "fail" not in f[2]]
            return port(fields), (replicas[0] if replicas else None)
    raise AssertionError(f"no live primary serves slot {slot}")


def served_by(cluster: LocalCluster, port: int) -> bool:
    try:
        return owner_and_replica(cluster, message_key("chat", "slack", THREAD))[0] == port
    except AssertionError:  # mid-failover no live primary serves the slot yet
        return False


@contextlib.asynccontextmanager
async def runtime_on(url: str, fake: FakeOpenAI, *, platform: str = "slack", **settings: Any) -> AsyncIterator[Runtime]:
    config = make_settings(redis_url=url, redis_timeout_seconds=1.0, lock_timeout_seconds=LEASE_SECONDS, **settings)
    rt = await start_runtime(config, OpenAIChatModel("m", async_client=openai_client(fake)), platform=platform)
    try:
        yield rt
    finally:
        await stop_runtime(rt)


@pytest.mark.slow
async def test_a_conversation_continues_through_a_cluster_failover(
    cluster: LocalCluster, fake_openai: FakeOpenAI
) -> None:
    async with runtime_on(cluster.url, fake_openai) as rt:
        texts = [f"turn {i}" for i in range(8)]
        for text in texts[:3]:
            assert await say(rt, text) == f"echo: {text}"
        _, replica = owner_and_replica(cluster, message_key("chat", "slack", THREAD))
        assert replica is not None
        with Redis(host="127.0.0.1", port=replica) as client:
            client.execute_command("CLUSTER", "FAILOVER")
        for text in texts[3:6]:  # while the switch is under way
            assert await say(rt, text) == f"echo: {text}"
        wait_until_sync(lambda: served_by(cluster, replica))
        for text in texts[6:]:  # served by the promoted replica
            assert await say(rt, text) == f"echo: {text}"
        assert await stored(rt) == expected(texts)


@pytest.mark.slow
async def test_a_conversation_survives_its_cluster_primary_stopping(
    cluster: LocalCluster, fake_openai: FakeOpenAI
) -> None:
    async with runtime_on(cluster.url, fake_openai) as rt:
        texts = [f"turn {i}" for i in range(6)]
        for text in texts[:3]:
            await say(rt, text)
        primary, replica = owner_and_replica(cluster, message_key("chat", "slack", THREAD))
        assert replica is not None
        next(n for n in cluster.nodes if n.port == primary).stop()
        wait_until_sync(lambda: served_by(cluster, replica), timeout=30)
        for text in texts[3:]:
            await say(rt, text)
        assert await stored(rt) == expected(texts)


@pytest.mark.slow
async def test_a_conversation_survives_a_sentinel_failover(tmp_path: Path, fake_openai: FakeOpenAI) -> None:
    group = LocalSentinels(tmp_path / "sentinel")
    group.start()
    try:
        async with runtime_on(group.url, fake_openai, redis_sentinel_master="mymaster") as rt:
            texts = [f"turn {i}" for i in range(6)]
            for text in texts[:3]:
                await say(rt, text)
            assert group.master_port() == group.primary.port
            group.primary.stop()
            wait_until_sync(lambda: group.master_port() == group.replica.port, timeout=30)
            for text in texts[3:]:
                await say(rt, text)
            assert await stored(rt) == expected(texts)
    finally:
        group.stop()


async def test_a_sentinel_url_without_a_master_name_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="REDIS_SENTINEL_MASTER"):
        open_backend(make_settings(redis_url="redis+sentinel://127.0.0.1:26379"))


async def test_a_gateway_conversation_on_the_shared_cluster(
    redis_cluster: LocalCluster, fake_openai: FakeOpenAI, key_prefix: str
) -> None:
    async with runtime_on(redis_cluster.url, fake_openai, platform="discord", key_prefix=key_prefix) as rt:
        for text in ["one", "two", "memory"]:
            await rt.ask(IncomingMessage("discord", f"E{next(_events)}", "U9", "C9", text))
        first = IncomingMessage("discord", "E-dup", "U9", "C9", "x")
        assert await rt.ask(first) == "echo: x"
        assert await rt.delivery.receive(IncomingMessage("discord", "E-dup", "U9", "C9", "x")) == "duplicate"
        assert rt.replies.texts[first.dedupe_key] == ["echo: x"]
        history = [m.text for m in await rt.gateway.backend.store("user_U9_session_C9", "discord").list_messages()]
        assert history == ["one", "echo: one", "two", "echo: two", "x", "echo: x"]
        threads = [r.thread_id async for r in rt.gateway.backend.iter_threads("discord")]
        assert threads == ["user_U9_session_C9"]


async def test_a_small_cluster_pool_makes_callers_wait_instead_of_failing(
    redis_cluster: LocalCluster, key_prefix: str
) -> None:
    connection = RedisConnection.from_url(redis_cluster.url, pool_size=2, key_prefix=key_prefix, max_messages=3)
    stores = [connection.store(f"user_U{i}_session_C1") for i in range(300)]
    await asyncio.gather(*(s.add_messages([ChatMessage(role="user", text="x")]) for s in stores))
    for store in stores[:20]:
        assert [m.text for m in await store.list_messages()] == ["x"]
    await connection.aclose()
