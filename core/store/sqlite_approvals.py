"""Approval records in the embedded SQLite file: `RedisApprovals`' semantics, each step one write transaction.

Rows are keyed by the Redis key name (`keys.approval_key`), so a record looks alike in both stores.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Collection

from core.store.approvals import ApprovalRecord, ApprovalState, Decided
from core.store.keys import approval_key
from core.store.sqlite_db import SqliteDatabase

__all__ = ["SqliteApprovals"]

_SELECT = "SELECT data, state, decided_by, ran, prompt, expires_ms FROM approvals WHERE key = ? AND keep_until > ?"


class SqliteApprovals:
    def __init__(self, db: SqliteDatabase, *, key_prefix: str = "chat") -> None:
        self._db = db
        self._prefix = key_prefix

    def _read(self, conn: sqlite3.Connection, key: str, approval_id: str) -> ApprovalRecord | None:
        row = conn.execute(_SELECT, (key, self._db.clock())).fetchone()
        if row is None:
            return None
        data, state, decided_by, ran, prompt, expires_ms = row
        return ApprovalRecord.from_parts(
            approval_id, data, state=state, decided_by=decided_by, ran=bool(ran), prompt=prompt, expires_ms=expires_ms
        )

    async def create(self, record: ApprovalRecord, keep_seconds: int) -> ApprovalRecord:
        key = approval_key(self._prefix, record.namespace, record.approval_id)

        def write(conn: sqlite3.Connection) -> ApprovalRecord:
            now = self._db.clock()
            conn.execute("DELETE FROM approvals WHERE key = ? AND keep_until <= ?", (key, now))
            conn.execute(
                "INSERT OR IGNORE INTO approvals VALUES (?, ?, 'pending', '', 0, '', ?, ?)",
                (key, record.data_json(), int(record.expires_at * 1000), max(record.expires_at, now) + keep_seconds),
            )
            stored = self._read(conn, key, record.approval_id)
            assert stored is not None
            return stored

        return await self._db.run(write, write=True)

    async def get(self, namespace: str | None, approval_id: str) -> ApprovalRecord | None:
        key = approval_key(self._prefix, namespace, approval_id)
        return await self._db.run(lambda conn: self._read(conn, key, approval_id))

    async def decide(
        self, namespace: str | None, approval_id: str, state: ApprovalState, user_id: str, approvers: Collection[str]
    ) -> Decided:
        key = approval_key(self._prefix, namespace, approval_id)
        allowed = set(approvers)

        def write(conn: sqlite3.Connection) -> Decided:
            record = self._read(conn, key, approval_id)
            if record is None:
                return Decided("missing", None)
            if record.state != "pending":
                return Decided("late", record)
            update = "UPDATE approvals SET state = ?, decided_by = ? WHERE key = ?"
            if state != "expired" and self._db.clock() >= record.expires_at:
                conn.execute(update, ("expired", "", key))
                return Decided("late", record.with_state("expired"))
            if state != "expired" and user_id != record.requester and user_id not in allowed:
                return Decided("refused", record)
            conn.execute(update, (state, user_id, key))
            return Decided("decided", record.with_state(state, user_id))

        return await self._db.run(write, write=True)

    async def claim_run(self, namespace: str | None, approval_id: str) -> bool:
        key = approval_key(self._prefix, namespace, approval_id)

        def write(conn: sqlite3.Connection) -> bool:
            claim = "UPDATE approvals SET ran = 1 WHERE key = ? AND state = 'approved' AND ran = 0"
            cursor = conn.execute(claim, (key,))
            return cursor.rowcount == 1

        return await self._db.run(write, write=True)

    async def set_prompt(self, namespace: str | None, approval_id: str, prompt: str) -> None:
        key = approval_key(self._prefix, namespace, approval_id)
        await self._db.run(lambda conn: conn.execute("UPDATE approvals SET prompt = ? WHERE key = ?", (prompt, key)),
                           write=True)  # fmt: skip
