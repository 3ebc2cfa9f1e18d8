"""The usage ledger in the embedded SQLite file: Redis's hashes and indexes as (key, field, value) rows.

The same key names as on Redis; each step is one `BEGIN IMMEDIATE` transaction, so a reservation is as
atomic as the Redis script (within the one process the embedded store serves).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from core.store.keys import usage_index_key, usage_key, usage_member
from core.store.sqlite_db import SqliteDatabase
from core.store.usage import USAGE_KEEP_SECONDS, Charge, Scope, Subject, SubjectUsage, summed_usage, top_subjects
from core.usage.meter import TokenCount

__all__ = ["SqliteUsageLedger"]

_ADD = (
    "INSERT INTO usage (key, field, value, expires_at) VALUES (?, ?, ?, ?) "
    "ON CONFLICT (key, field) DO UPDATE SET value = MAX(0, value + excluded.value), expires_at = excluded.expires_at"
)

_REFUND = "UPDATE usage SET value = MAX(0, value + ?) WHERE key = ? AND field = 'charged'"


class SqliteUsageLedger:
    def __init__(self, db: SqliteDatabase, *, key_prefix: str = "chat") -> None:
        self._db = db
        self._prefix = key_prefix

    def _key(self, day: str, subject: Subject) -> str:
        return usage_key(self._prefix, day, subject.scope, subject.platform, subject.id)

    def _fields(self, conn: sqlite3.Connection, key: str) -> dict[str, int]:
        rows = conn.execute("SELECT field, value FROM usage WHERE key = ? AND expires_at > ?", (key, self._db.clock()))
        return {str(name): int(value) for name, value in rows}

    async def reserve(self, day: str, charges: Sequence[Charge]) -> Subject | None:
        def write(conn: sqlite3.Connection) -> Subject | None:
            keys = [self._key(day, charge.subject) for charge in charges]
            for key, charge in zip(keys, charges, strict=True):
                if charge.limit > 0 and self._fields(conn, key).get("charged", 0) >= charge.limit:
                    return charge.subject
            expires = self._db.clock() + USAGE_KEEP_SECONDS
            for key, charge in zip(keys, charges, strict=True):
                conn.execute(_ADD, (key, "charged", charge.tokens, expires))
            return None

        return await self._db.run(write, write=True) if charges else None

    async def settle(
        self, day: str, subjects: Sequence[Subject], model: str, tokens: TokenCount, charges: Sequence[Charge]
    ) -> None:
        deltas = {charge.subject: charge.tokens for charge in charges}

        def write(conn: sqlite3.Connection) -> None:
            expires = self._db.clock() + USAGE_KEEP_SECONDS
            for subject in subjects:
                key = self._key(day, subject)
                if tokens.total > 0:
                    added = [
                        (f"{model}|prompt", tokens.prompt),
                        (f"{model}|completion", tokens.completion),
                        ("turns", 1),
                    ]
                    if tokens.estimated:
                        added.append((f"{model}|estimated", tokens.estimated))
                    for name, value in added:
                        conn.execute(_ADD, (key, name, value, expires))
                    index = usage_index_key(self._prefix, day, subject.scope)
                    conn.execute(_ADD, (index, usage_member(subject.platform, subject.id), tokens.total, expires))
                delta = deltas.get(subject)
                if delta and delta > 0:
                    conn.execute(_ADD, (key, "charged", delta, expires))
                elif delta:  # a refund: only of a charge there is, never below zero
                    conn.execute(_REFUND, (delta, key))

        if subjects:
            await self._db.run(write, write=True)

    async def usage(self, days: Sequence[str], subjects: Sequence[Subject]) -> list[SubjectUsage]:
        def read(conn: sqlite3.Connection) -> list[SubjectUsage]:
            return [summed_usage(s, [self._fields(conn, self._key(day, s)) for day in days]) for s in subjects]

        return await self._db.run(read)

    async def top(
        self, days: Sequence[str], scope: Scope, limit: int, platform: str | None = None
    ) -> list[SubjectUsage]:
        def read(conn: sqlite3.Connection) -> dict[str, int]:
            totals: dict[str, int] = {}
            for day in days:
                for member, value in self._fields(conn, usage_index_key(self._prefix, day, scope)).items():
                    totals[member] = totals.get(member, 0) + value
            return totals

        return await self.usage(days, top_subjects(await self._db.run(read), scope, limit, platform))
