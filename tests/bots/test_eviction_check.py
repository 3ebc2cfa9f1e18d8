"""At start-up the gateway refuses a Redis that may evict its keys (maxmemory-policy other than noeviction)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis.asyncio.cluster import RedisCluster

from core.store import RedisConnection
from tests.support.redis_cluster import LocalCluster
from tests.support.redis_proc import RedisServer

SETTING_PREFIXES = ("REDIS_", "OPENAI_", "SLACK_", "DISCORD_", "LOG_", "MAX_", "KEY_PREFIX", "DATA_DIR", "HEALTH_")


def console(cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(SETTING_PREFIXES)}
    return subprocess.run(
        [sys.executable, "-c", "from bots.cli import main; main()", "run", "console"],
        cwd=cwd, env={**clean, **env}, input="hello\n", capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


@pytest.fixture
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[RedisServer]:
    redis = RedisServer(tmp_path / "redis", args=request.param)
    redis.start()
    try:
        yield redis
    finally:
        redis.stop()


@pytest.mark.parametrize("server", [["--maxmemory-policy", "allkeys-lru"]], indirect=True)
def test_an_evicting_redis_is_refused_in_one_line(server: RedisServer, tmp_path: Path) -> None:
    result = console(tmp_path, {"REDIS_URL": server.url})
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert "maxmemory-policy is allkeys-lru" in result.stderr and "REDIS_ALLOW_EVICTION" in result.stderr
    assert "hello" not in result.stdout  # nothing was answered


@pytest.mark.parametrize("server", [["--maxmemory-policy", "volatile-ttl"]], indirect=True)
def test_redis_allow_eviction_runs_anyway_with_a_warning(server: RedisServer, tmp_path: Path) -> None:
    result = console(tmp_path, {"REDIS_URL": server.url, "REDIS_ALLOW_EVICTION": "true"})
    assert result.returncode == 0, result.stderr
    assert "[offline model]" in result.stdout
    assert "maxmemory-policy is volatile-ttl" in result.stderr and "WARNING" in result.stderr


@pytest.mark.parametrize("server", [["--rename-command", "CONFIG", ""]], indirect=True)
def test_a_redis_that_forbids_config_runs_and_says_the_policy_was_not_checked(
    server: RedisServer, tmp_path: Path
) -> None:
    result = console(tmp_path, {"REDIS_URL": server.url})
    assert result.returncode == 0, result.stderr
    assert "could not check maxmemory-policy" in result.stderr


@pytest.mark.parametrize("server", [[]], indirect=True)
async def test_the_default_policy_is_noeviction_and_passes(server: RedisServer) -> None:
    backend = RedisConnection.from_url(server.url)
    try:
        assert await backend.maxmemory_policy() == "noeviction"
    finally:
        await backend.aclose()


async def test_every_cluster_primary_is_checked(redis_cluster: LocalCluster) -> None:
    backend = RedisConnection.from_url(redis_cluster.url, cluster=True)
    client = backend.client
    assert isinstance(client, RedisCluster)
    try:
        assert await backend.maxmemory_policy() == "noeviction"
        last = client.get_primaries()[-1]
        await client.config_set("maxmemory-policy", "allkeys-lfu", target_nodes=last)
        try:
            assert await backend.maxmemory_policy() == "allkeys-lfu"
        finally:
            await client.config_set("maxmemory-policy", "noeviction", target_nodes=last)
    finally:
        await backend.aclose()
