"""The embedded store's one SQLite connection per process: schema, transactions, expiry.

Every call runs in `asyncio.to_thread`, serialised by a lock, so the event loop never blocks; writes
are one `BEGIN IMMEDIATE` transaction each; WAL mode lets other processes read meanwhile.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from core.errors import StoreUnavailableError

__all__ = ["Clock", "SqliteDatabase", "drop_if_expired", "is_live", "sweep"]

T = TypeVar("T")
Clock = Callable[[], float]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (id INTEGER PRIMARY KEY AUTOINCREMENT, key TEXT NOT NULL, payload TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS messages_by_key ON messages (key, id);
CREATE TABLE IF NOT EXISTS threads (key TEXT PRIMARY KEY, expires_at REAL);
CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value TEXT NOT NULL, expires_at REAL);
CREATE TABLE IF NOT EXISTS inbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT, conversation TEXT NOT NULL, message_key TEXT NOT NULL,
    payload TEXT NOT NULL, owner TEXT, deliveries INTEGER NOT NULL DEFAULT 0, leased_at REAL
);
CREATE INDEX IF NOT EXISTS inbox_by_conversation ON inbox (conversation, id);
CREATE TABLE IF NOT EXISTS turns (
    conversation TEXT NOT NULL, message_key TEXT NOT NULL, record TEXT NOT NULL, arrived REAL NOT NULL,
    PRIMARY KEY (conversation, message_key)
);
CREATE INDEX IF NOT EXISTS turns_by_arrival ON turns (conversation, arrived);
CREATE TABLE IF NOT EXISTS inbox_keep (conversation TEXT PRIMARY KEY, expires_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS writes (
    id INTEGER PRIMARY KEY AUTOINCREMENT, conversation TEXT NOT NULL, batch TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS writes_by_conversation ON writes (conversation, id);
CREATE TABLE IF NOT EXISTS inbox_index (
    key TEXT NOT NULL, thread_id TEXT NOT NULL, score REAL NOT NULL, PRIMARY KEY (key, thread_id)
);
CREATE INDEX IF NOT EXISTS inbox_index_by_score ON inbox_index (key, score);
CREATE TABLE IF NOT EXISTS approvals (
    key TEXT PRIMARY KEY, data TEXT NOT NULL, state TEXT NOT NULL, decided_by TEXT NOT NULL, ran INTEGER NOT NULL,
    prompt TEXT NOT NULL, expires_ms INTEGER NOT NULL, keep_until REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS usage (
    key TEXT NOT NULL, field TEXT NOT NULL, value INTEGER NOT NULL, expires_at REAL NOT NULL, PRIMARY KEY (key, field)
);
"""
_SWEEP_EVERY_WRITES = 200


class SqliteDatabase:
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
                    sweep(conn, self.clock())
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


def sweep(conn: sqlite3.Connection, now: float) -> None:
    conn.execute("DELETE FROM messages WHERE key IN (SELECT key FROM threads WHERE expires_at <= ?)", (now,))
    conn.execute("DELETE FROM threads WHERE expires_at <= ?", (now,))
    conn.execute("DELETE FROM kv WHERE expires_at <= ?", (now,))
    # A conversation's inbox and records go together at their keep deadline, as Redis expires those keys;
    # rows with no deadline left are orphans (a finish after it passed). Batch IDs go with the history.
    conn.execute("DELETE FROM inbox_keep WHERE expires_at <= ?", (now,))
    conn.execute("DELETE FROM inbox WHERE conversation NOT IN (SELECT conversation FROM inbox_keep)")
    conn.execute("DELETE FROM turns WHERE conversation NOT IN (SELECT conversation FROM inbox_keep)")
    conn.execute("DELETE FROM writes WHERE conversation || ':messages' NOT IN (SELECT key FROM threads)")
    conn.execute("DELETE FROM approvals WHERE keep_until <= ?", (now,))
    conn.execute("DELETE FROM usage WHERE expires_at <= ?", (now,))


def drop_if_expired(conn: sqlite3.Connection, key: str, now: float) -> None:
    row = conn.execute("SELECT expires_at FROM threads WHERE key = ?", (key,)).fetchone()
    if row is not None and row[0] is not None and row[0] <= now:
        conn.execute("DELETE FROM messages WHERE key = ?", (key,))
        conn.execute("DELETE FROM threads WHERE key = ?", (key,))


def is_live(conn: sqlite3.Connection, key: str, now: float) -> bool:
    row = conn.execute("SELECT expires_at FROM threads WHERE key = ?", (key,)).fetchone()
    return row is not None and (row[0] is None or row[0] > now)
