"""Approval records: one per tool call that waits for a person, decided once, its tool run at most once.

A record is created pending by the turn that needs it (`create` returns the existing record when a resumed
turn asks again for the same ID), decided by the first click that is allowed to decide it (`decide`: one
atomic step, so a double click, a retried interaction or clicks at two replicas make one decision), and,
once approved, claimed for running by exactly one turn (`claim_run`). A record expires `timeout` after it
was created: the waiting turn (or the first late click) marks it "expired", and it can no longer be decided.
Records are kept `keep_seconds` after that, so a late click is still recognised as late.
"""

from __future__ import annotations

import json
from collections.abc import Collection
from dataclasses import dataclass, replace
from typing import Literal, Protocol

__all__ = ["ApprovalRecord", "ApprovalState", "ApprovalStore", "Decided", "DecideOutcome"]

ApprovalState = Literal["pending", "approved", "denied", "expired"]
# decided: this click decided it; refused: this user may not; late: decided or expired before; missing: unknown ID
DecideOutcome = Literal["decided", "refused", "late", "missing"]


@dataclass(frozen=True, slots=True)
class ApprovalRecord:
    """One approval. `prompt` names the platform message that shows it (empty until posted)."""

    approval_id: str
    namespace: str | None
    thread_id: str
    message_key: str
    requester: str
    tool: str
    server: str
    title: str
    arguments: str  # the call's arguments as the prompt shows them (JSON, already truncated)
    expires_at: float  # epoch seconds
    state: ApprovalState = "pending"
    decided_by: str = ""
    ran: bool = False
    prompt: str = ""

    def data_json(self) -> str:
        """The fields that never change once created."""
        data = {
            "ns": self.namespace, "thread": self.thread_id, "key": self.message_key, "requester": self.requester,
            "tool": self.tool, "server": self.server, "title": self.title, "args": self.arguments,
        }  # fmt: skip
        return json.dumps(data, separators=(",", ":"))

    @classmethod
    def from_parts(
        cls, approval_id: str, data: str | bytes, *, state: str, decided_by: str, ran: bool, prompt: str,
        expires_ms: int,
    ) -> ApprovalRecord:  # fmt: skip
        d = json.loads(data)
        return cls(
            approval_id=approval_id, namespace=d.get("ns"), thread_id=d["thread"], message_key=d["key"],
            requester=d["requester"], tool=d["tool"], server=d["server"], title=d["title"], arguments=d["args"],
            expires_at=expires_ms / 1000, state=state, decided_by=decided_by, ran=ran, prompt=prompt,  # type: ignore[arg-type]
        )  # fmt: skip

    def with_state(self, state: ApprovalState, decided_by: str = "") -> ApprovalRecord:
        return replace(self, state=state, decided_by=decided_by)


@dataclass(frozen=True, slots=True)
class Decided:
    """What one `decide` did, and the record as it stands after it."""

    outcome: DecideOutcome
    record: ApprovalRecord | None


class ApprovalStore(Protocol):
    async def create(self, record: ApprovalRecord, keep_seconds: int) -> ApprovalRecord:
        """Store `record` unless its ID exists; returns the stored one (the existing one, if any)."""
        ...

    async def get(self, namespace: str | None, approval_id: str) -> ApprovalRecord | None: ...

    async def decide(
        self, namespace: str | None, approval_id: str, state: ApprovalState, user_id: str, approvers: Collection[str]
    ) -> Decided:
        """Decide a pending record, once: `user_id` must be its requester or one of `approvers`.

        `state="expired"` with no user is the waiting turn giving up: always allowed while pending. A record
        past its expiry is marked expired here, and the click is late.
        """
        ...

    async def claim_run(self, namespace: str | None, approval_id: str) -> bool:
        """True once per approved record: the caller may run its tool; False if it ran (or is not approved)."""
        ...

    async def set_prompt(self, namespace: str | None, approval_id: str, prompt: str) -> None: ...
