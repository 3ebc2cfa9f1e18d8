"""The process's one Redis connection pool, and everything the gateway keeps in Redis through it.

`RedisConnection.from_url` builds and owns a bounded, blocking pool: 10,000 stores share it and never
open more than `pool_size` connections. Retries are redis-py's `Retry` policy, not ours.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any

from redis.asyncio.cluster import RedisCluster
from redis.exceptions import RedisError, ResponseError

from core.store.base import Cleared, ThreadRef
from core.store.keys import (
    ConversationKeys,
    conversation_pattern,
    flag_key,
    inbox_index_key,
    is_reset_key,
    parse_conversation_key,
    parse_message_key,
    threads_pattern,
)
from core.store.redis import RedisChatMessageStore, describe_client, translate_redis_error
from core.store.redis_approvals import RedisApprovals
from core.store.redis_inbox import RedisInbox
from core.store.redis_usage import RedisUsageLedger
from core.store.topology import RedisClient, build_client

__all__ = ["RedisConnection"]

# KEYS: ConversationKeys.all(); ARGV: lease_ms, force. One slot, one step: the lease is read and the keys
# deleted with no turn able to start in between.
_CLEAR = """
if ARGV[2] ~= '1' and redis.call('EXISTS', KEYS[3]) == 1 then
  local pending = redis.pcall('XPENDING', KEYS[3], 'turns', '-', '+', 1)
  if type(pending) == 'table' and pending.err == nil and #pending > 0 and pending[1][3] < tonumber(ARGV[1]) then
    return {'busy', tonumber(ARGV[1]) - pending[1][3]}
  end
end
local cleared = {'cleared', redis.call('LLEN', KEYS[1]), 0}
if redis.call('EXISTS', KEYS[3]) == 1 then cleared[3] = redis.call('XLEN', KEYS[3]) end
for i = 1, #KEYS do
  if redis.call('DEL', KEYS[i]) == 1 then cleared[#cleared + 1] = KEYS[i] end
end
return cleared
"""


class RedisConnection:
    """Hands out stores, the inbox and flags on one client. Owns it only if built here."""

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
        self._clear = client.register_script(_CLEAR)

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        timeout_seconds: float = 2.0,
        pool_size: int = 50,
        cluster: bool = False,
        sentinel_master: str | None = None,
        pool_timeout_seconds: float | None = None,
        **kwargs: Any,
    ) -> RedisConnection:
        """Build and own a client for `url` (a server, a Cluster or Sentinel: see core.store.topology)."""
        client = build_client(
            url, timeout_seconds=timeout_seconds, pool_size=pool_size, cluster=cluster, sentinel_master=sentinel_master,
            pool_timeout_seconds=pool_timeout_seconds,
        )  # fmt: skip
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

    def inbox(self, *, lease_seconds: float, keep_seconds: int, owner: str | None = None) -> RedisInbox:
        """The process's inbox on this client (one per process: `owner` names the process in its leases)."""
        return RedisInbox(
            self.client, key_prefix=self.key_prefix, max_messages=self.max_messages, ttl_seconds=self.ttl_seconds,
            lease_seconds=lease_seconds, keep_seconds=keep_seconds, owner=owner,
        )  # fmt: skip

    def approvals(self) -> RedisApprovals:
        """The approval records on this backend."""
        return RedisApprovals(self.client, key_prefix=self.key_prefix)

    def usage(self) -> RedisUsageLedger:
        """The token counters and budget charges on this backend."""
        return RedisUsageLedger(self.client, key_prefix=self.key_prefix)

    async def set_flag(self, name: str, ttl_seconds: int | None) -> None:
        key = flag_key(self.key_prefix, name)
        try:
            await self.client.set(key, b"1", ex=ttl_seconds)
        except RedisError as exc:
            raise translate_redis_error(exc, self.client, f"setting {key}") from exc

    async def has_flag(self, name: str) -> bool:
        key = flag_key(self.key_prefix, name)
        try:
            return bool(await self.client.exists(key))
        except RedisError as exc:
            raise translate_redis_error(exc, self.client, f"reading {key}") from exc

    async def clear_flag(self, name: str) -> bool:
        key = flag_key(self.key_prefix, name)
        try:
            return bool(await self.client.delete(key))
        except RedisError as exc:
            raise translate_redis_error(exc, self.client, f"deleting {key}") from exc

    async def iter_threads(self, namespace: str | None = None, match: str | None = None) -> AsyncIterator[ThreadRef]:
        """Every stored thread, found with SCAN (never KEYS); `match` is a glob on the thread ID."""
        pattern = threads_pattern(self.key_prefix, namespace, match)
        try:
            async for raw in self.client.scan_iter(match=pattern, count=500):
                parsed = parse_message_key(raw.decode() if isinstance(raw, bytes) else raw, self.key_prefix)
                if parsed is not None:
                    yield ThreadRef(*parsed)
        except RedisError as exc:
            raise translate_redis_error(exc, self.client, "listing threads") from exc

    async def find_conversations(self, thread_id: str) -> list[ThreadRef]:
        """Every namespace with a key of `thread_id`, found with SCAN (never KEYS)."""
        namespaces: set[str | None] = set()
        try:
            async for raw in self.client.scan_iter(match=conversation_pattern(self.key_prefix, thread_id), count=500):
                key = raw.decode() if isinstance(raw, bytes) else raw
                parsed = parse_conversation_key(key, self.key_prefix)
                if parsed is not None and parsed[1] == thread_id and not is_reset_key(key):
                    namespaces.add(parsed[0])
        except RedisError as exc:
            raise translate_redis_error(exc, self.client, f"looking for {thread_id}") from exc
        return [ThreadRef(namespace, thread_id) for namespace in sorted(namespaces, key=lambda n: n or "")]

    async def clear_conversation(
        self, ref: ThreadRef, *, lease_seconds: float, force: bool = False, flags: Sequence[str] = ()
    ) -> Cleared:
        """Raises: StoreError: Redis did not answer or refused; what was removed before that stays removed."""
        keys = ConversationKeys.of(self.key_prefix, ref.namespace, ref.thread_id)
        index = inbox_index_key(self.key_prefix, ref.namespace)
        flag_keys = [flag_key(self.key_prefix, name) for name in flags]
        try:
            reply = await self._clear(keys=keys.all(), args=[int(lease_seconds * 1000), int(force)])
            if _text(reply[0]) == "busy":
                return Cleared(busy_seconds=int(reply[1]) / 1000)
            indexed = bool(await self.client.zrem(index, ref.thread_id))
            flags_removed = [key for key in flag_keys if await self.client.delete(key)]  # each in its own slot
        except RedisError as exc:
            raise translate_redis_error(exc, self.client, f"clearing {keys.messages}") from exc
        return Cleared(
            messages=int(reply[1]), waiting=int(reply[2]), keys=tuple(_text(key) for key in reply[3:]),
            index=index if indexed else None, flags=tuple(flags_removed),
        )  # fmt: skip

    async def maxmemory_policy(self) -> str | None:
        """Redis's `maxmemory-policy` (on a Cluster: the first primary's that is not `noeviction`, if any);
        None where CONFIG is not allowed (managed services, ACLs, a renamed command).

        Raises:
            StoreError: Redis did not answer.
        """
        try:
            if isinstance(self.client, RedisCluster):
                await self.client.initialize()  # the primaries are known only once the slot map is
                found = [
                    await self.client.config_get("maxmemory-policy", target_nodes=node)
                    for node in self.client.get_primaries()
                ]
            else:
                found = [await self.client.config_get("maxmemory-policy")]
        except ResponseError:
            return None
        except RedisError as exc:
            raise translate_redis_error(exc, self.client, "CONFIG GET maxmemory-policy") from exc
        policies = [str(reply.get("maxmemory-policy", "")) for reply in found]
        return next((policy for policy in policies if policy != "noeviction"), policies[0] if policies else None)

    async def ping(self) -> bool:
        try:
            return bool(await self.client.ping())
        except RedisError:
            return False

    async def aclose(self) -> None:
        if self._owns_client:
            await self.client.aclose()


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
