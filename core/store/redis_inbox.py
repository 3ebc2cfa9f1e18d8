"""The inbox on Redis: a stream per conversation, its consumer group as the lease (see redis_inbox_scripts).

A stream per conversation, not per partition: the inbox then shares the conversation's hash tag with its
history, so taking the lease, reading the history and committing the turn are each one atomic script,
on a single server and on Redis Cluster alike. Recovery finds conversations through one index per
platform (a sorted set, `<prefix>:<platform>:inboxes`): that key lives in another slot, so it is written
beside the scripts, never inside them, and every step tolerates it being briefly stale.
"""

from __future__ import annotations

import random
import time
from collections.abc import Sequence
from typing import Any
from uuid import uuid4

from redis.exceptions import RedisError

from core.messages import ChatMessage
from core.store import redis_inbox_scripts as scripts
from core.store.codec import decode_messages
from core.store.inbox import RESET_WATERMARK_SECONDS, Claim, Intake, Lease, TurnRecord
from core.store.keys import ConversationKeys, inbox_index_key, reset_key
from core.store.redis import translate_redis_error
from core.store.topology import RedisClient

__all__ = ["RedisInbox"]


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class RedisInbox:
    """The process's inbox on `client`; `owner` names this process in every lease it takes."""

    def __init__(
        self,
        client: RedisClient,
        *,
        key_prefix: str = "chat",
        max_messages: int | None = None,
        ttl_seconds: int | None = None,
        lease_seconds: float = 30.0,
        keep_seconds: int = 86400,
        owner: str | None = None,
    ) -> None:
        self._client = client
        self._prefix = key_prefix
        self._max = max_messages or 0
        self._ttl = ttl_seconds or 0
        self.lease_seconds = lease_seconds
        self._keep = max(keep_seconds, self._ttl)
        self.owner = owner or f"gw-{uuid4().hex[:12]}"
        self._scripts = {
            name: client.register_script(getattr(scripts, name))
            for name in ("RECEIVE", "RESUME", "RENEW", "RELEASE", "COMMIT", "NOTE", "FINISH", "UNSCHEDULE")
        }

    @property
    def _lease_ms(self) -> int:
        return int(self.lease_seconds * 1000)

    def _keys(self, namespace: str | None, thread_id: str) -> ConversationKeys:
        return ConversationKeys.of(self._prefix, namespace, thread_id)

    async def _run(self, name: str, keys: list[str], args: Sequence[str | int | float], what: str) -> Any:
        try:
            return await self._scripts[name](keys=keys, args=list(args))
        except RedisError as exc:
            raise translate_redis_error(exc, self._client, what) from exc

    async def receive(
        self, namespace: str | None, thread_id: str, message_key: str, payload: str, *,
        token: str, take: bool, user_id: str = "", rate_window: int = 0, rate_limit: int = 0,
    ) -> Intake:  # fmt: skip
        keys = self._keys(namespace, thread_id)
        args: list[str | int] = [
            message_key, payload, token, self.owner, int(time.time() * 1000), int(take), self._max, self._keep,
            user_id, rate_window, rate_limit, self._lease_ms,
        ]  # fmt: skip
        reply = await self._run("RECEIVE", keys.all(), args, f"receiving {message_key} into {keys.inbox}")
        outcome = _text(reply[0])
        if outcome == "duplicate":
            return Intake("duplicate", state=_text(reply[1]))  # type: ignore[arg-type]  # a TurnState by construction
        if outcome == "queued":
            return Intake("queued", hits=int(reply[1]))
        return Intake("taken", claim=self._claim(namespace, thread_id, reply), hits=int(reply[7]))

    async def resume(self, namespace: str | None, thread_id: str) -> Claim | float | None:
        keys = self._keys(namespace, thread_id)
        reply = await self._run("RESUME", keys.all(), [self.owner, self._max, self._lease_ms], f"resuming {keys.inbox}")
        outcome = _text(reply[0])
        if outcome == "busy":
            return int(reply[1]) / 1000
        return self._claim(namespace, thread_id, reply) if outcome == "taken" else None

    def _lease_args(self, lease: Lease) -> list[str | int]:
        return [lease.entry_id, lease.owner, lease.deliveries]

    async def renew(self, lease: Lease) -> bool:
        keys = self._keys(lease.namespace, lease.thread_id)
        return bool(
            await self._run("RENEW", keys.all(), self._lease_args(lease), f"renewing the lease on {keys.inbox}")
        )

    async def release(self, lease: Lease) -> None:
        keys = self._keys(lease.namespace, lease.thread_id)
        await self._run(
            "RELEASE", keys.all(), [*self._lease_args(lease), self._lease_ms], f"releasing the lease on {keys.inbox}"
        )

    async def commit(
        self, lease: Lease, messages: Sequence[ChatMessage], record: TurnRecord, *, clear: bool = False,
        reset: float | None = None, max_messages: int | None = None, ttl_seconds: int | None = None,
    ) -> bool:  # fmt: skip
        keys = self._keys(lease.namespace, lease.thread_id)
        batch = messages[0].message_id if messages else record.entry_id
        limit = self._max if max_messages is None else max_messages
        ttl = self._ttl if ttl_seconds is None else ttl_seconds
        args: list[str | int] = [
            *self._lease_args(lease), lease.message_key, record.to_json(), limit, ttl, batch,
            int(clear) if reset is None else repr(reset), *(m.to_json() for m in messages),
        ]  # fmt: skip
        all_keys = [*keys.all(), reset_key(self._prefix, lease.namespace, lease.thread_id)]
        return bool(await self._run("COMMIT", all_keys, args, f"committing {lease.message_key} to {keys.messages}"))

    async def reset_watermark(self, namespace: str | None, thread_id: str) -> float | None:
        key = reset_key(self._prefix, namespace, thread_id)
        try:
            raw = await self._client.get(key)
        except RedisError as exc:
            raise translate_redis_error(exc, self._client, f"reading {key}") from exc
        return float(_text(raw)) if raw is not None else None

    async def mark_reset(self, namespace: str | None, thread_id: str) -> None:
        key = reset_key(self._prefix, namespace, thread_id)
        keep = max(self._ttl, RESET_WATERMARK_SECONDS) if self._ttl else None
        try:
            await self._client.set(key, repr(time.time()), ex=keep)
        except RedisError as exc:
            raise translate_redis_error(exc, self._client, f"setting {key}") from exc

    async def note_posted(self, lease: Lease, record: TurnRecord) -> bool:
        keys = self._keys(lease.namespace, lease.thread_id)
        args = [*self._lease_args(lease), lease.message_key, record.to_json()]
        return bool(await self._run("NOTE", keys.all(), args, f"noting what was posted for {lease.message_key}"))

    async def finish(self, lease: Lease, record: TurnRecord, *, take_next: bool) -> Claim | None:
        keys = self._keys(lease.namespace, lease.thread_id)
        args: list[str | int] = [
            lease.entry_id,
            lease.message_key,
            record.to_json(),
            int(take_next),
            self.owner,
            self._max,
            self._lease_ms,
            self._keep,
        ]
        reply = await self._run("FINISH", keys.all(), args, f"finishing {lease.message_key} in {keys.inbox}")
        return self._claim(lease.namespace, lease.thread_id, reply) if _text(reply[0]) == "taken" else None

    async def schedule(self, namespace: str | None, thread_id: str, at: float) -> str:
        # A random fraction of a millisecond: `unschedule` compares scores, and two writers must never collide.
        score = f"{int(at * 1000)}.{random.randrange(1, 10**6):06d}"
        try:
            await self._client.zadd(inbox_index_key(self._prefix, namespace), {thread_id: float(score)})
        except RedisError as exc:
            raise translate_redis_error(exc, self._client, f"indexing the inbox of {thread_id}") from exc
        return score

    async def due(self, namespace: str | None, limit: int) -> list[tuple[str, str]]:
        key = inbox_index_key(self._prefix, namespace)
        try:
            # Below the next millisecond: a score is its millisecond plus a fraction (schedule), so one scheduled
            # in this very millisecond is due now, not a sweep later.
            rows = await self._client.zrangebyscore(
                key, "-inf", f"({int(time.time() * 1000) + 1}", start=0, num=limit, withscores=True,
                score_cast_func=_text,
            )  # fmt: skip
        except RedisError as exc:
            raise translate_redis_error(exc, self._client, f"reading {key}") from exc
        return [(_text(row[0]), _text(row[1])) for row in rows]

    async def unschedule(self, namespace: str | None, thread_id: str, score: str) -> None:
        key = inbox_index_key(self._prefix, namespace)
        try:
            await self._scripts["UNSCHEDULE"](keys=[key], args=[thread_id, score])
        except RedisError as exc:
            raise translate_redis_error(exc, self._client, f"updating {key}") from exc

    def _claim(self, namespace: str | None, thread_id: str, reply: list[Any]) -> Claim:
        _, entry_id, message_key, payload, deliveries, raw_record, raw_history = reply[:7]
        lease = Lease(namespace, thread_id, _text(entry_id), _text(message_key), self.owner, int(deliveries))
        record = TurnRecord.from_json(raw_record) if raw_record else TurnRecord("received", lease.entry_id, "")
        history = decode_messages(raw_history, self._keys(namespace, thread_id).messages)
        return Claim(lease=lease, payload=_text(payload), record=record, history=history)
