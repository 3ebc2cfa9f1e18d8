"""One thread's history in a Redis LIST, oldest first, trimmed to `max_messages`.

Keys share the hash tag {thread_id}; the scheme is ARCHITECTURE.md's (core.store.keys), change both
together. Every method is one network round trip; a write appends, trims and refreshes the TTL
atomically in one Lua script, so no reader ever sees more than `max_messages` entries.
"""

from __future__ import annotations

from collections.abc import Sequence
from types import TracebackType
from typing import Any, Self
from uuid import uuid4

from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from core.errors import StoreError, StoreUnavailableError
from core.messages import ChatMessage
from core.store.codec import decode_messages
from core.store.keys import message_key, writes_key
from core.store.state import STATE_FIELDS, ThreadState
from core.store.topology import RedisClient

__all__ = ["DEFAULT_URL", "RedisChatMessageStore", "describe_client", "translate_redis_error"]

DEFAULT_URL = "redis://localhost:6379"

# redis-py retries a call whose reply was lost, even when the write had run. Each batch leaves its
# ID in a short per-thread list, so a retry finds it and writes nothing: a turn is never stored
# twice, whatever else was appended in between.
_ADD_SCRIPT = """
local key, writes = KEYS[1], KEYS[2]
local max, ttl, batch = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3]
if redis.call('LPOS', writes, batch) then return 0 end
for first = 4, #ARGV, 1000 do
  redis.call('RPUSH', key, unpack(ARGV, first, math.min(first + 999, #ARGV)))
end
if max > 0 then redis.call('LTRIM', key, -max, -1) end
redis.call('LPUSH', writes, batch)
redis.call('LTRIM', writes, 0, 31)
if ttl > 0 then
  redis.call('EXPIRE', key, ttl)
  redis.call('EXPIRE', writes, ttl)
end
return #ARGV - 3
"""


def describe_client(client: Any) -> str:
    """Where a redis-py client points (`host:port`, socket, cluster nodes, sentinel service); never a password."""
    pool = getattr(client, "connection_pool", None)
    kwargs = getattr(pool, "connection_kwargs", {})
    if "path" in kwargs:
        return f"unix:{kwargs['path']}"
    if "host" in kwargs:
        return f"{kwargs['host']}:{kwargs.get('port', 6379)}"
    if getattr(pool, "service_name", None):
        return f"sentinel service {pool.service_name}"  # type: ignore[union-attr]  # a SentinelConnectionPool
    nodes = getattr(getattr(client, "nodes_manager", None), "startup_nodes", {})
    return "cluster " + ",".join(nodes) if nodes else "redis"


def translate_redis_error(exc: RedisError, client: Any, what: str) -> StoreError:
    where = describe_client(client)
    if isinstance(exc, RedisConnectionError | RedisTimeoutError):
        return StoreUnavailableError(f"Redis at {where} did not answer ({what}): {type(exc).__name__}: {exc}")
    return StoreError(f"Redis at {where} refused {what}: {type(exc).__name__}: {exc}")


class RedisChatMessageStore(ThreadState):
    """One thread's history in a Redis LIST. Borrows `client`; with only `redis_url` it builds and owns one."""

    state_type = "redis_store_state"

    def __init__(
        self,
        redis_url: str | None = None,
        *,
        client: RedisClient | None = None,
        thread_id: str | None = None,
        key_prefix: str = "chat",
        namespace: str | None = None,
        max_messages: int | None = None,
        ttl_seconds: int | None = None,
    ) -> None:
        if max_messages is not None and max_messages <= 0:
            raise ValueError("max_messages must be a positive number, or None to keep every message")
        if ttl_seconds is not None and ttl_seconds <= 0:
            raise ValueError("ttl_seconds must be a positive number, or None to never expire")
        self._client: RedisClient = client if client is not None else Redis.from_url(redis_url or DEFAULT_URL)  # no I/O
        self._owns_client = client is None
        self._redis_url = redis_url
        self.key_prefix = key_prefix
        self.namespace = namespace
        self.max_messages = max_messages
        self.ttl_seconds = ttl_seconds
        self.thread_id = thread_id or f"thread_{uuid4().hex}"
        self._bind_keys()
        self._add = self._client.register_script(_ADD_SCRIPT)

    def _bind_keys(self) -> None:
        self._key = message_key(self.key_prefix, self.namespace, self.thread_id)
        self._writes_key = writes_key(self.key_prefix, self.namespace, self.thread_id)

    @property
    def key(self) -> str:
        return self._key

    async def add_messages(self, messages: Sequence[ChatMessage]) -> None:
        """Append, trim to max_messages and refresh the TTL in one round trip.

        Raises:
            StoreUnavailableError: Redis did not answer; nothing was written.
            StoreError: Redis refused the write (wrong key type, out of memory).
        """
        if not messages:
            return
        batch = messages[0].message_id
        args: list[str | int] = [self.max_messages or 0, self.ttl_seconds or 0, batch, *(m.to_json() for m in messages)]
        try:
            await self._add(keys=[self._key, self._writes_key], args=args)
        except RedisError as exc:
            raise translate_redis_error(exc, self._client, f"a write to {self._key}") from exc

    async def list_messages(self) -> list[ChatMessage]:
        """The stored messages, oldest first; entries that are not our JSON are skipped with a warning.

        Raises:
            StoreUnavailableError: Redis did not answer.
        """
        start = -self.max_messages if self.max_messages else 0
        try:
            raw: list[bytes | str] = await self._client.lrange(self._key, start, -1)
        except RedisError as exc:
            raise translate_redis_error(exc, self._client, f"a read of {self._key}") from exc
        return decode_messages(raw, self._key)

    async def clear(self) -> None:
        """Forget the thread's history.

        Raises:
            StoreUnavailableError: Redis did not answer.
        """
        try:
            await self._client.delete(self._key, self._writes_key)
        except RedisError as exc:
            raise translate_redis_error(exc, self._client, f"a delete of {self._key}") from exc

    async def ttl_seconds_left(self) -> int | None:
        """Seconds until the thread expires; None when it never does or holds nothing."""
        try:
            left = int(await self._client.ttl(self._key))
        except RedisError as exc:
            raise translate_redis_error(exc, self._client, f"a TTL read of {self._key}") from exc
        return left if left >= 0 else None

    async def ping(self) -> bool:
        try:
            return bool(await self._client.ping())
        except RedisError:
            return False

    @classmethod
    async def deserialize(cls, state: dict[str, Any], **overrides: Any) -> RedisChatMessageStore:
        """Rebuild a store from `serialize()` output; pass `client=` or `redis_url=` to say where Redis is."""
        kwargs: dict[str, Any] = {name: state[name] for name in STATE_FIELDS if state.get(name) is not None}
        kwargs.update(overrides)
        return cls(**kwargs)

    async def aclose(self) -> None:
        """Close the client if this store built it; a borrowed client stays open for its owner."""
        if self._owns_client:
            await self._client.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()
