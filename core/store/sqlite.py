"""The embedded default: the same memory contract as Redis, on one SQLite file, for running with no server.

Same key names, trimming, sliding TTL and atomicity as the Redis store (each write is one
`BEGIN IMMEDIATE` transaction). SQLite calls run in `asyncio.to_thread` so the event loop never
blocks; one connection per process, serialised by a lock, in WAL mode so other processes can read.
"""

from __future__ import annotations

import asyncio
import fnmatch
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import TypeVar
from uuid import uuid4

from core.errors import StoreUnavailableError
from core.messages import ChatMessage
from core.store.base import ThreadRef
from core.store.codec import decode_messages, parse_message_key
from core.store.keys import event_key, lock_key, message_key
from core.store.state import ThreadState

__all__ = ["SqliteChatMessageStore", "SqliteConnection"]

T = TypeVar("T")
Clock = Callable[[], float]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (id INTEGER PRIMARY KEY AUTOINCREMENT, key TEXT NOT NULL, payload TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS messages_by_key ON messages (key, id);
CREATE TABLE IF NOT EXISTS threads (key TEXT PRIMARY KEY, expires_at REAL);
CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value TEXT NOT NULL, expires_at REAL);
"""
_LOCK_POLL_SECONDS = 0.005
_SWEEP_EVERY_WRITES = 200


class _Database:
    """One SQLite connection shared by a process's stores; every call runs off the event loop."""

    def __init__(self, path: Path, clock: Clock) -> None:
        self.path = path
        self.clock = clock
        self._conn: sqlite3.Connection | None = None
        self._mutex = threading.Lock()
        self._writes = 0

    def _open(self) -> sqlite3.Connection:
        if self._conn is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=5)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.executescript(_SCHEMA)
            self._conn = conn
        return self._conn

    def _call(self, fn: Callable[[sqlite3.Connection], T], write: bool) -> T:
        with self._mutex:
            conn = self._open()
            if not write:
                return fn(conn)
            conn.execute("BEGIN IMMEDIATE")
            try:
                result = fn(conn)
                self._writes += 1
                if self._writes % _SWEEP_EVERY_WRITES == 0:
                    _sweep(conn, self.clock())
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            return result

    async def run(self, fn: Callable[[sqlite3.Connection], T], *, write: bool = False) -> T:
        try:
            return await asyncio.to_thread(self._call, fn, write)
        except sqlite3.Error as exc:
            raise StoreUnavailableError(f"SQLite store {self.path} failed: {type(exc).__name__}: {exc}") from exc

    def close(self) -> None:
        with self._mutex:
            if self._conn is not None:
                self._conn.close()
                self._conn = None


def _sweep(conn: sqlite3.Connection, now: float) -> None:
    conn.execute("DELETE FROM messages WHERE key IN (SELECT key FROM threads WHERE expires_at <= ?)", (now,))
    conn.execute("DELETE FROM threads WHERE expires_at <= ?", (now,))
    conn.execute("DELETE FROM kv WHERE expires_at <= ?", (now,))


def _drop_if_expired(conn: sqlite3.Connection, key: str, now: float) -> None:
    row = conn.execute("SELECT expires_at FROM threads WHERE key = ?", (key,)).fetchone()
    if row is not None and row[0] is not None and row[0] <= now:
        conn.execute("DELETE FROM messages WHERE key = ?", (key,))
        conn.execute("DELETE FROM threads WHERE key = ?", (key,))


def _live(conn: sqlite3.Connection, key: str, now: float) -> bool:
    row = conn.execute("SELECT expires_at FROM threads WHERE key = ?", (key,)).fetchone()
    return row is not None and (row[0] is None or row[0] > now)


class SqliteChatMessageStore(ThreadState):
    """One thread's history in the embedded SQLite file; the same contract as `RedisChatMessageStore`."""

    state_type = "sqlite_store_state"

    def __init__(
        self,
        db: _Database,
        *,
        thread_id: str | None = None,
        key_prefix: str = "chat",
        namespace: str | None = None,
        max_messages: int | None = None,
        ttl_seconds: int | None = None,
    ) -> None:
        if max_messages is not None and max_messages <= 0:
            raise ValueError("max_messages must be a positive number, or None to keep every message")
        self._db = db
        self.key_prefix = key_prefix
        self.namespace = namespace
        self.max_messages = max_messages
        self.ttl_seconds = ttl_seconds
        self.thread_id = thread_id or f"thread_{uuid4().hex}"
        self._bind_keys()

    def _bind_keys(self) -> None:
        self._key = message_key(self.key_prefix, self.namespace, self.thread_id)

    @property
    def key(self) -> str:
        return self._key

    async def add_messages(self, messages: Sequence[ChatMessage]) -> None:
        """Append, trim and refresh the TTL in one transaction.

        Raises:
            StoreUnavailableError: the SQLite file could not be written; nothing was.
        """
        if not messages:
            return
        rows = [(self._key, m.to_json()) for m in messages]
        key, cap, ttl = self._key, self.max_messages, self.ttl_seconds

        def write(conn: sqlite3.Connection) -> None:
            now = self._db.clock()
            _drop_if_expired(conn, key, now)
            conn.executemany("INSERT INTO messages (key, payload) VALUES (?, ?)", rows)
            if cap is not None:
                conn.execute(
                    "DELETE FROM messages WHERE key = ? AND id <= "
                    "(SELECT id FROM messages WHERE key = ? ORDER BY id DESC LIMIT 1 OFFSET ?)",
                    (key, key, cap),
                )
            expires = now + ttl if ttl else None
            conn.execute(
                "INSERT INTO threads (key, expires_at) VALUES (?, ?) "
                "ON CONFLICT(key) DO UPDATE SET expires_at = excluded.expires_at",
                (key, expires),
            )

        await self._db.run(write, write=True)

    async def list_messages(self) -> list[ChatMessage]:
        key, cap = self._key, self.max_messages

        def read(conn: sqlite3.Connection) -> list[str]:
            if not _live(conn, key, self._db.clock()):
                return []
            limit = cap if cap is not None else -1
            rows = conn.execute(
                "SELECT payload FROM messages WHERE key = ? ORDER BY id DESC LIMIT ?", (key, limit)
            ).fetchall()
            return [row[0] for row in reversed(rows)]

        return decode_messages(await self._db.run(read), key)

    async def clear(self) -> None:
        key = self._key

        def delete(conn: sqlite3.Connection) -> None:
            conn.execute("DELETE FROM messages WHERE key = ?", (key,))
            conn.execute("DELETE FROM threads WHERE key = ?", (key,))

        await self._db.run(delete, write=True)

    async def ttl_seconds_left(self) -> int | None:
        key = self._key

        def read(conn: sqlite3.Connection) -> int | None:
            row = conn.execute("SELECT expires_at FROM threads WHERE key = ?", (key,)).fetchone()
            now = self._db.clock()
            if row is None or row[0] is None or row[0] <= now:
                return None
            return max(0, round(float(row[0]) - now))

        return await self._db.run(read)

    async def ping(self) -> bool:
        try:
            return await self._db.run(lambda conn: conn.execute("SELECT 1").fetchone() is not None)
        except StoreUnavailableError:
            return False

    async def aclose(self) -> None:
        """Stores borrow the connection's database; closing one leaves it open for the others."""


class _SqliteTurnLock:
    def __init__(self, db: _Database, key: str, expire_seconds: float) -> None:
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
        self._db = _Database(Path(path), clock)
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
