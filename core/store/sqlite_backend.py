"""The embedded backend: one SQLite file under DATA_DIR, handing out stores, the inbox and flags.

The same contract as `RedisConnection`, for running with no server; the same key names, so a
thread's data looks alike in both.
"""

from __future__ import annotations

import asyncio
import fnmatch
import sqlite3
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

from core.errors import StoreUnavailableError
from core.store.base import Cleared, ThreadRef
from core.store.keys import (
    ConversationKeys,
    flag_key,
    inbox_index_key,
    is_reset_key,
    parse_conversation_key,
    parse_message_key,
    thread_prefix,
)
from core.store.sqlite import SqliteChatMessageStore
from core.store.sqlite_approvals import SqliteApprovals
from core.store.sqlite_db import Clock, SqliteDatabase, sweep
from core.store.sqlite_inbox import SqliteInbox
from core.store.sqlite_usage import SqliteUsageLedger

__all__ = ["SqliteConnection"]

# Where a conversation has rows, by the Redis key they stand for: (table, column, key suffix or "" for the base).
_CONVERSATION_ROWS = (
    ("threads", "key", ":messages"),
    ("writes", "conversation", ""),
    ("inbox", "conversation", ""),
    ("inbox_keep", "conversation", ""),
    ("turns", "conversation", ""),
    ("kv", "key", ":rate"),
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

    def inbox(self, *, lease_seconds: float, keep_seconds: int, owner: str | None = None) -> SqliteInbox:
        """The process's inbox in the same file: one process only (several processes need Redis)."""
        return SqliteInbox(
            self._db, key_prefix=self.key_prefix, max_messages=self.max_messages, ttl_seconds=self.ttl_seconds,
            lease_seconds=lease_seconds, keep_seconds=keep_seconds, owner=owner,
        )  # fmt: skip

    async def _set_once(self, key: str, ttl_seconds: int | None, *, only_new: bool) -> bool:
        def write(conn: sqlite3.Connection) -> bool:
            now = self._db.clock()
            conn.execute("DELETE FROM kv WHERE key = ? AND expires_at <= ?", (key, now))
            verb = "INSERT OR IGNORE" if only_new else "INSERT OR REPLACE"
            expires = now + ttl_seconds if ttl_seconds else None
            cursor = conn.execute(f"{verb} INTO kv (key, value, expires_at) VALUES (?, '1', ?)", (key, expires))
            return cursor.rowcount == 1

        return await self._db.run(write, write=True)

    def approvals(self) -> SqliteApprovals:
        """The approval records on this backend."""
        return SqliteApprovals(self._db, key_prefix=self.key_prefix)

    def usage(self) -> SqliteUsageLedger:
        """The token counters and budget charges in the same file."""
        return SqliteUsageLedger(self._db, key_prefix=self.key_prefix)

    async def set_flag(self, name: str, ttl_seconds: int | None) -> None:
        await self._set_once(flag_key(self.key_prefix, name), ttl_seconds, only_new=False)

    async def has_flag(self, name: str) -> bool:
        key = flag_key(self.key_prefix, name)

        def read(conn: sqlite3.Connection) -> bool:
            row = conn.execute("SELECT expires_at FROM kv WHERE key = ?", (key,)).fetchone()
            return row is not None and (row[0] is None or row[0] > self._db.clock())

        return await self._db.run(read)

    async def clear_flag(self, name: str) -> bool:
        key = flag_key(self.key_prefix, name)

        def delete(conn: sqlite3.Connection) -> bool:
            now = self._db.clock()
            return conn.execute("DELETE FROM kv WHERE key = ? AND (expires_at IS NULL OR expires_at > ?)",
                                (key, now)).rowcount > 0  # fmt: skip

        return await self._db.run(delete, write=True)

    async def iter_threads(self, namespace: str | None = None, match: str | None = None) -> AsyncIterator[ThreadRef]:
        def read(conn: sqlite3.Connection) -> list[str]:
            rows = conn.execute(
                "SELECT key FROM threads WHERE expires_at IS NULL OR expires_at > ? ORDER BY key", (self._db.clock(),)
            )
            return [row[0] for row in rows]

        for key in await self._db.run(read):
            parsed = parse_message_key(key, self.key_prefix)
            if parsed is None:
                continue
            ref = ThreadRef(*parsed)
            if namespace is not None and ref.namespace != namespace:
                continue
            if match is None or fnmatch.fnmatchcase(ref.thread_id, match):
                yield ref

    async def find_conversations(self, thread_id: str) -> list[ThreadRef]:
        tag = f"{{{thread_id}}}"

        def read(conn: sqlite3.Connection) -> set[str | None]:
            sweep(conn, self._db.clock())  # as Redis would show it: nothing expired
            found: set[str | None] = set()
            for table, column, suffix in _CONVERSATION_ROWS:
                rows = conn.execute(f"SELECT DISTINCT {column} FROM {table} WHERE instr({column}, ?) > 0", (tag,))  # noqa: S608 -- ours
                for (key,) in rows:
                    parsed = parse_conversation_key(str(key) + ("" if suffix else ":"), self.key_prefix)
                    if parsed is not None and parsed[1] == thread_id and not is_reset_key(str(key)):
                        found.add(parsed[0])
            return found

        namespaces = await self._db.run(read, write=True)
        return [ThreadRef(namespace, thread_id) for namespace in sorted(namespaces, key=lambda n: n or "")]

    async def clear_conversation(
        self, ref: ThreadRef, *, lease_seconds: float, force: bool = False, flags: Sequence[str] = ()
    ) -> Cleared:
        keys = ConversationKeys.of(self.key_prefix, ref.namespace, ref.thread_id)
        base = thread_prefix(self.key_prefix, ref.namespace, ref.thread_id)
        index = inbox_index_key(self.key_prefix, ref.namespace)
        flag_keys = [flag_key(self.key_prefix, name) for name in flags]

        def clear(conn: sqlite3.Connection) -> Cleared:
            now = self._db.clock()
            held = conn.execute(
                "SELECT leased_at FROM inbox WHERE conversation = ? AND leased_at NOT NULL ORDER BY id LIMIT 1", (base,)
            ).fetchone()
            if held is not None and not force and now - float(held[0]) < lease_seconds:
                return Cleared(busy_seconds=lease_seconds - (now - float(held[0])))
            count = "SELECT COUNT(*) FROM {} WHERE {} = ?"
            messages = conn.execute(count.format("messages", "key"), (keys.messages,)).fetchone()[0]
            waiting = conn.execute(count.format("inbox", "conversation"), (base,)).fetchone()[0]
            removed: list[str] = []
            for table, column, key in (
                ("messages", "key", keys.messages), ("threads", "key", keys.messages),
                ("writes", "conversation", keys.writes), ("inbox", "conversation", keys.inbox),
                ("inbox_keep", "conversation", keys.inbox), ("turns", "conversation", keys.turns),
                ("kv", "key", keys.rate),
            ):  # fmt: skip
                value = base if column == "conversation" else key
                if conn.execute(f"DELETE FROM {table} WHERE {column} = ?", (value,)).rowcount:  # noqa: S608 -- ours
                    removed += [key, keys.seen] if table == "turns" else [key]  # `turns` rows hold Redis's seen too
            sql = "DELETE FROM inbox_index WHERE key = ? AND thread_id = ?"
            indexed = conn.execute(sql, (index, ref.thread_id)).rowcount > 0
            flags_removed = [k for k in flag_keys if conn.execute("DELETE FROM kv WHERE key = ?", (k,)).rowcount]
            return Cleared(
                messages=int(messages), waiting=int(waiting), keys=tuple(dict.fromkeys(removed)),
                index=index if indexed else None, flags=tuple(flags_removed),
            )  # fmt: skip

        return await self._db.run(clear, write=True)

    async def ping(self) -> bool:
        try:
            return await self._db.run(lambda conn: conn.execute("SELECT 1").fetchone() is not None)
        except StoreUnavailableError:
            return False

    async def aclose(self) -> None:
        await asyncio.to_thread(self._db.close)
