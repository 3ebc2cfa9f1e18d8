"""The health server: where it listens by default, and what a probe costs the store."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import aiohttp
import yaml
from redis.asyncio import Redis

from core.gateway import Gateway
from core.health import HealthServer
from core.llm import OfflineChatModel
from core.store import RedisConnection, SqliteConnection
from tests.conftest import make_settings
from tests.support.redis_proc import RedisServer
from tests.support.waiting import wait_until

ROOT = Path(__file__).resolve().parents[2]


def test_health_host_defaults_to_loopback_and_only_the_container_opens_it() -> None:
    assert make_settings().health_host == "127.0.0.1"
    dockerfile = (ROOT / "Dockerfile").read_text()
    env_line = next(line for line in dockerfile.splitlines() if line.startswith("ENV ") and "HEALTH_PORT" in line)
    assert "HEALTH_HOST=0.0.0.0" in env_line
    gateway = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]["gateway"]
    assert gateway["environment"]["HEALTH_HOST"] == "0.0.0.0"
    assert "`HEALTH_HOST`" in (ROOT / "README.md").read_text().split("## Operations")[1]


async def test_the_health_server_listens_on_loopback_by_default(tmp_path: Path) -> None:
    backend = SqliteConnection(tmp_path / "h.sqlite3")
    server = HealthServer(
        backend=backend, metrics=Gateway(make_settings(), backend, OfflineChatModel()).metrics, adapters=[], port=0
    )
    await server.start()
    try:
        assert [address[0] for address in server.addresses] == ["127.0.0.1"]
    finally:
        await server.stop()
        await backend.aclose()


async def ping_calls(client: Redis) -> int:
    stats = await client.info("commandstats")
    return int(stats.get("cmdstat_ping", {}).get("calls", 0))


async def test_a_flood_of_readiness_probes_costs_at_most_one_ping_a_second(tmp_path: Path) -> None:
    redis = RedisServer(tmp_path / "redis")
    redis.start()
    backend = RedisConnection.from_url(redis.url, timeout_seconds=0.3)
    admin = Redis.from_url(redis.url)
    server = HealthServer(
        backend=backend, metrics=Gateway(make_settings(), backend, OfflineChatModel()).metrics, adapters=[], port=0
    )
    await server.start()
    url = f"http://127.0.0.1:{server.port}/readyz"
    try:
        async with aiohttp.ClientSession() as session:

            async def probe() -> int:
                async with session.get(url) as response:
                    await response.read()
                    return response.status

            assert await backend.ping()  # one connection made (and health-checked) before counting
            before = await ping_calls(admin)
            started = time.monotonic()
            statuses = await asyncio.gather(*(probe() for _ in range(200)))
            statuses += [await probe() for _ in range(100)]
            elapsed = time.monotonic() - started
            pings = await ping_calls(admin) - before
            print(f"300 probes in {elapsed:.2f}s cost {pings} PINGs")
            assert statuses == [200] * 300
            assert 1 <= pings <= 1 + int(elapsed)

            redis.kill()  # readiness still follows the store, within a second

            async def not_ready() -> bool:
                return await probe() == 503

            await wait_until(not_ready, timeout=5)
    finally:
        await server.stop()
        await admin.aclose()
        await backend.aclose()
        redis.stop()
