"""Choose the memory backend from settings: Redis when REDIS_URL is set, else the embedded SQLite file."""

from __future__ import annotations

from core.settings import Settings
from core.store.redis_backend import RedisConnection
from core.store.sqlite_backend import SqliteConnection

__all__ = ["EMBEDDED_FILE", "open_backend"]

EMBEDDED_FILE = "chat-gateway.sqlite3"


def open_backend(settings: Settings) -> RedisConnection | SqliteConnection:
    """The process's one backend; no I/O happens until first use. The caller closes it with `aclose()`."""
    if settings.redis_dsn:
        return RedisConnection.from_url(
            settings.redis_dsn,
            timeout_seconds=settings.redis_timeout_seconds,
            pool_size=settings.redis_pool_size,
            cluster=settings.redis_cluster,
            sentinel_master=settings.redis_sentinel_master,
            # Waiting for a connection is bounded by a turn's lease, not by one command's timeout.
            pool_timeout_seconds=settings.lock_timeout_seconds,
            key_prefix=settings.key_prefix,
            max_messages=settings.store_max_messages,
            ttl_seconds=settings.store_ttl_seconds,
        )
    return SqliteConnection(
        settings.data_dir / EMBEDDED_FILE,
        key_prefix=settings.key_prefix,
        max_messages=settings.store_max_messages,
        ttl_seconds=settings.store_ttl_seconds,
    )
