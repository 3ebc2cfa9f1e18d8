"""A turn's tokens, from its reservation to its count: `open` before the model call, `settle` after it.

`open` reserves the turn's estimate against each daily budget that applies (a round trip only when one
does). `settle` runs after the commit, off the path to the post (`settle_soon`): it counts what the
turn's model calls cost for its user, channel and workspace and turns the reservation into the real
figure; a failed turn settles too, so it gives back what it did not use.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from core.errors import GatewayError
from core.metrics import Metrics
from core.store.usage import Charge, Scope, Subject, UsageLedger
from core.turns import IncomingMessage
from core.usage.budgets import BudgetLimits, day_of
from core.usage.meter import UsageMeter

__all__ = ["Refused", "Settlement", "UsageAccounting", "subjects_of"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Refused:
    """No turn: the `scope`'s budget of the day is spent."""

    scope: Scope


@dataclass(slots=True)
class Settlement:
    """One turn's open account: what it reserved, and the meter its model calls add to."""

    day: str
    platform: str
    subjects: tuple[Subject, ...]
    reserved: dict[Subject, int]
    meter: UsageMeter
    settled: bool = field(default=False)


def subjects_of(incoming: IncomingMessage) -> tuple[Subject, ...]:
    """Whom a turn's tokens count for: its user, its channel and (outside Discord DMs) its workspace."""
    found = [
        Subject("user", incoming.platform, incoming.user_id),
        Subject("channel", incoming.platform, incoming.channel_id),
    ]
    if incoming.workspace_id:
        found.append(Subject("workspace", incoming.platform, incoming.workspace_id))
    return tuple(found)


class UsageAccounting:
    """The process's accounting on the backend's ledger; holds only the settlements still being written."""

    def __init__(self, ledger: UsageLedger, metrics: Metrics) -> None:
        self.ledger = ledger
        self._metrics = metrics
        self._pending: set[asyncio.Task[None]] = set()

    async def open(
        self, incoming: IncomingMessage, model_id: str, limits: BudgetLimits, estimate: Callable[[], int], *,
        exempt: bool = False,
    ) -> Settlement | Refused:  # fmt: skip
        """The turn's account, its estimate reserved against the budgets that apply (none for `exempt`).

        Raises:
            StoreError: the reservation could not be made (the caller answers with the store's error).
        """
        subjects = subjects_of(incoming)
        day = day_of()
        charges: list[Charge] = []
        if limits.any and not exempt:
            tokens = max(estimate(), 1)
            by_scope = {"user": limits.per_user, "workspace": limits.per_workspace}
            charges = [Charge(s, tokens, by_scope[s.scope] or 0) for s in subjects if by_scope.get(s.scope)]
        if charges:
            refused = await self.ledger.reserve(day, charges)
            if refused is not None:
                self._metrics.budget_refusals.labels(incoming.platform, refused.scope).inc()
                log.info("turn refused: the %s's daily token budget is spent", refused.scope,
                         extra={"outcome": "budget"})  # fmt: skip
                return Refused(refused.scope)
        reserved = {charge.subject: charge.tokens for charge in charges}
        return Settlement(day, incoming.platform, subjects, reserved, UsageMeter(model_id))

    def settle_soon(self, settlement: Settlement | None) -> asyncio.Task[None] | None:
        """Settle in the background (after the commit, beside the post); `flush` waits for it."""
        if settlement is None or settlement.settled:
            return None
        settlement.settled = True
        task = asyncio.get_running_loop().create_task(self._settle(settlement))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)
        return task

    async def settle(self, settlement: Settlement) -> None:
        """Settle now (a caller with no delivery runner, or a test)."""
        if not settlement.settled:
            settlement.settled = True
            await self._settle(settlement)

    async def _settle(self, settlement: Settlement) -> None:
        meter = settlement.meter
        count = meter.count
        for source, part in (("reported", meter.reported), ("estimated", meter.guessed)):
            for kind, tokens in (("prompt", part.prompt), ("completion", part.completion)):
                if tokens:
                    self._metrics.tokens.labels(settlement.platform, meter.model_id, kind, source).inc(tokens)
        # Budget scopes carry a charge always, reserved or not, so a budget set mid-day starts from the truth.
        charges = [
            Charge(s, count.total - settlement.reserved.get(s, 0)) for s in settlement.subjects if s.scope != "channel"
        ]
        try:
            await self.ledger.settle(settlement.day, settlement.subjects, meter.model_id, count, charges)
        except GatewayError as exc:  # counted in the metrics only; an open reservation lapses with its day
            log.warning("token usage not recorded: %s", exc, extra={"outcome": "usage_lost"})

    async def flush(self, grace_seconds: float = 5.0) -> None:
        """Wait (up to `grace_seconds`) for the settlements still being written."""
        if self._pending:
            await asyncio.wait(set(self._pending), timeout=grace_seconds)
