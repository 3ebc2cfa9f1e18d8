"""The embedded backend: one SQLite file under DATA_DIR, handing out stores, event claims, locks and counters.

The same contract as `RedisConnection`, for running with no server; the same key names, so a
thread's data looks alike in both.
"""

from __future__ import annotations

import asyncio
import fnmatch
import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path
from uuid import uuid4

from core.errors import StoreUnavailableError
from core.store.base import ThreadRef
from core.store.codec import parse_message_key
from core.store.keys import event_key, lock_key
from core.store.sqlite import SqliteChatMessageStore
from core.store.sqlite_db import Clock, SqliteDatabase

__all__ = ["SqliteConnection"]

_LOCK_POLL_SECONDS = 0.005


class _SqliteTurnLock:
    def __init__(self, db: SqliteDatabase, key: str, expire_seconds: float) -> None:
        self._db, self._key, self._expire = db, key, expire_seconds
        self._token = uuid4().hex

    def _take(self, conn: sqlite3.Connection) -> bool:
        now = self._db.clock()
        conn.execute("DELETE FROM kv WHERE key = ? AND expires_at <= ?", (self._key, now))
        cursor = conn.execute(
            "INSERT OR IGNORE INTO kv (key, value, expires_at) VALUES (?, ?, ?)",
            (self._key, self._token, now + self._expire),
        )
        return cursor.rowcount == 1

    async def acquire(self, wait_seconds: float) -> bool:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_seconds
        while not await self._db.run(self._take, write=True):
            if loop.time() >= deadline:
                return False
            await asyncio.sleep(_LOCK_POLL_SECONDS)  # another process holds the turn; SQLite cannot notify us
        return True

    async def extend(self) -> bool:
        def renew(conn: sqlite3.Connection) -> bool:
            cursor = conn.execute(
                "UPDATE kv SET expires_at = ? WHERE key = ? AND value = ?",
                (self._db.clock() + self._expire, self._key, self._token),
            )
            return cursor.rowcount == 1

        return await self._db.run(renew, write=True)

    async def release(self) -> None:
        await self._db.run(
            lambda conn: conn.execute("DELETE FROM kv WHERE key = ? AND value = ?", (self._key, self._token)),
            write=True,
        )


class SqliteConnection:
    """The embedded backend: one SQLite file under `data_dir`, shared by every store of the process."""

    kind = "sqlite"

    def __init__(
        self,
        path: Path,
        *,
        key_prefix: str = "chat",
        max_messages: int | None = None,
        ttl_seconds: int | None = None,
        clock: Clock = time.time,
    ) -> None:
        self._db = SqliteDatabase(Path(path), clock)
        self.key_prefix = key_prefix
        self.max_messages = max_messages
        self.ttl_seconds = ttl_seconds

    def describe(self) -> str:
        return f"embedded SQLite store at {self._db.path}"

    def store(self, thread_id: str, namespace: str | None = None) -> SqliteChatMessageStore:
        return SqliteChatMessageStore(
            self._db,
            thread_id=thread_id,
            key_prefix=self.key_prefix,
            namespace=namespace,
            max_messages=self.max_messages,
            ttl_seconds=self.ttl_seconds,
        )

    async def _set_once(self, key: str, ttl_seconds: int | None, *, only_new: bool) -> bool:
        def write(conn: sqlite3.Connection) -> bool:
            now = self._db.clock()
            conn.execute("DELETE FROM kv WHERE key = ? AND expires_at <= ?", (key, now))
            verb = "INSERT OR IGNORE" if only_new else "INSERT OR REPLACE"
            expires = now + ttl_seconds if ttl_seconds else None
            cursor = conn.execute(f"{verb} INTO kv (key, value, expires_at) VALUES (?, '1', ?)", (key, expires))
            return cursor.rowcount == 1

        return await self._db.run(write, write=True)

    async def claim_event(self, namespace: str | None, event_id: str, ttl_seconds: int) -> bool:
        return await self._set_once(event_key(self.key_prefix, namespace, event_id), ttl_seconds, only_new=True)

    async def release_event(self, namespace: str | None, event_id: str) -> None:
        key = event_key(self.key_prefix, namespace, event_id)
        await self._db.run(lambda conn: conn.execute("DELETE FROM kv WHERE key = ?", (key,)), write=True)

    def turn_lock(self, namespace: str | None, thread_id: str, expire_seconds: float) -> _SqliteTurnLock:
        return _SqliteTurnLock(self._db, lock_key(self.key_prefix, namespace, thread_id), expire_seconds)

    async def count_hit(self, name: str, window_seconds: int) -> int:
        key = f"{self.key_prefix}:rate:{name}"

        def write(conn: sqlite3.Connection) -> int:
            now = self._db.clock()
            conn.execute("DELETE FROM kv WHERE key = ? AND expires_at <= ?", (key, now))
            conn.execute(
                "INSERT INTO kv (key, value, expires_at) VALUES (?, '1', ?) "
                "ON CONFLICT(key) DO UPDATE SET value = CAST(value AS INTEGER) + 1",
                (key, now + window_seconds),
            )
            return int(conn.execute("SELECT value FROM kv WHERE key = ?", (key,)).fetchone()[0])

        return await self._db.run(write, write=True)

    async def set_flag(self, name: str, ttl_seconds: int | None) -> None:
        await self._set_once(f"{self.key_prefix}:flag:{name}", ttl_seconds, only_new=False)

    async def has_flag(self, name: str) -> bool:
        key = f"{self.key_prefix}:flag:{name}"

        def read(conn: sqlite3.Connection) -> bool:
            row = conn.execute("SELECT expires_at FROM kv WHERE key = ?", (key,)).fetchone()
            return row is not None and (row[0] is None or row[0] > self._db.clock())

        return await self._db.run(read)

    async def iter_threads(self, namespace: str | None = None, match: str | None = None) -> AsyncIterator[ThreadRef]:
        def read(conn: sqlite3.Connection) -> list[str]:
            rows = conn.execute(
                "SELECT key FROM threads WHERE expires_at IS NULL OR expires_at > ? ORDER BY key", (self._db.clock(),)
            )
            return [row[0] for row in rows]

        for key in await self._db.run(read):
            ref = parse_message_key(key, self.key_prefix)
            if ref is None or (namespace is not None and ref.namespace != namespace):
                continue
            if match is None or fnmatch.fnmatchcase(ref.thread_id, match):
                yield ref

    async def ping(self) -> bool:
        try:
            return await self._db.run(lambda conn: conn.execute("SELECT 1").fetchone() is not None)
        except StoreUnavailableError:
            return False

    async def aclose(self) -> None:
        await asyncio.to_thread(self._db.close)
