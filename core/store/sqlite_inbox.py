"""The inbox in the embedded SQLite file: the Redis inbox scripts' semantics, one write transaction per step.

Rows are named as in Redis: `conversation` is the key base (`keys.thread_prefix`; the Redis keys add
`:inbox`, `:turns`, ...), the history stays in `messages` under `message_key`. Tables (sqlite_db): `inbox`
holds undelivered messages and their lease (owner, deliveries, leased_at; NULL: never handed out),
`turns` the records and their arrival (Redis's `seen`), `inbox_keep` the keep deadline both share,
`writes` commit batch IDs, `inbox_index` recovery's index; rate counts sit in `kv` under the rate key.

The rule not to break: each step's checks and writes run in one `db.run(..., write=True)`, and a turn's
writes are fenced by (owner, deliveries) on the message's leased row, never by the clock alone. This
store serves one process (several need Redis), yet leases still fence a hung turn out.
"""

from __future__ import annotations

import json
import random
import sqlite3
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, TypeVar
from uuid import uuid4

from core.messages import ChatMessage
from core.store.codec import decode_messages
from core.store.inbox import RESET_WATERMARK_SECONDS, Claim, Intake, Lease, TurnRecord
from core.store.keys import ConversationKeys, inbox_index_key, reset_key, thread_prefix
from core.store.sqlite_db import SqliteDatabase, drop_if_expired, is_live

__all__ = ["SqliteInbox"]

T = TypeVar("T")
_RATE_KEEP_SECONDS = 120  # RECEIVE's EXPIRE on the rate hash: outlives the one-minute window
_PRUNE_PER_INTAKE = 32  # as RECEIVE: old records go a few at a time, so one intake stays cheap
_WRITES_KEPT = 32  # as COMMIT's LTRIM: enough to recognise a retried commit
_RELEASED_LEASES = 100  # as RELEASE: aged by 100 leases, expired for a process with a longer lease too
_HEAD = "SELECT id, message_key, payload, owner, deliveries, leased_at FROM inbox WHERE conversation = ? AND "
_HOLDS = "SELECT 1 FROM inbox WHERE id = ? AND conversation = ? AND owner = ? AND deliveries = ? AND leased_at NOT NULL"
_RECORD = "SELECT record FROM turns WHERE conversation = ? AND message_key = ?"
_CLOCK = "UPDATE inbox SET leased_at = ? WHERE id = ?"
_ADD = "INSERT INTO inbox (conversation, message_key, payload) VALUES (?, ?, ?)"
_PRUNE = (
    "DELETE FROM turns WHERE rowid IN "
    "(SELECT rowid FROM turns WHERE conversation = ? AND arrived <= ? ORDER BY arrived LIMIT ?)"
)
_KEEP = "INSERT OR REPLACE INTO inbox_keep (conversation, expires_at) VALUES (?, ?)"
_SCHEDULE = "INSERT OR REPLACE INTO inbox_index (key, thread_id, score) VALUES (?, ?, ?)"
_DUE = "SELECT thread_id, score FROM inbox_index WHERE key = ? AND score < ? ORDER BY score, thread_id LIMIT ?"
_UNSCHEDULE = "DELETE FROM inbox_index WHERE key = ? AND thread_id = ? AND score = ?"  # unless rescheduled since


@dataclass(frozen=True, slots=True)
class _Conversation:
    namespace: str | None
    thread_id: str
    base: str  # the rows' `conversation`: every Redis key of the conversation is this plus a suffix
    keys: ConversationKeys


class SqliteInbox:
    """The process's inbox in the embedded file; `owner` names this process in every lease it takes."""

    def __init__(
        self,
        db: SqliteDatabase,
        *,
        key_prefix: str = "chat",
        max_messages: int | None = None,
        ttl_seconds: int | None = None,
        lease_seconds: float = 30.0,
        keep_seconds: int = 86400,
        owner: str | None = None,
    ) -> None:
        self._db = db
        self._prefix = key_prefix
        self._max = max_messages if max_messages and max_messages > 0 else None  # as the scripts' `max > 0`
        self._ttl = ttl_seconds if ttl_seconds and ttl_seconds > 0 else None
        self.lease_seconds = lease_seconds
        self._keep = max(keep_seconds, self._ttl or 0)
        self.owner = owner or f"gw-{uuid4().hex[:12]}"

    def _at(self, namespace: str | None, thread_id: str) -> _Conversation:
        keys = ConversationKeys.of(self._prefix, namespace, thread_id)
        return _Conversation(namespace, thread_id, thread_prefix(self._prefix, namespace, thread_id), keys)

    async def _write(self, at: _Conversation, step: Callable[[sqlite3.Connection, float], T]) -> T:
        """Run `step` in one write transaction, on the conversation as Redis would show it (expired keys gone)."""

        def run(conn: sqlite3.Connection) -> T:
            now = self._db.clock()
            _drop_stale(conn, at.base, now)
            return step(conn, now)

        return await self._db.run(run, write=True)

    async def receive(
        self, namespace: str | None, thread_id: str, message_key: str, payload: str, *,
        token: str, take: bool, user_id: str = "", rate_window: int = 0, rate_limit: int = 0,
    ) -> Intake:  # fmt: skip
        at = self._at(namespace, thread_id)

        def step(conn: sqlite3.Connection, now: float) -> Intake:
            raw = _record(conn, at.base, message_key)
            if raw is not None:
                known = TurnRecord.from_json(raw)
                if known.token != token:
                    return Intake("duplicate", state=known.state)
                hits = known.hits  # our own call again: answer as it did
            else:
                hits = _count_hit(conn, at.keys.rate, user_id, str(rate_window), now) if rate_limit > 0 else 0
                record = TurnRecord("received", "", token, hits=hits)  # its entry ID once appended
                self._append(conn, at, message_key, payload, record=record, now=now)
            if not take:
                return Intake("queued", hits=hits)
            # A new message while this process answers the conversation is queued behind that turn.
            taken = self._take_head(conn, at, now, own_is_busy=raw is None)
            return Intake("taken", claim=taken, hits=hits) if isinstance(taken, Claim) else Intake("queued", hits=hits)

        return await self._write(at, step)

    async def resume(self, namespace: str | None, thread_id: str) -> Claim | float | None:
        at = self._at(namespace, thread_id)
        return await self._write(at, lambda conn, now: self._take_head(conn, at, now, own_is_busy=False))

    async def renew(self, lease: Lease) -> bool:
        return await self._fenced(lease, lambda conn, at, now: conn.execute(_CLOCK, (now, lease.entry_id)))

    async def release(self, lease: Lease) -> None:
        aged = self.lease_seconds * _RELEASED_LEASES + 0.001
        await self._fenced(lease, lambda conn, at, now: conn.execute(_CLOCK, (now - aged, lease.entry_id)))

    async def note_posted(self, lease: Lease, record: TurnRecord) -> bool:
        return await self._fenced(
            lease, lambda conn, at, now: _put_record(conn, at.base, lease.message_key, record, now)
        )

    async def commit(
        self, lease: Lease, messages: Sequence[ChatMessage], record: TurnRecord, *, clear: bool = False,
        reset: float | None = None, max_messages: int | None = None, ttl_seconds: int | None = None,
    ) -> bool:  # fmt: skip
        batch = messages[0].message_id if messages else record.entry_id
        clear = clear or reset is not None
        limit = self._max if max_messages is None else (max_messages or None)
        ttl = self._ttl if ttl_seconds is None else (ttl_seconds or None)

        def store(conn: sqlite3.Connection, at: _Conversation, now: float) -> None:
            key = at.keys.messages
            if reset is not None:
                self._mark(conn, at, now, reset)
            if clear or not is_live(conn, key, now):  # batch IDs go with the history, as `writes` in Redis
                conn.execute("DELETE FROM writes WHERE conversation = ?", (at.base,))
            if clear:
                conn.execute("DELETE FROM messages WHERE key = ?", (key,))
                conn.execute("DELETE FROM threads WHERE key = ?", (key,))
            drop_if_expired(conn, key, now)
            known = conn.execute("SELECT 1 FROM writes WHERE conversation = ? AND batch = ?", (at.base, batch))
            if messages and known.fetchone() is None:
                self._add_messages(conn, key, [(key, m.to_json()) for m in messages], now, limit=limit, ttl=ttl)
                conn.execute("INSERT INTO writes (conversation, batch) VALUES (?, ?)", (at.base, batch))
                _trim(conn, "writes", "conversation", at.base, _WRITES_KEPT)
            elif ttl:  # a retry or a record-only turn still refreshes the history's TTL, as COMMIT does
                conn.execute("UPDATE threads SET expires_at = ? WHERE key = ?", (now + ttl, key))
            _put_record(conn, at.base, lease.message_key, record, now)
            conn.execute(_CLOCK, (now, lease.entry_id))  # as COMMIT's XCLAIM: the lease's clock restarts

        return await self._fenced(lease, store)

    async def reset_watermark(self, namespace: str | None, thread_id: str) -> float | None:
        key = reset_key(self._prefix, namespace, thread_id)

        def read(conn: sqlite3.Connection) -> float | None:
            row = conn.execute("SELECT value, expires_at FROM kv WHERE key = ?", (key,)).fetchone()
            return float(row[0]) if row is not None and (row[1] is None or row[1] > self._db.clock()) else None

        return await self._db.run(read)

    async def mark_reset(self, namespace: str | None, thread_id: str) -> None:
        at = self._at(namespace, thread_id)
        await self._db.run(lambda conn: self._mark(conn, at, self._db.clock(), time.time()), write=True)

    def _mark(self, conn: sqlite3.Connection, at: _Conversation, now: float, mark: float) -> None:
        """COMMIT's reset watermark, as one kv row (see RESET_WATERMARK_SECONDS)."""
        expires = now + max(self._ttl, RESET_WATERMARK_SECONDS) if self._ttl else None
        key = reset_key(self._prefix, at.namespace, at.thread_id)
        conn.execute("INSERT OR REPLACE INTO kv (key, value, expires_at) VALUES (?, ?, ?)", (key, repr(mark), expires))

    async def finish(self, lease: Lease, record: TurnRecord, *, take_next: bool) -> Claim | None:
        at = self._at(lease.namespace, lease.thread_id)

        def step(conn: sqlite3.Connection, now: float) -> Claim | None:
            # Delivered is delivered, whoever holds the lease now: dropping the row fences out a taker-over.
            _put_record(conn, at.base, lease.message_key, record, now)
            conn.execute("DELETE FROM inbox WHERE id = ? AND conversation = ?", (lease.entry_id, at.base))
            taken = self._take_head(conn, at, now, own_is_busy=False) if take_next else None
            return taken if isinstance(taken, Claim) else None

        return await self._write(at, step)

    async def schedule(self, namespace: str | None, thread_id: str, at: float) -> str:
        # As RedisInbox: a random fraction of a millisecond, so `unschedule` can tell two writers apart.
        score = f"{int(at * 1000)}.{random.randrange(1, 10**6):06d}"
        row = (inbox_index_key(self._prefix, namespace), thread_id, float(score))
        await self._db.run(lambda conn: conn.execute(_SCHEDULE, row), write=True)
        return score

    async def due(self, namespace: str | None, limit: int) -> list[tuple[str, str]]:
        # Below the next millisecond, as RedisInbox.due: a score is its millisecond plus a fraction.
        key, now_ms = inbox_index_key(self._prefix, namespace), int(self._db.clock() * 1000) + 1
        rows = await self._db.run(lambda conn: conn.execute(_DUE, (key, now_ms, limit)).fetchall())
        return [(str(tid), repr(float(score))) for tid, score in rows]  # repr reads back as the very same float

    async def unschedule(self, namespace: str | None, thread_id: str, score: str) -> None:
        row = (inbox_index_key(self._prefix, namespace), thread_id, float(score))
        await self._db.run(lambda conn: conn.execute(_UNSCHEDULE, row), write=True)

    async def _fenced(self, lease: Lease, then: Callable[[sqlite3.Connection, _Conversation, float], object]) -> bool:
        """Run `then` only while `lease` is the message's pending lease: same owner, same deliveries."""
        at = self._at(lease.namespace, lease.thread_id)

        def step(conn: sqlite3.Connection, now: float) -> bool:
            if conn.execute(_HOLDS, (lease.entry_id, at.base, lease.owner, lease.deliveries)).fetchone() is None:
                return False
            then(conn, at, now)
            return True

        return await self._write(at, step)

    def _append(
        self, conn: sqlite3.Connection, at: _Conversation, key: str, payload: str, *, record: TurnRecord, now: float
    ) -> None:
        """RECEIVE's XADD, HSET and ZADD; then a few records older than `keep` go, and the deadline moves."""
        cursor = conn.execute(_ADD, (at.base, key, payload))
        _put_record(conn, at.base, key, replace(record, entry_id=str(cursor.lastrowid)), now)
        conn.execute(_PRUNE, (at.base, now - self._keep, _PRUNE_PER_INTAKE))
        conn.execute(_KEEP, (at.base, now + self._keep))

    def _take_head(
        self, conn: sqlite3.Connection, at: _Conversation, now: float, *, own_is_busy: bool
    ) -> Claim | float | None:
        """Hand out the conversation's oldest message, as the scripts' take_head; a float: busy for so long."""
        row = conn.execute(_HEAD + "leased_at NOT NULL ORDER BY id LIMIT 1", (at.base,)).fetchone()
        if row is not None:
            holder, deliveries, idle = row[3], int(row[4]), now - float(row[5])
            if idle < self.lease_seconds:
                if holder != self.owner or own_is_busy:
                    return float(min(self.lease_seconds, self.lease_seconds - idle))
                return self._handed(conn, at, row, deliveries, now)
            deliveries += 1  # a take-over: the previous owner's writes are fenced from now on
        else:
            row = conn.execute(_HEAD + "leased_at IS NULL ORDER BY id LIMIT 1", (at.base,)).fetchone()
            if row is None:
                return None
            deliveries = 1
        sql = "UPDATE inbox SET owner = ?, deliveries = ?, leased_at = ? WHERE id = ?"
        conn.execute(sql, (self.owner, deliveries, now, row[0]))
        return self._handed(conn, at, row, deliveries, now)

    def _handed(self, conn: sqlite3.Connection, at: _Conversation, row: Any, deliveries: int, now: float) -> Claim:
        entry_id, message_key, payload = str(row[0]), str(row[1]), str(row[2])
        raw = _record(conn, at.base, message_key)
        record = TurnRecord.from_json(raw) if raw is not None else TurnRecord("received", entry_id, "")
        lease = Lease(at.namespace, at.thread_id, entry_id, message_key, self.owner, deliveries)
        return Claim(lease=lease, payload=payload, record=record, history=self._history(conn, at.keys.messages, now))

    # The two below are SqliteChatMessageStore's list_messages and add_messages: change them together.
    def _history(self, conn: sqlite3.Connection, key: str, now: float) -> list[ChatMessage]:
        if not is_live(conn, key, now):
            return []
        limit = self._max if self._max is not None else -1
        rows = conn.execute("SELECT payload FROM messages WHERE key = ? ORDER BY id DESC LIMIT ?", (key, limit))
        return decode_messages([row[0] for row in reversed(rows.fetchall())], key)

    def _add_messages(
        self, conn: sqlite3.Connection, key: str, rows: list[tuple[str, str]], now: float, *, limit: int | None,
        ttl: int | None,
    ) -> None:  # fmt: skip
        conn.executemany("INSERT INTO messages (key, payload) VALUES (?, ?)", rows)
        if limit is not None:
            _trim(conn, "messages", "key", key, limit)
        conn.execute(
            "INSERT INTO threads (key, expires_at) VALUES (?, ?) "
            "ON CONFLICT(key) DO UPDATE SET expires_at = excluded.expires_at",
            (key, now + ttl if ttl else None),
        )


def _drop_stale(conn: sqlite3.Connection, base: str, now: float) -> None:
    """Past the keep deadline the conversation's inbox and records are gone, as its Redis keys would be."""
    row = conn.execute("SELECT expires_at FROM inbox_keep WHERE conversation = ?", (base,)).fetchone()
    if row is not None and row[0] <= now:
        conn.execute("DELETE FROM inbox WHERE conversation = ?", (base,))
        conn.execute("DELETE FROM turns WHERE conversation = ?", (base,))
        conn.execute("DELETE FROM inbox_keep WHERE conversation = ?", (base,))


def _record(conn: sqlite3.Connection, base: str, message_key: str) -> str | None:
    row = conn.execute(_RECORD, (base, message_key)).fetchone()
    return None if row is None else str(row[0])


def _put_record(conn: sqlite3.Connection, base: str, message_key: str, record: TurnRecord, now: float) -> None:
    # A record written anew (its old one pruned) gets an arrival, so it is pruned in turn: Redis's HSET is not.
    conn.execute(
        "INSERT INTO turns (conversation, message_key, record, arrived) VALUES (?, ?, ?, ?) "
        "ON CONFLICT(conversation, message_key) DO UPDATE SET record = excluded.record",
        (base, message_key, record.to_json(), now),
    )


def _trim(conn: sqlite3.Connection, table: str, column: str, key: str, keep: int) -> None:
    conn.execute(  # keeps the newest `keep` rows of `key`; table and column are ours, never input
        f"DELETE FROM {table} WHERE {column} = ? AND id <= "  # noqa: S608
        f"(SELECT id FROM {table} WHERE {column} = ? ORDER BY id DESC LIMIT 1 OFFSET ?)",
        (key, key, keep),
    )


def _count_hit(conn: sqlite3.Connection, rate_key: str, user_id: str, window: str, now: float) -> int:
    """The sender's hits in `window`, this one included: RECEIVE's rate hash, as one JSON object in kv."""
    row = conn.execute("SELECT value, expires_at FROM kv WHERE key = ?", (rate_key,)).fetchone()
    counts: dict[str, str] = json.loads(row[0]) if row is not None and (row[1] is None or row[1] > now) else {}
    seen_window, _, seen_hits = counts.get(user_id, "").partition("|")
    hits = int(seen_hits) + 1 if seen_window == window and seen_hits.isdigit() else 1
    counts[user_id] = f"{window}|{hits}"
    sql = "INSERT OR REPLACE INTO kv (key, value, expires_at) VALUES (?, ?, ?)"
    conn.execute(sql, (rate_key, json.dumps(counts, separators=(",", ":")), now + _RATE_KEEP_SECONDS))
    return hits
