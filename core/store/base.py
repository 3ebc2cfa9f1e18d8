"""What every conversation store and memory backend offers, whatever holds the data.

`MessageStore` is one conversation's history (the reference notebook's shape). A backend is the one
object per process that owns the connection; what it offers is split by concern: `MessageStores`
(histories), `Inboxes` (delivery: core.store.inbox), `Flags` (small facts an adapter keeps),
`Conversations` (finding and clearing every key of one, for operators), `UsageLedgers` (token counts),
and `MemoryBackend` is all of them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from core.messages import ChatMessage
from core.store.approvals import ApprovalStore
from core.store.inbox import Inbox
from core.store.usage import UsageLedger

__all__ = [
    "Approvals",
    "Cleared",
    "Conversations",
    "Flags",
    "Inboxes",
    "MemoryBackend",
    "MessageStore",
    "MessageStores",
    "ThreadRef",
    "UsageLedgers",
]


class MessageStore(Protocol):
    thread_id: str

    async def add_messages(self, messages: Sequence[ChatMessage]) -> None: ...

    async def list_messages(self) -> list[ChatMessage]: ...

    async def clear(self) -> None: ...

    async def ttl_seconds_left(self) -> int | None: ...

    async def serialize(self, **kwargs: Any) -> dict[str, Any]: ...

    async def update_from_state(self, state: dict[str, Any]) -> None: ...


@dataclass(frozen=True, slots=True)
class ThreadRef:
    namespace: str | None
    thread_id: str


class MessageStores(Protocol):
    kind: str

    def store(self, thread_id: str, namespace: str | None = None) -> MessageStore: ...

    def iter_threads(self, namespace: str | None = None, match: str | None = None) -> AsyncIterator[ThreadRef]: ...

    async def ping(self) -> bool: ...

    async def aclose(self) -> None: ...


class Inboxes(Protocol):
    def inbox(self, *, lease_seconds: float, keep_seconds: int, owner: str | None = None) -> Inbox: ...


class Flags(Protocol):
    async def set_flag(self, name: str, ttl_seconds: int | None) -> None: ...

    async def has_flag(self, name: str) -> bool: ...

    async def clear_flag(self, name: str) -> bool:
        """Remove the flag; whether it was set."""
        ...


class Approvals(Protocol):
    def approvals(self) -> ApprovalStore: ...


class UsageLedgers(Protocol):
    def usage(self) -> UsageLedger: ...


@dataclass(frozen=True, slots=True)
class Cleared:
    """What clearing a conversation removed; with `busy_seconds` set, nothing: a turn holds its lease."""

    messages: int = 0
    waiting: int = 0  # messages in its inbox not yet delivered
    keys: tuple[str, ...] = ()  # the conversation's keys removed (SQLite: the keys whose rows were)
    index: str | None = None  # the recovery index it was dropped from, if it was in it
    flags: tuple[str, ...] = ()  # the flag keys removed
    busy_seconds: float | None = None


class Conversations(Protocol):
    async def find_conversations(self, thread_id: str) -> list[ThreadRef]:
        """Every namespace holding any key of conversation `thread_id` (history, inbox, records, rate)."""
        ...

    async def clear_conversation(
        self, ref: ThreadRef, *, lease_seconds: float, force: bool = False, flags: Sequence[str] = ()
    ) -> Cleared:
        """Remove every key of the conversation, its entry in the recovery index and the `flags` named;
        unless `force`, nothing while a turn holds its lease (younger than `lease_seconds`)."""
        ...


class MemoryBackend(MessageStores, Inboxes, Flags, Approvals, Conversations, UsageLedgers, Protocol):
    """The process's backend: Redis (`RedisConnection`) or the embedded SQLite file (`SqliteConnection`)."""
