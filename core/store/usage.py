"""The usage ledger: tokens per user, channel and workspace per UTC day, and the budget charge.

Each step is atomic over the day's counters (Redis: one script on the day's slot; SQLite: one
transaction). Counters live USAGE_KEEP_SECONDS (35 days), so a month is always there to add up.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

from core.store.keys import parse_usage_member
from core.usage.meter import TokenCount

__all__ = [
    "USAGE_KEEP_SECONDS",
    "Charge",
    "Scope",
    "Subject",
    "SubjectUsage",
    "UsageLedger",
    "summed_usage",
    "top_subjects",
]

USAGE_KEEP_SECONDS = 35 * 86400
Scope = Literal["user", "channel", "workspace"]


@dataclass(frozen=True, slots=True)
class Subject:
    """Who tokens are counted for: a user, a channel or a workspace (Slack team, Discord guild) of a platform."""

    scope: Scope
    platform: str
    id: str


@dataclass(frozen=True, slots=True)
class Charge:
    """A change of `subject`'s budget charge; `limit` (reservations only): refused once the charge reached it."""

    subject: Subject
    tokens: int
    limit: int = 0


@dataclass(frozen=True, slots=True)
class SubjectUsage:
    """One subject's tokens over some days, by model; `charged` is the budget charge (of the last day asked)."""

    subject: Subject
    models: dict[str, TokenCount] = field(default_factory=dict)
    turns: int = 0
    charged: int = 0

    @property
    def tokens(self) -> TokenCount:
        return sum(self.models.values(), TokenCount())


class UsageLedger(Protocol):
    async def reserve(self, day: str, charges: Sequence[Charge]) -> Subject | None:
        """Add every charge, unless one subject's charge already reached its `limit`: then add none and
        return that subject. Atomic, so concurrent reservations overshoot a limit by at most one of them."""
        ...

    async def settle(
        self, day: str, subjects: Sequence[Subject], model: str, tokens: TokenCount, charges: Sequence[Charge]
    ) -> None:
        """Count one turn's `tokens` for each of `subjects` under `model`, and adjust the budget `charges`."""
        ...

    async def usage(self, days: Sequence[str], subjects: Sequence[Subject]) -> list[SubjectUsage]:
        """Each subject's tokens summed over `days` (its charge: the last day's), in the order asked."""
        ...

    async def top(
        self, days: Sequence[str], scope: Scope, limit: int, platform: str | None = None
    ) -> list[SubjectUsage]:
        """The `limit` subjects of `scope` with the most tokens over `days` (of `platform` only, if given)."""
        ...


def summed_usage(subject: Subject, hashes: Sequence[dict[str, int]]) -> SubjectUsage:
    """One subject's day hashes added up (`<model>|<kind>` fields by model; `charged` of the last day)."""
    parts: dict[str, dict[str, int]] = {}
    turns = 0
    for fields in hashes:
        turns += fields.get("turns", 0)
        for name, value in fields.items():
            model, bar, kind = name.rpartition("|")
            if bar:
                slot = parts.setdefault(model, {})
                slot[kind] = slot.get(kind, 0) + value
    models = {
        model: TokenCount(kinds.get("prompt", 0), kinds.get("completion", 0), kinds.get("estimated", 0))
        for model, kinds in parts.items()
    }
    charged = hashes[-1].get("charged", 0) if hashes else 0
    return SubjectUsage(subject, models, turns, charged)


def top_subjects(totals: Mapping[str, float], scope: Scope, limit: int, platform: str | None) -> list[Subject]:
    """The `limit` largest of an index's members (`usage_member` form) summed over days, of `platform` if given."""
    chosen: list[Subject] = []
    for member, _ in sorted(totals.items(), key=lambda item: (-item[1], item[0])):
        parsed = parse_usage_member(member)
        if parsed is None or (platform is not None and parsed[0] != platform):
            continue
        chosen.append(Subject(scope, *parsed))
        if len(chosen) >= limit:
            break
    return chosen
