"""The process's one Redis connection pool, and everything the gateway keeps in Redis through it.

`RedisConnection.from_url` builds and owns a bounded, blocking pool: 10,000 stores share it and never
open more than `pool_size` connections. Retries are redis-py's `Retry` policy, not ours.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any
from uuid import uuid4

from redis.asyncio.lock import Lock
from redis.exceptions import LockError, RedisError

from core.store.base import ThreadRef
from core.store.codec import parse_message_key
from core.store.keys import event_key, lock_key
from core.store.redis import RedisChatMessageStore, describe_client, translate_redis_error
from core.store.topology import RedisClient, build_client

__all__ = ["RedisConnection", "RedisTurnLock"]

_LOCK_POLL_SECONDS = 0.005
# One key, so it runs on Redis Cluster too; atomic, so a counter never lives without its expiry.
_COUNT_SCRIPT = """
local count = redis.call('INCR', KEYS[1])
if count == 1 then redis.call('EXPIRE', KEYS[1], ARGV[1]) end
return count
"""


class RedisTurnLock:
    """A thread's turn as a redis-py `Lock`: owner token, expiry, released only by its owner."""

    def __init__(self, client: RedisClient, key: str, expire_seconds: float) -> None:
        self._lock: Lock = client.lock(
            key, timeout=expire_seconds, sleep=_LOCK_POLL_SECONDS, thread_local=False, raise_on_release_error=False
        )
        self._client = client
        self._key = key

    async def acquire(self, wait_seconds: float) -> bool:
        try:
            return bool(await self._lock.acquire(blocking_timeout=wait_seconds, token=uuid4().hex))
        except RedisError as exc:
            raise translate_redis_error(exc, self._client, f"taking the turn lock {self._key}") from exc

    async def extend(self) -> bool:
        """Reset the expiry while a long turn runs; False when the lock was lost to expiry."""
        try:
            return bool(await self._lock.reacquire())
        except (LockError, RedisError):
            return False

    async def release(self) -> None:
        # An unreleased lock expires on its own; the turn's outcome does not depend on it.
        with contextlib.suppress(LockError, RedisError):
            await self._lock.release()


class RedisConnection:
    """Hands out stores, event claims, locks and counters on one client. Owns it only if built here."""

    kind = "redis"

    def __init__(
        self,
        client: RedisClient,
        *,
        key_prefix: str = "chat",
        max_messages: int | None = None,
        ttl_seconds: int | None = None,
        owns_client: bool = False,
    ) -> None:
        self.client = client
        self.key_prefix = key_prefix
        self.max_messages = max_messages
        self.ttl_seconds = ttl_seconds
        self._owns_client = owns_client
        self._count = client.register_script(_COUNT_SCRIPT)

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        timeout_seconds: float = 2.0,
        pool_size: int = 50,
        cluster: bool = False,
        sentinel_master: str | None = None,
        **kwargs: Any,
    ) -> RedisConnection:
        """Build and own a client for `url` (a server, a Cluster or Sentinel: see core.store.topology)."""
        client = build_client(
            url, timeout_seconds=timeout_seconds, pool_size=pool_size, cluster=cluster, sentinel_master=sentinel_master
        )
        return cls(client, owns_client=True, **kwargs)

    def describe(self) -> str:
        return f"redis at {describe_client(self.client)}"

    def store(self, thread_id: str, namespace: str | None = None) -> RedisChatMessageStore:
        return RedisChatMessageStore(
            client=self.client,
            thread_id=thread_id,
            key_prefix=self.key_prefix,
            namespace=namespace,
            max_messages=self.max_messages,
            ttl_seconds=self.ttl_seconds,
        )

    async def claim_event(self, namespace: str | None, event_id: str, ttl_seconds: int) -> bool:
        """True the first time an event ID is seen within `ttl_seconds`; False for every repeat."""
        key = event_key(self.key_prefix, namespace, event_id)
        try:
            return bool(await self.client.set(key, b"1", nx=True, ex=ttl_seconds))
        except RedisError as exc:
            raise translate_redis_error(exc, self.client, f"claiming event {key}") from exc

    async def release_event(self, namespace: str | None, event_id: str) -> None:
        """Forget a claim whose turn failed before anything was posted, so a redelivery can run it."""
        with contextlib.suppress(RedisError):  # the claim then expires on its own
            await self.client.delete(event_key(self.key_prefix, namespace, event_id))

    def turn_lock(self, namespace: str | None, thread_id: str, expire_seconds: float) -> RedisTurnLock:
        return RedisTurnLock(self.client, lock_key(self.key_prefix, namespace, thread_id), expire_seconds)

    async def count_hit(self, name: str, window_seconds: int) -> int:
        """Count one hit on a fixed-window counter and return the window's total so far."""
        key = f"{self.key_prefix}:rate:{name}"
        try:
            return int(await self._count(keys=[key], args=[window_seconds]))
        except RedisError as exc:
            raise translate_redis_error(exc, self.client, f"counting {key}") from exc

    async def set_flag(self, name: str, ttl_seconds: int | None) -> None:
        key = f"{self.key_prefix}:flag:{name}"
        try:
            await self.client.set(key, b"1", ex=ttl_seconds)
        except RedisError as exc:
            raise translate_redis_error(exc, self.client, f"setting {key}") from exc

    async def has_flag(self, name: str) -> bool:
        key = f"{self.key_prefix}:flag:{name}"
        try:
            return bool(await self.client.exists(key))
        except RedisError as exc:
            raise translate_redis_error(exc, self.client, f"reading {key}") from exc

    async def iter_threads(self, namespace: str | None = None, match: str | None = None) -> AsyncIterator[ThreadRef]:
        """Every stored thread, found with SCAN (never KEYS); `match` is a glob on the thread ID."""
        middle = f"{namespace}:" if namespace else "*"
        pattern = f"{self.key_prefix}:{middle}{{{match or '*'}}}:messages"
        try:
            async for raw in self.client.scan_iter(match=pattern, count=500):
                ref = parse_message_key(raw.decode() if isinstance(raw, bytes) else raw, self.key_prefix)
                if ref is not None:
                    yield ref
        except RedisError as exc:
            raise translate_redis_error(exc, self.client, "listing threads") from exc

    async def ping(self) -> bool:
        try:
            return bool(await self.client.ping())
        except RedisError:
            return False

    async def aclose(self) -> None:
        if self._owns_client:
            await self.client.aclose()
