"""What every conversation store and memory backend offers, whatever holds the data.

`MessageStore` is one thread's history (the reference notebook's shape). `MemoryBackend` is the one
object per process that owns the connection and hands out stores, event claims, turn locks and
counters; the gateway depends only on these two protocols.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from core.messages import ChatMessage

__all__ = ["MemoryBackend", "MessageStore", "ThreadRef", "TurnLock"]


class MessageStore(Protocol):
    thread_id: str

    async def add_messages(self, messages: Sequence[ChatMessage]) -> None: ...

    async def list_messages(self) -> list[ChatMessage]: ...

    async def clear(self) -> None: ...

    async def ttl_seconds_left(self) -> int | None: ...

    async def serialize(self, **kwargs: Any) -> dict[str, Any]: ...

    async def update_from_state(self, state: dict[str, Any]) -> None: ...


class TurnLock(Protocol):
    """A thread's turn, held by one owner at a time across processes; it expires if the owner dies."""

    async def acquire(self, wait_seconds: float) -> bool: ...

    async def extend(self) -> bool: ...

    async def release(self) -> None: ...


@dataclass(frozen=True, slots=True)
class ThreadRef:
    namespace: str | None
    thread_id: str


class MemoryBackend(Protocol):
    kind: str

    def store(self, thread_id: str, namespace: str | None = None) -> MessageStore: ...

    async def claim_event(self, namespace: str | None, event_id: str, ttl_seconds: int) -> bool: ...

    def turn_lock(self, namespace: str | None, thread_id: str, expire_seconds: float) -> TurnLock: ...

    async def count_hit(self, name: str, window_seconds: int) -> int: ...

    async def set_flag(self, name: str, ttl_seconds: int | None) -> None: ...

    async def has_flag(self, name: str) -> bool: ...

    def iter_threads(self, namespace: str | None = None, match: str | None = None) -> AsyncIterator[ThreadRef]: ...

    async def ping(self) -> bool: ...

    async def aclose(self) -> None: ...
