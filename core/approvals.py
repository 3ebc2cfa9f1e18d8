"""Approvals in the conversation: the turn's approval hook, the wait for a click, and the click itself.

The hook (one per turn, `Approvals.hook`) is asked before each call of a tool that needs approval. It
names the call with a deterministic ID (conversation, message key, round, place in the round, tool and
arguments), creates its pending record (`core.store.approvals`) unless it exists, posts the prompt through
the turn's writer (`ApprovalPrompts`) unless one was posted, and waits: on a local event, set when the
click lands in this process, and by reading the record every `poll_seconds`, for a click another replica
took. The wait ends at APPROVAL_TIMEOUT_SECONDS after the record was created; the hook then marks it
expired (one atomic step: a click that won first still wins) and edits the prompt.

A click (`Approvals.decide`, from the platform adapters) is one atomic step on the record: the first allowed
decision wins; anyone but the requester and APPROVERS is refused and changes nothing; a click on a decided
or expired record is late. The adapter that took the click edits the prompt to show the outcome.

Exactly once, through crashes: a turn whose process dies is answered again by whoever takes its lease; its
model asks for the same call, the hook finds the same record (decided or not, prompt posted) and does not
post again. An approved call runs only after `claim_run` marked the record "ran" (atomic), so it runs at
most once: if the process dies after the mark and before the tool returned, the answered-again turn does
not run it again and tells the model its result is unknown. That window (the tool's own run) is the one
place where an approved call can be lost rather than doubled.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import time
from collections.abc import Collection, Mapping
from dataclasses import replace
from typing import Any, Final, Literal, Protocol, cast

from core.errors import StoreError
from core.metrics import Metrics
from core.store.approvals import ApprovalRecord, ApprovalStore, Decided
from core.store.inbox import Lease
from core.tools.base import Approver, PendingCall

__all__ = [
    "ALREADY_RAN",
    "APPROVE",
    "DENY",
    "EXPIRED",
    "ApprovalPrompts",
    "Approvals",
    "Decision",
    "approval_id_for",
    "click_note",
    "custom_id",
    "outcome_text",
    "outside_deadline",
    "parse_custom_id",
    "shown_arguments",
]

log = logging.getLogger(__name__)

APPROVE: Final = "approve"
DENY: Final = "deny"
_CUSTOM_ID = "cg-approval"
MAX_SHOWN_ARGUMENT_CHARS = 600
EXPIRED = "Not run: nobody approved this call in time (the approval expired). Tell the user it was not run."
ALREADY_RAN = (
    "This approved call was already started by an earlier attempt at this answer, which was interrupted; it is "
    "not run again and its result is unknown. Tell the user so."
)
Decision = Literal["approve", "deny"]
_ZWSP = "\u200b"


class ApprovalPrompts(Protocol):
    """What a platform writer does for approvals (SlackReply, DiscordReply): post and close the prompt."""

    async def post_approval(self, record: ApprovalRecord) -> str:
        """Post the prompt with Approve and Deny buttons (custom IDs: `custom_id`); returns its message ref.

        Raises the platform's error when it could not post (the call is then not run).
        """
        ...

    async def close_approval(self, record: ApprovalRecord) -> None:
        """Edit the prompt (`record.prompt`) to show `record`'s outcome, without buttons. Best effort."""
        ...


def approval_id_for(lease: Lease, call: PendingCall) -> str:
    """The same ID in every attempt at the turn: no random part, no model call ID."""
    arguments = json.dumps(call.arguments, sort_keys=True, separators=(",", ":"), default=str)
    name = "\x00".join(
        (lease.namespace or "", lease.thread_id, lease.message_key, str(call.step), str(call.index), call.tool,
         arguments)
    )  # fmt: skip
    return hashlib.blake2b(name.encode(), digest_size=10).hexdigest()


def custom_id(decision: Decision, approval_id: str) -> str:
    """A button's ID (Slack action value and Discord custom_id): `cg-approval:<decision>:<approval id>`."""
    return f"{_CUSTOM_ID}:{decision}:{approval_id}"


def parse_custom_id(value: str) -> tuple[Decision, str] | None:
    head, _, rest = value.partition(":")
    decision, _, approval_id = rest.partition(":")
    if head != _CUSTOM_ID or decision not in (APPROVE, DENY) or not approval_id.isalnum():
        return None
    return decision, approval_id  # type: ignore[return-value]  # checked just above


def shown_arguments(arguments: Mapping[str, Any], limit: int = MAX_SHOWN_ARGUMENT_CHARS) -> str:
    """The arguments as the prompt shows them: JSON, cut to `limit`, mentions and code fences defused."""
    text = json.dumps(dict(arguments), ensure_ascii=False, indent=1, default=str)
    if len(text) > limit:
        text = f"{text[:limit]}… ({len(text):,} characters in all)"
    # No mention can notify (Slack <@U…>, <!here>, Discord <@…>, @everyone), and the code block stays closed.
    return text.replace("@", f"@{_ZWSP}").replace("<!", f"<{_ZWSP}!").replace("```", f"`{_ZWSP}``")


def outcome_text(record: ApprovalRecord) -> str:
    """The prompt's last line once decided: the outcome and who decided."""
    if record.state == "approved":
        return f"✅ Approved by <@{record.decided_by}>."
    if record.state == "denied":
        return f"❌ Denied by <@{record.decided_by}>: not run."
    if record.state == "expired":
        return "⌛ Expired: nobody decided in time, not run."
    return "Waiting for approval."


def click_note(decided: Decided) -> str:
    """What the clicker alone is told when the click changed nothing."""
    if decided.outcome == "refused":
        return "Only the person who asked, or an approver, can decide on this call. Nothing was changed."
    if decided.outcome == "missing":
        return "This approval is no longer known here (it was cleared or is too old). Nothing was run."
    record = decided.record
    state = record.state if record is not None else "expired"
    return f"This call was already decided ({state}); your click changed nothing and ran nothing."


class Approvals:
    """The process's approvals: shared by every turn (the hook) and every adapter (the clicks)."""

    def __init__(
        self,
        store: ApprovalStore,
        *,
        timeout_seconds: float = 600.0,
        approvers: Collection[str] = (),
        metrics: Metrics | None = None,
        keep_seconds: int = 86400,
        poll_seconds: float = 0.5,
    ) -> None:
        self.store = store
        self.timeout_seconds = timeout_seconds
        self.approvers = frozenset(approvers)
        self._metrics = metrics or Metrics()
        self._keep = keep_seconds
        self._poll = poll_seconds
        self._waiters: dict[tuple[str | None, str], asyncio.Event] = {}

    def hook(self, lease: Lease, requester: str, writer: object) -> Approver | None:
        """The approval hook of one turn; None when `writer` cannot post prompts (the call is then refused)."""
        # Not isinstance() against the Protocol: on Python 3.11 that walks its members on every turn.
        if not callable(getattr(writer, "post_approval", None)):
            return None
        prompts = cast("ApprovalPrompts", writer)

        async def approve(call: PendingCall) -> bool | str:
            return await self._approve(lease, requester, prompts, call)

        return approve

    async def decide(self, namespace: str | None, approval_id: str, decision: Decision, user_id: str) -> Decided:
        """A click: decides the record if it is pending, not expired, and `user_id` may decide it.

        Raises:
            StoreError: the store could not be reached: nothing was decided.
        """
        state: Literal["approved", "denied"] = "approved" if decision == APPROVE else "denied"
        decided = await self.store.decide(namespace, approval_id, state, user_id, self.approvers)
        fields = {"platform": namespace, "approval_id": approval_id, "outcome": decided.outcome}
        if decided.outcome == "decided":
            self._metrics.approvals.labels(state).inc()
            log.info("approval %s", state, extra=fields)
        else:
            self._metrics.approvals.labels(decided.outcome).inc()
            log.info("approval click %s", decided.outcome, extra=fields)
        event = self._waiters.get((namespace, approval_id))
        if event is not None:
            event.set()  # the waiting turn reads the record again
        return decided

    async def _approve(self, lease: Lease, requester: str, writer: ApprovalPrompts, call: PendingCall) -> bool | str:
        approval_id = approval_id_for(lease, call)
        key = (lease.namespace, approval_id)
        # Listening before the prompt is out: a click in this process is never missed, however early.
        event = self._waiters.setdefault(key, asyncio.Event())
        try:
            return await self._ask(lease, requester, writer, call, approval_id=approval_id, event=event)
        finally:
            self._waiters.pop(key, None)

    async def _ask(
        self, lease: Lease, requester: str, writer: ApprovalPrompts, call: PendingCall, *, approval_id: str,
        event: asyncio.Event,
    ) -> bool | str:  # fmt: skip
        fresh = ApprovalRecord(
            approval_id=approval_id, namespace=lease.namespace, thread_id=lease.thread_id,
            message_key=lease.message_key, requester=requester, tool=call.tool, server=call.server, title=call.title,
            arguments=shown_arguments(call.arguments), expires_at=time.time() + self.timeout_seconds,
        )  # fmt: skip
        fields = {"approval_id": approval_id, "tool": call.tool}
        record = await self.store.create(fresh, self._keep)
        if record.state == "pending" and not record.prompt:
            ref = await writer.post_approval(record)
            with contextlib.suppress(StoreError):  # unnoted, a resumed turn posts the prompt again
                await self.store.set_prompt(lease.namespace, approval_id, ref)
            record = replace(record, prompt=ref)
            log.info("approval asked", extra=fields)
        elif record.state == "pending":
            log.info("approval still pending from an earlier attempt; waiting for it", extra=fields)
        if record.state == "pending":
            record = await self._wait(record, event)
        if record.state == "expired":
            await writer.close_approval(record)
            return EXPIRED
        if record.state != "approved":
            return False
        if await self.store.claim_run(lease.namespace, approval_id):
            return True
        log.warning("approved call already run by an earlier attempt; not run again", extra=fields)
        return ALREADY_RAN

    async def _wait(self, record: ApprovalRecord, event: asyncio.Event) -> ApprovalRecord:
        while True:
            left = record.expires_at - time.time()
            if left <= 0:
                decided = await self.store.decide(record.namespace, record.approval_id, "expired", "", ())
                if decided.outcome == "decided":
                    self._metrics.approvals.labels("expired").inc()
                    log.info("approval expired", extra={"approval_id": record.approval_id})
                return decided.record or record.with_state("expired")
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(self._poll, left)):
                    await event.wait()  # a click here; else the next read finds one taken elsewhere
            event.clear()
            try:
                current = await self.store.get(record.namespace, record.approval_id)
            except StoreError as exc:
                log.info("approval not read, trying again: %s", exc, extra={"approval_id": record.approval_id})
                continue
            if current is None:  # gone from the store (flushed): nobody can approve it any more
                return record.with_state("expired")
            if current.state != "pending":
                return current
            record = current


def outside_deadline(budget: asyncio.Timeout, approve: Approver) -> Approver:
    """`approve` with the turn's deadline (`budget`) stopped while any approval of the turn is awaited: a
    person's time to click is bounded by APPROVAL_TIMEOUT_SECONDS, not TURN_TIMEOUT_SECONDS."""
    waiting = 0
    left = 0.0

    async def wrapped(call: PendingCall) -> bool | str:
        nonlocal waiting, left
        loop = asyncio.get_running_loop()
        if waiting == 0:
            when = budget.when()
            left = when - loop.time() if when is not None else 0.0
            budget.reschedule(None)
        waiting += 1
        try:
            return await approve(call)
        finally:
            waiting -= 1
            if waiting == 0:
                budget.reschedule(loop.time() + max(left, 0.0))

    return wrapped
