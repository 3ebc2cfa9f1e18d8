"""The embedded default: the same memory contract as Redis, on one SQLite file, for running with no server.

Same key names, trimming, sliding TTL and atomicity as the Redis store (each write is one
`BEGIN IMMEDIATE` transaction). SQLite calls run in `asyncio.to_thread` so the event loop never
blocks; one connection per process, serialised by a lock, in WAL mode so other processes can read.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from uuid import uuid4

from core.errors import StoreUnavailableError
from core.messages import ChatMessage
from core.store.codec import decode_messages
from core.store.keys import message_key
from core.store.sqlite_db import SqliteDatabase, drop_if_expired, is_live
from core.store.state import ThreadState

__all__ = ["SqliteChatMessageStore"]


class SqliteChatMessageStore(ThreadState):
    """One thread's history in the embedded SQLite file; the same contract as `RedisChatMessageStore`."""

    state_type = "sqlite_store_state"

    def __init__(
        self,
        db: SqliteDatabase,
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
            drop_if_expired(conn, key, now)
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
            if not is_live(conn, key, self._db.clock()):
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
