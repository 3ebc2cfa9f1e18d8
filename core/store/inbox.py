"""The inbox: messages durable before the platform is acknowledged, answered under a lease, exactly once.

A message's turn goes received -> answered (reply stored, not yet posted) -> delivered. The conversation
holds at most one lease at a time (its oldest undelivered message), so turns run in arrival order across
every process; a lease names its owner and how many times the message was handed out (`deliveries`),
and every write of the turn is refused once either changed (fencing). A process that dies leaves its
lease to expire; `resume` then hands the message to whoever asks next.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal, Protocol

from core.messages import ChatMessage

__all__ = ["RESET_WATERMARK_SECONDS", "Claim", "Inbox", "Intake", "Lease", "TurnRecord", "TurnState"]

TurnState = Literal["received", "answered", "delivered"]
# How long a reset's watermark outlives it (or the memory's TTL, if longer; never expiring without a TTL): the
# platform context seeded after a reset never reaches back before it. 90 days: as far back as Slack's free plan
# shows history at all, and far beyond any memory that expired meanwhile.
RESET_WATERMARK_SECONDS = 90 * 86400


@dataclass(frozen=True, slots=True)
class TurnRecord:
    """What is known of one message's turn; `posted` names what the platform already shows of the reply."""

    state: TurnState
    entry_id: str
    token: str
    reply: str | None = None
    reply_kind: str | None = None
    posted: tuple[str, ...] = ()
    hits: int = 0

    def to_json(self) -> str:
        data: dict[str, Any] = {"state": self.state, "id": self.entry_id, "token": self.token, "hits": self.hits}
        if self.reply is not None:
            data["reply"], data["kind"] = self.reply, self.reply_kind
        if self.posted:
            data["posted"] = list(self.posted)
        return json.dumps(data, separators=(",", ":"))

    @classmethod
    def from_json(cls, raw: str | bytes) -> TurnRecord:
        data = json.loads(raw)
        return cls(
            state=data["state"], entry_id=str(data["id"]), token=str(data["token"]), reply=data.get("reply"),
            reply_kind=data.get("kind"), posted=tuple(data.get("posted") or ()), hits=int(data.get("hits") or 0),
        )  # fmt: skip

    def answered(self, reply: str, kind: str) -> TurnRecord:
        return replace(self, state="answered", reply=reply, reply_kind=kind)

    def delivered(self, posted: Sequence[str]) -> TurnRecord:
        # The reply text goes: the record now only keeps the message from being answered again.
        return replace(self, state="delivered", reply=None, reply_kind=None, posted=tuple(posted))


@dataclass(frozen=True, slots=True)
class Lease:
    """Who answers the message right now; `deliveries` grows each time the message is handed out again."""

    namespace: str | None
    thread_id: str
    entry_id: str
    message_key: str
    owner: str
    deliveries: int


@dataclass(frozen=True, slots=True)
class Claim:
    """A message handed to this process under `lease`, with the conversation's history as it stands."""

    lease: Lease
    payload: str
    record: TurnRecord
    history: list[ChatMessage] = field(default_factory=list)

    @property
    def resumed(self) -> bool:
        """Handed out before: some process may have started (or posted) part of its reply."""
        return self.lease.deliveries > 1


@dataclass(frozen=True, slots=True)
class Intake:
    """What appending a message did. `claim` is set when this process now holds the conversation's lease:
    it names the conversation's OLDEST undelivered message, which may be an earlier one than appended."""

    outcome: Literal["taken", "queued", "duplicate"]
    claim: Claim | None = None
    state: TurnState | None = None  # a duplicate's
    hits: int = 0  # the sender's messages in this conversation in the current rate window, this one included


class Inbox(Protocol):
    """Every method is one round trip (one script) on the conversation's keys, except the index ones."""

    owner: str
    lease_seconds: float

    async def receive(
        self,
        namespace: str | None,
        thread_id: str,
        message_key: str,
        payload: str,
        *,
        token: str,
        take: bool,
        user_id: str = "",
        rate_window: int = 0,
        rate_limit: int = 0,
    ) -> Intake:
        """Append a message once (a repeat of `message_key` is a duplicate; a retry of this very call,
        same `token`, is not), count the sender's rate, and with `take` take the lease if it is free."""
        ...

    async def resume(self, namespace: str | None, thread_id: str) -> Claim | float | None:
        """Take the lease of a conversation whose owner is gone. A float: a live owner holds it for about
        that many more seconds. None: nothing waits there."""
        ...

    async def renew(self, lease: Lease) -> bool:
        """Restart the lease's clock; False once it belongs to someone else (or the message is gone)."""
        ...

    async def commit(
        self,
        lease: Lease,
        messages: Sequence[ChatMessage],
        record: TurnRecord,
        *,
        clear: bool = False,
        reset: float | None = None,
        max_messages: int | None = None,
        ttl_seconds: int | None = None,
    ) -> bool:
        """Store the turn's messages and its answered `record` in one atomic step, only while `lease` holds.
        With `clear`, the history is emptied first; with `reset` (when the reset was sent, epoch seconds) too,
        and the conversation's reset watermark becomes `reset`. False: fenced, nothing was written.
        `max_messages`, `ttl_seconds`: this conversation's (its profile's; 0: no cap, no expiry); None: the inbox's."""
        ...

    async def reset_watermark(self, namespace: str | None, thread_id: str) -> float | None:
        """When the conversation was last reset (epoch seconds), if it was within RESET_WATERMARK_SECONDS."""
        ...

    async def mark_reset(self, namespace: str | None, thread_id: str) -> None:
        """Set the reset watermark to now, outside any turn (an operator's `threads clear`)."""
        ...

    async def note_posted(self, lease: Lease, record: TurnRecord) -> bool:
        """Record what the platform shows so far (the reply's first message), while `lease` holds."""
        ...

    async def finish(self, lease: Lease, record: TurnRecord, *, take_next: bool) -> Claim | None:
        """Mark the message delivered and drop it from the inbox; with `take_next`, hand over the next one."""
        ...

    async def release(self, lease: Lease) -> None:
        """Give the lease up at once (shutdown), leaving the message in the inbox for the next owner."""
        ...

    async def schedule(self, namespace: str | None, thread_id: str, at: float) -> str:
        """Index the conversation to be looked at again at `at` (epoch seconds); returns the index score."""
        ...

    async def due(self, namespace: str | None, limit: int) -> list[tuple[str, str]]:
        """Conversations whose time to be looked at has come: (thread ID, index score)."""
        ...

    async def unschedule(self, namespace: str | None, thread_id: str, score: str) -> None:
        """Drop the conversation from the index unless it was scheduled again since `score` was read."""
        ...
