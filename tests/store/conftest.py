"""The contract suite runs unchanged against both backends through `backend_factory`."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from core.store import RedisConnection, SqliteConnection

BackendFactory = Callable[..., Awaitable[RedisConnection | SqliteConnection]]


@pytest.fixture(params=["redis", "sqlite"])
async def backend_factory(
    request: pytest.FixtureRequest, redis_url: str, key_prefix: str, tmp_path: Path
) -> AsyncIterator[BackendFactory]:
    opened: list[RedisConnection | SqliteConnection] = []

    async def make(
        *, max_messages: int | None = None, ttl_seconds: int | None = None
    ) -> RedisConnection | SqliteConnection:
        backend: RedisConnection | SqliteConnection
        if request.param == "redis":
            backend = RedisConnection.from_url(
                redis_url, key_prefix=key_prefix, max_messages=max_messages, ttl_seconds=ttl_seconds
            )
        else:
            backend = SqliteConnection(
                tmp_path / "memory.sqlite3", key_prefix=key_prefix, max_messages=max_messages, ttl_seconds=ttl_seconds
            )
        opened.append(backend)
        return backend

    yield make
    for backend in opened:
        await backend.aclose()
