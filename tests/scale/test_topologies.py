"""Redis Cluster and Sentinel under a live conversation: the gateway keeps going through a failover.

What must never happen: an acknowledged (answered) turn lost, a turn stored twice, an unclear error,
a crash. While the switch is under way a user may be told the memory is unreachable, and retries.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from itertools import count
from pathlib import Path

import pytest
from redis import Redis
from redis.crc import key_slot

from core.errors import ConfigError
from core.gateway import Gateway
from core.llm import OpenAIChatModel
from core.messages import ChatMessage
from core.store import RedisConnection, open_backend
from core.store.keys import message_key
from core.turns import IncomingMessage
from tests.conftest import make_settings, openai_client
from tests.fakes.openai_server import FakeOpenAI
from tests.support.redis_cluster import LocalCluster, LocalSentinels, wait_until_sync

THREAD = "user_U1_session_C1"
_events = count()


async def say(gateway: Gateway, text: str, *, deadline_seconds: float = 30) -> str:
    """Send `text` until it is answered, as a user would; every refusal on the way must be a clear one."""
    deadline = time.monotonic() + deadline_seconds
    while True:
        reply = await gateway.handle(IncomingMessage("slack", f"E{next(_events)}", "U1", "C1", text))
        assert reply is not None
        if reply.kind == "answer":
            return reply.text
        assert reply.kind == "error" and ("memory" in reply.text or "try again" in reply.text.lower()), reply
        assert time.monotonic() < deadline, f"still failing: {reply.text}"


async def stored(gateway: Gateway) -> list[str]:
    return [m.text for m in await gateway.backend.store(THREAD, "slack").list_messages()]


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


async def gateway_on(url: str, fake: FakeOpenAI, **settings: object) -> Gateway:
    config = make_settings(redis_url=url, redis_timeout_seconds=1.0, lock_timeout_seconds=5, **settings)
    return Gateway(config, open_backend(config), OpenAIChatModel("m", async_client=openai_client(fake)))


@pytest.mark.slow
async def test_a_conversation_continues_through_a_cluster_failover(
    cluster: LocalCluster, fake_openai: FakeOpenAI
) -> None:
    gateway = await gateway_on(cluster.url, fake_openai)
    texts = [f"turn {i}" for i in range(8)]
    for text in texts[:3]:
        assert await say(gateway, text) == f"echo: {text}"
    _, replica = owner_and_replica(cluster, message_key("chat", "slack", THREAD))
    assert replica is not None
    with Redis(host="127.0.0.1", port=replica) as client:
        client.execute_command("CLUSTER", "FAILOVER")
    for text in texts[3:6]:  # while the switch is under way
        assert await say(gateway, text) == f"echo: {text}"
    wait_until_sync(lambda: served_by(cluster, replica))
    for text in texts[6:]:  # served by the promoted replica
        assert await say(gateway, text) == f"echo: {text}"
    assert await stored(gateway) == expected(texts)
    await gateway.backend.aclose()


@pytest.mark.slow
async def test_a_conversation_survives_its_cluster_primary_stopping(
    cluster: LocalCluster, fake_openai: FakeOpenAI
) -> None:
    gateway = await gateway_on(cluster.url, fake_openai)
    texts = [f"turn {i}" for i in range(6)]
    for text in texts[:3]:
        await say(gateway, text)
    primary, replica = owner_and_replica(cluster, message_key("chat", "slack", THREAD))
    assert replica is not None
    next(n for n in cluster.nodes if n.port == primary).stop()
    wait_until_sync(lambda: served_by(cluster, replica), timeout=30)
    for text in texts[3:]:
        await say(gateway, text)
    assert await stored(gateway) == expected(texts)
    await gateway.backend.aclose()


@pytest.mark.slow
async def test_a_conversation_survives_a_sentinel_failover(tmp_path: Path, fake_openai: FakeOpenAI) -> None:
    group = LocalSentinels(tmp_path / "sentinel")
    group.start()
    try:
        gateway = await gateway_on(group.url, fake_openai, redis_sentinel_master="mymaster")
        texts = [f"turn {i}" for i in range(6)]
        for text in texts[:3]:
            await say(gateway, text)
        assert group.master_port() == group.primary.port
        group.primary.stop()
        wait_until_sync(lambda: group.master_port() == group.replica.port, timeout=30)
        for text in texts[3:]:
            await say(gateway, text)
        assert await stored(gateway) == expected(texts)
        await gateway.backend.aclose()
    finally:
        group.stop()


async def test_a_sentinel_url_without_a_master_name_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="REDIS_SENTINEL_MASTER"):
        open_backend(make_settings(redis_url="redis+sentinel://127.0.0.1:26379"))


async def test_a_gateway_conversation_on_the_shared_cluster(
    redis_cluster: LocalCluster, fake_openai: FakeOpenAI, key_prefix: str
) -> None:
    gateway = await gateway_on(redis_cluster.url, fake_openai, key_prefix=key_prefix)
    for text in ["one", "two", "memory"]:
        await gateway.handle(IncomingMessage("discord", f"E{next(_events)}", "U9", "C9", text))
    duplicate = await gateway.handle(IncomingMessage("discord", "E-dup", "U9", "C9", "x"))
    again = await gateway.handle(IncomingMessage("discord", "E-dup", "U9", "C9", "x"))
    assert duplicate is not None and again is None
    history = [m.text for m in await gateway.backend.store("user_U9_session_C9", "discord").list_messages()]
    assert history == ["one", "echo: one", "two", "echo: two", "x", "echo: x"]
    threads = [r.thread_id async for r in gateway.backend.iter_threads("discord")]
    assert threads == ["user_U9_session_C9"]
    await gateway.backend.aclose()


async def test_a_small_cluster_pool_makes_callers_wait_instead_of_failing(
    redis_cluster: LocalCluster, key_prefix: str
) -> None:
    connection = RedisConnection.from_url(redis_cluster.url, pool_size=2, key_prefix=key_prefix, max_messages=3)
    stores = [connection.store(f"user_U{i}_session_C1") for i in range(300)]
    await asyncio.gather(*(s.add_messages([ChatMessage(role="user", text="x")]) for s in stores))
    for store in stores[:20]:
        assert [m.text for m in await store.list_messages()] == ["x"]
    await connection.aclose()
