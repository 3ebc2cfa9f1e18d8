"""The contract suite runs unchanged against both backends through `backend_factory`."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from core.store import RedisConnection, SqliteConnection

BackendFactory = Callable[..., Awaitable[RedisConnection | SqliteConnection]]


@pytest.fixture(params=["redis", "sqlite", "cluster"])
async def backend_factory(
    request: pytest.FixtureRequest, redis_url: str, key_prefix: str, tmp_path: Path
) -> AsyncIterator[BackendFactory]:
    url = request.getfixturevalue("redis_cluster").url if request.param == "cluster" else redis_url
    opened: list[RedisConnection | SqliteConnection] = []

    async def make(
        *, max_messages: int | None = None, ttl_seconds: int | None = None
    ) -> RedisConnection | SqliteConnection:
        backend: RedisConnection | SqliteConnection
        if request.param in ("redis", "cluster"):
            backend = RedisConnection.from_url(
                url, key_prefix=key_prefix, max_messages=max_messages, ttl_seconds=ttl_seconds
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
