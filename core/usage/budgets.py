"""Daily token budgets: the limits of a turn, the reservation's size, and what a refused user is told.

A turn reserves its estimate (the request as sent plus the longest reply) before the model call and
settles the real figure after it (core.usage.accounting). A reservation is refused once the charge of the
user's or the workspace's day reached the limit; each reservation is atomic, so turns running at once
overshoot a limit by at most one turn's estimate. Days are UTC.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from core.commands import describe_duration
from core.context import estimate_tokens, tools_tokens
from core.messages import ChatMessage
from core.store.usage import Scope

__all__ = [
    "DEFAULT_REPLY_RESERVE",
    "BudgetLimits",
    "day_of",
    "last_days",
    "month_days",
    "refusal_text",
    "seconds_to_reset",
    "turn_estimate",
]

# Reserved for the reply when MAX_REPLY_TOKENS=0 sends no cap: a long answer, not the model's whole window.
DEFAULT_REPLY_RESERVE = 4096


@dataclass(frozen=True, slots=True)
class BudgetLimits:
    """Tokens per UTC day; None: no budget for that scope. Read per turn (Settings today, profiles may override)."""

    per_user: int | None = None
    per_workspace: int | None = None

    @property
    def any(self) -> bool:
        return bool(self.per_user or self.per_workspace)


def day_of(now: float | None = None) -> str:
    """The UTC day of `now` (epoch seconds) as YYYY-MM-DD."""
    return datetime.fromtimestamp(time.time() if now is None else now, UTC).strftime("%Y-%m-%d")


def month_days(now: float | None = None) -> list[str]:
    """Every UTC day of `now`'s month up to and including its day, oldest first."""
    today = datetime.fromtimestamp(time.time() if now is None else now, UTC).date()
    return [(today.replace(day=1) + timedelta(days=n)).isoformat() for n in range(today.day)]


def last_days(count: int, now: float | None = None) -> list[str]:
    """The last `count` UTC days, today included, oldest first."""
    today = datetime.fromtimestamp(time.time() if now is None else now, UTC).date()
    return [(today - timedelta(days=n)).isoformat() for n in range(count - 1, -1, -1)]


def seconds_to_reset(now: float | None = None) -> int:
    """Seconds until the next 00:00 UTC, when every daily budget starts afresh."""
    now = time.time() if now is None else now
    return max(1, 86400 - int(now) % 86400)


def refusal_text(scope: Scope, now: float | None = None) -> str:
    left = describe_duration(seconds_to_reset(now))
    whose = (
        "You've used your daily token budget" if scope == "user" else "This workspace has used its daily token budget"
    )
    return f"{whose}; it resets at 00:00 UTC (in {left})."


def turn_estimate(
    history: Sequence[ChatMessage],
    prompt: ChatMessage,
    *,
    instructions: str,
    tool_defs: Sequence[dict[str, Any]],
    context_tokens: int,
    reply_tokens: int,
) -> int:
    """What one model call of the turn may cost: the request (history as far as it fits) and the longest reply
    (`reply_tokens`, MAX_REPLY_TOKENS; 0 reserves DEFAULT_REPLY_RESERVE)."""
    sent = min(sum(estimate_tokens(m) for m in history), context_tokens)
    fixed = estimate_tokens(prompt) + len(instructions) // 4 + tools_tokens(tool_defs)
    return sent + fixed + (reply_tokens or DEFAULT_REPLY_RESERVE)
