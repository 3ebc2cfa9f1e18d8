"""Conversation memory: the store protocol, the Redis store and the embedded SQLite default."""

from core.store.base import MemoryBackend, MessageStore, ThreadRef
from core.store.factory import open_backend
from core.store.inbox import Claim, Inbox, Intake, Lease, TurnRecord
from core.store.redis import RedisChatMessageStore
from core.store.redis_backend import RedisConnection
from core.store.sqlite import SqliteChatMessageStore
from core.store.sqlite_backend import SqliteConnection

__all__ = [
    "Claim",
    "Inbox",
    "Intake",
    "Lease",
    "MemoryBackend",
    "MessageStore",
    "RedisChatMessageStore",
    "RedisConnection",
    "SqliteChatMessageStore",
    "SqliteConnection",
    "ThreadRef",
    "TurnRecord",
    "open_backend",
]
