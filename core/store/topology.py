"""One redis-py client for whichever topology REDIS_URL names: a server, a Cluster, or a Sentinel-managed primary.

Failover and slot moves are redis-py's (`RedisCluster`, `Sentinel.master_for`), retried by its
`Retry` policy; there is no home-made sharding or failover here.

    redis://[user:pass@]host:port/db           one server (rediss:// for TLS, unix:///path.sock)
    redis+cluster://[user:pass@]h1:p1,h2:p2    Redis Cluster, from any of its nodes (or REDIS_CLUSTER=true)
    redis+sentinel://[:pass@]s1:p1,s2:p2/db    the primary that the sentinels name REDIS_SENTINEL_MASTER
"""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import unquote, urlsplit

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool
from redis.backoff import ExponentialWithJitterBackoff

from core.errors import ConfigError

__all__ = ["RedisClient", "build_client"]

RedisClient = Redis | RedisCluster


class _ClusterClient(RedisCluster):
    """`RedisCluster` that learns the slot map before its first command.

    redis-py 8.1 picks a command's target before initialising, so the first commands of a fresh
    client go to a random node, meet MOVED, and the reinitialisation that follows drops connections
    of commands already sent, which are then retried (a duplicate write, or an AttributeError).
    """

    def __init__(self, *args: Any, pool_size: int = 50, **kwargs: Any) -> None:
        kwargs["max_connections"] = pool_size
        super().__init__(*args, **kwargs)
        # RedisCluster fails at `max_connections` per node instead of waiting: bound callers instead.
        self._slots = asyncio.Semaphore(pool_size)

    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        if self._initialize:
            await self.initialize()
        async with self._slots:
            return await super().execute_command(*args, **kwargs)


class _BlockingSentinelPool(SentinelConnectionPool, BlockingConnectionPool):
    """The primary's address from the sentinels, with a pool that waits for a free connection when full."""


def _retry() -> Retry:
    return Retry(ExponentialWithJitterBackoff(base=0.05, cap=0.5), retries=3)


def _hosts(netloc: str, default_port: int) -> list[tuple[str, int]]:
    hosts = netloc.rpartition("@")[2]
    pairs = []
    for item in hosts.split(","):
        host, _, port = item.rpartition(":") if ":" in item else (item, "", "")
        pairs.append((host or item, int(port) if port else default_port))
    return pairs


def _credentials(netloc: str) -> tuple[str | None, str | None]:
    userinfo = netloc.rpartition("@")[0]
    if not userinfo:
        return None, None
    user, _, password = userinfo.partition(":")
    return (unquote(user) or None), (unquote(password) or None)


def build_client(
    url: str,
    *,
    timeout_seconds: float = 2.0,
    pool_size: int = 50,
    cluster: bool = False,
    sentinel_master: str | None = None,
    pool_timeout_seconds: float | None = None,
) -> RedisClient:
    """A client that does no I/O until first use; the caller owns it and closes it with `aclose()`.

    `timeout_seconds` bounds each attempt of a command; `pool_timeout_seconds` (default: the same) bounds
    the wait for a free connection, which under load is the turn's deadline: a busy pool is not a down Redis.

    Raises:
        ConfigError: a Sentinel URL without REDIS_SENTINEL_MASTER.
    """
    parts = urlsplit(url)
    username, password = _credentials(parts.netloc)
    if parts.scheme.endswith("+cluster") or cluster:
        return _ClusterClient(
            startup_nodes=[ClusterNode(host, port) for host, port in _hosts(parts.netloc, 6379)],
            username=username, password=password, ssl=parts.scheme.startswith("rediss"),
            pool_size=pool_size, retry=_retry(),
            socket_timeout=timeout_seconds, socket_connect_timeout=timeout_seconds,
        )  # fmt: skip
    if parts.scheme == "redis+sentinel":
        if not sentinel_master:
            raise ConfigError("REDIS_URL names sentinels: set REDIS_SENTINEL_MASTER to the primary's service name")
        sentinel = Sentinel(  # type: ignore[no-untyped-call]  # redis-py leaves Sentinel.__init__ untyped
            _hosts(parts.netloc, 26379), socket_timeout=timeout_seconds, socket_connect_timeout=timeout_seconds
        )
        master: Redis = sentinel.master_for(
            sentinel_master, username=username, password=password, db=int(parts.path.strip("/") or 0),
            retry=_retry(), max_connections=pool_size, timeout=pool_timeout_seconds or timeout_seconds,
            connection_pool_class=_BlockingSentinelPool,
            socket_timeout=timeout_seconds, socket_connect_timeout=timeout_seconds,
        )  # fmt: skip
        return master
    pool = BlockingConnectionPool.from_url(
        url, max_connections=pool_size, timeout=pool_timeout_seconds or timeout_seconds, retry=_retry(),
        health_check_interval=30,
        socket_timeout=timeout_seconds, socket_connect_timeout=timeout_seconds,
    )  # fmt: skip
    return Redis.from_pool(pool)
