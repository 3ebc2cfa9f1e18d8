"""Redis-only behaviour: round trips, key layout, expiry, persistence, outages, the shared pool."""

from __future__ import annotations

import asyncio
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.crc import key_slot

from core.errors import StoreError, StoreUnavailableError
from core.messages import ChatMessage
from core.store import RedisChatMessageStore, RedisConnection
from core.store.keys import ConversationKeys, message_key
from tests.support.redis_proc import RedisServer, free_port
from tests.support.tcp_proxy import FaultProxy
from tests.support.waiting import wait_until


def user(text: str) -> ChatMessage:
    return ChatMessage(role="user", text=text)


async def command_count(client: Redis) -> dict[str, int]:
    stats: dict[str, Any] = await client.info("commandstats")
    return {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()}


def delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    changed = {k: after[k] - before.get(k, 0) for k in after if after[k] != before.get(k, 0)}
    changed.pop("info", None)
    return changed


async def test_add_and_list_are_one_command_each(redis_url: str, redis_client: Redis, key_prefix: str) -> None:
    async with RedisChatMessageStore(redis_url, key_prefix=key_prefix, max_messages=10, ttl_seconds=60) as store:
        await store.add_messages([user("warm-up")])  # loads the script once
        before = await command_count(redis_client)
        await store.add_messages([user("a"), ChatMessage(role="assistant", text="b")])
        await store.list_messages()
        changed = delta(before, await command_count(redis_client))
        # commandstats also counts what the script runs inside Redis; those cost no round trip.
        inside_script = {"lpos", "rpush", "ltrim", "lpush", "expire"}
        assert {k: v for k, v in changed.items() if k not in inside_script} == {"evalsha": 1, "lrange": 1}


async def test_every_key_of_a_thread_lands_in_one_cluster_slot() -> None:
    keys = ConversationKeys.of("chat", "slack", "user_U1_session_C1").all()
    assert keys[0] == message_key("chat", "slack", "user_U1_session_C1") == "chat:slack:{user_U1_session_C1}:messages"
    assert len(keys) == 6 and len({key_slot(k.encode()) for k in keys}) == 1


def test_thread_ids_with_braces_are_refused_as_keys() -> None:
    with pytest.raises(ValueError, match="braces"):
        message_key("chat", None, "a}b")


async def test_generated_thread_id_and_no_io_in_constructor() -> None:
    store = RedisChatMessageStore(f"redis://127.0.0.1:{free_port()}")  # nothing listens: must not matter yet
    assert store.thread_id.startswith("thread_") and len(store.thread_id) == len("thread_") + 32
    await store.aclose()


async def test_expiry_removes_every_key_of_the_thread(redis_url: str, redis_client: Redis, key_prefix: str) -> None:
    async with RedisChatMessageStore(redis_url, key_prefix=key_prefix, namespace="slack", ttl_seconds=1) as store:
        await store.add_messages([user("short-lived")])
        assert await redis_client.ttl(store.key) in (0, 1)

        async def gone() -> bool:
            return not await redis_client.exists(store.key) and not await redis_client.keys(f"{key_prefix}:*")

        await wait_until(gone, timeout=5)
        assert await store.list_messages() == []


async def test_a_retried_write_is_not_stored_twice(redis_url: str, key_prefix: str) -> None:
    async with RedisChatMessageStore(redis_url, key_prefix=key_prefix, max_messages=10) as store:
        batch = [user("q"), ChatMessage(role="assistant", text="a")]
        await store.add_messages(batch)
        await store.add_messages(batch)  # what redis-py's retry sends after a lost reply
        assert await store.list_messages() == batch


async def test_history_survives_a_redis_restart_with_aof(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "aof", args=["--appendonly", "yes", "--appendfsync", "always"])
    server.start()
    try:
        async with RedisChatMessageStore(server.url, thread_id="user_U1_session_C1") as store:
            await store.add_messages([user("persist me"), ChatMessage(role="assistant", text="ok")])
        server.stop()
        server.start()
        async with RedisChatMessageStore(server.url, thread_id="user_U1_session_C1") as store:
            assert [m.text for m in await store.list_messages()] == ["persist me", "ok"]
    finally:
        server.stop()


async def test_redis_down_raises_unavailable_naming_host_and_port_quickly() -> None:
    port = free_port()
    connection = RedisConnection.from_url(f"redis://127.0.0.1:{port}", timeout_seconds=0.5)
    store = connection.store("t1")
    started = time.monotonic()
    with pytest.raises(StoreUnavailableError, match=f"127.0.0.1:{port}"):
        await store.add_messages([user("lost?")])
    with pytest.raises(StoreUnavailableError, match=f"127.0.0.1:{port}"):
        await store.list_messages()
    assert time.monotonic() - started < 10
    assert not await connection.ping()
    await connection.aclose()


async def test_ten_thousand_stores_share_a_bounded_pool(redis_url: str, redis_client: Redis, key_prefix: str) -> None:
    connection = RedisConnection.from_url(redis_url, pool_size=4, key_prefix=key_prefix, max_messages=5)
    stores = [connection.store(f"user_U{i}_session_C1") for i in range(10_000)]
    baseline = (await redis_client.info("clients"))["connected_clients"]
    await asyncio.gather(*(s.add_messages([user("x")]) for s in stores[:400]))
    during = (await redis_client.info("clients"))["connected_clients"]
    assert during - baseline <= 4
    await stores[0].aclose()  # borrowed client: the pool stays open for every other store
    assert [m.text for m in await stores[1].list_messages()] == ["x"]
    await connection.aclose()


async def test_unix_socket_urls_work(redis_server: RedisServer, key_prefix: str) -> None:
    async with RedisChatMessageStore(f"unix://{redis_server.socket_path}", key_prefix=key_prefix) as store:
        await store.add_messages([user("over a socket")])
        assert [m.text for m in await store.list_messages()] == ["over a socket"]


async def test_acl_username_and_password_in_the_url(redis_url: str, redis_client: Redis, key_prefix: str) -> None:
    name = f"{key_prefix}-user"
    await redis_client.acl_setuser(
        name, enabled=True, passwords=["+s3cret"], keys=[f"{key_prefix}:*"], commands=["+@all"]
    )
    try:
        url = redis_url.replace("redis://", f"redis://{name}:s3cret@")
        async with RedisChatMessageStore(url, key_prefix=key_prefix) as store:
            await store.add_messages([user("with ACL")])
            assert len(await store.list_messages()) == 1
            state = await store.serialize()
            assert "s3cret" not in repr(state) and name not in repr(state)
    finally:
        await redis_client.acl_deluser(name)


async def test_deserialize_rebuilds_a_store_on_the_same_thread(redis_url: str, key_prefix: str) -> None:
    async with RedisChatMessageStore(redis_url, key_prefix=key_prefix, namespace="slack", max_messages=9) as store:
        await store.add_messages([user("hello")])
        state = await store.serialize()
    restored = await RedisChatMessageStore.deserialize(state, redis_url=redis_url)
    async with restored:
        assert restored.thread_id == store.thread_id and restored.max_messages == 9
        assert [m.text for m in await restored.list_messages()] == ["hello"]


async def test_a_key_of_the_wrong_type_is_a_store_error_not_a_crash(
    redis_url: str, redis_client: Redis, key_prefix: str
) -> None:
    async with RedisChatMessageStore(redis_url, key_prefix=key_prefix) as store:
        await redis_client.set(store.key, "a string, not a list")
        with pytest.raises(StoreError, match="WRONGTYPE"):
            await store.list_messages()


def make_tls_files(directory: Path) -> dict[str, Path]:
    """A throwaway CA and a server certificate for 127.0.0.1, made with the openssl command."""
    files = {name: directory / name for name in ("ca.key", "ca.crt", "server.key", "server.csr", "server.crt")}
    ext = directory / "san.cnf"
    ext.write_text("subjectAltName=IP:127.0.0.1\n")
    commands = [
        ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=test-ca",
         "-keyout", files["ca.key"], "-out", files["ca.crt"]],
        ["req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1",
         "-keyout", files["server.key"], "-out", files["server.csr"]],
        ["x509", "-req", "-in", files["server.csr"], "-CA", files["ca.crt"], "-CAkey", files["ca.key"],
         "-CAcreateserial", "-days", "1", "-extfile", ext, "-out", files["server.crt"]],
    ]  # fmt: skip
    for command in commands:
        subprocess.run(["openssl", *map(str, command)], check=True, capture_output=True, timeout=60)
    return files


async def test_rediss_urls_speak_tls_and_verify_the_server(tmp_path: Path) -> None:
    files = make_tls_files(tmp_path)
    tls_port = free_port()
    server = RedisServer(tmp_path / "tls", args=[
        "--port", "0", "--tls-port", str(tls_port), "--tls-cert-file", str(files["server.crt"]),
        "--tls-key-file", str(files["server.key"]), "--tls-ca-cert-file", str(files["ca.crt"]),
        "--tls-auth-clients", "no",
    ])  # fmt: skip
    server.start()
    try:
        url = f"rediss://127.0.0.1:{tls_port}/0?ssl_ca_certs={files['ca.crt']}"
        connection = RedisConnection.from_url(url, timeout_seconds=2)
        await connection.store("t1").add_messages([user("over TLS")])
        assert [m.text for m in await connection.store("t1").list_messages()] == ["over TLS"]
        await connection.aclose()
        untrusted = RedisConnection.from_url(f"rediss://127.0.0.1:{tls_port}/0", timeout_seconds=2)
        with pytest.raises(StoreUnavailableError, match=f"127.0.0.1:{tls_port}"):
            await untrusted.store("t1").list_messages()  # a server the system CAs do not vouch for
        await untrusted.aclose()
    finally:
        server.stop()


async def test_a_black_holed_redis_is_reported_within_four_timeouts(redis_server: RedisServer) -> None:
    """The timeout bounds each attempt; redis-py's three retries make the whole wait about 4x it."""
    async with FaultProxy(redis_server.port) as proxy:
        connection = RedisConnection.from_url(f"redis://127.0.0.1:{proxy.port}", timeout_seconds=0.5)
        await connection.store("t1").list_messages()
        proxy.black_hole = True
        started = time.monotonic()
        with pytest.raises(StoreUnavailableError, match=f"127.0.0.1:{proxy.port}"):
            await connection.store("t1").list_messages()
        assert time.monotonic() - started < 4 * 0.5 + 1.5
        await connection.aclose()


async def test_listing_threads_scans_and_never_runs_keys(redis_url: str, redis_client: Redis, key_prefix: str) -> None:
    connection = RedisConnection.from_url(redis_url, key_prefix=key_prefix)
    for i in range(30):
        await connection.store(f"user_U{i}_session_C1", "slack").add_messages([user("x")])
    before = await command_count(redis_client)
    found = [ref.thread_id async for ref in connection.iter_threads("slack")]
    changed = delta(before, await command_count(redis_client))
    assert len(found) == 30
    assert changed.get("scan", 0) >= 1 and "keys" not in changed
    await connection.aclose()
