"""Usage in words and tables: the `usage` command, `admin usage`, and `chat-gateway usage`'s table."""

from __future__ import annotations

from collections.abc import Sequence

from core.commands import describe_duration
from core.store.usage import SubjectUsage, UsageLedger
from core.turns import IncomingMessage
from core.usage.accounting import subjects_of
from core.usage.budgets import BudgetLimits, day_of, month_days, seconds_to_reset
from core.usage.meter import TokenCount
from core.usage.prices import PriceTable

__all__ = ["admin_usage_text", "usage_table", "usage_text"]


def _tokens(count: TokenCount) -> str:
    estimated = f", ~{count.estimated:,} of them estimated" if count.estimated else ""
    return f"{count.total:,} tokens ({count.prompt:,} prompt, {count.completion:,} completion{estimated})"


def _cost(prices: PriceTable | None, usage: SubjectUsage) -> str:
    cost = prices.cost(usage.models) if prices is not None else None
    return f", about ${cost:,.2f}" if cost is not None else ""


def _left(limit: int, charged: int) -> str:
    return f"{max(limit - charged, 0):,} of {limit:,} tokens left"


async def usage_text(
    ledger: UsageLedger, incoming: IncomingMessage, limits: BudgetLimits, prices: PriceTable | None, *, exempt: bool
) -> str:
    """The caller's tokens today and this month, and what is left of the day's budgets."""
    subjects = subjects_of(incoming)
    user = subjects[0]
    workspace = next((s for s in subjects if s.scope == "workspace"), None)
    month = month_days()
    [month_usage] = await ledger.usage(month, [user])
    asked = [user, workspace] if workspace is not None and limits.per_workspace else [user]
    today = await ledger.usage(month[-1:], asked)
    lines = [
        f"Today (UTC) you used {_tokens(today[0].tokens)}{_cost(prices, today[0])}.",
        f"This month: {_tokens(month_usage.tokens)}{_cost(prices, month_usage)}.",
    ]
    resets = f"Budgets reset at 00:00 UTC (in {describe_duration(seconds_to_reset())})."
    if exempt:
        lines.append("As an admin you have no token budget.")
        return "\n".join(lines)
    budget = []
    if limits.per_user:
        budget.append(f"your daily budget: {_left(limits.per_user, today[0].charged)}")
    if len(today) > 1 and limits.per_workspace:
        budget.append(f"this workspace's: {_left(limits.per_workspace, today[1].charged)}")
    if budget:
        joined = "; ".join(budget)
        lines.append(f"{joined[:1].upper()}{joined[1:]}. {resets}")
    else:
        lines.append("There is no daily token budget here.")
    return "\n".join(lines)


async def admin_usage_text(ledger: UsageLedger, platform: str, prices: PriceTable | None, limit: int = 10) -> str:
    """The platform's users with the most tokens today (ADMINS only)."""
    top = await ledger.top([day_of()], "user", limit, platform=platform)
    if not top:
        return "No tokens used today (UTC) yet."
    rows = [
        f"{n}. {u.subject.id}: {_tokens(u.tokens)}, {u.turns} turns{_cost(prices, u)}" for n, u in enumerate(top, 1)
    ]
    return "Top users today (UTC):\n" + "\n".join(rows)


def usage_table(rows: Sequence[SubjectUsage], prices: PriceTable | None) -> str:
    """A plain aligned table: one subject a row, tokens by kind, and the cost with a price table."""
    header = ["PLATFORM", rows[0].subject.scope.upper() if rows else "ID", "TURNS", "PROMPT", "COMPLETION", "TOTAL",
              "ESTIMATED"] + (["COST_USD"] if prices is not None else [])  # fmt: skip
    body = []
    for usage in rows:
        tokens = usage.tokens
        line = [usage.subject.platform, usage.subject.id, f"{usage.turns:,}", f"{tokens.prompt:,}",
                f"{tokens.completion:,}", f"{tokens.total:,}", f"{tokens.estimated:,}"]  # fmt: skip
        if prices is not None:
            cost = prices.cost(usage.models)
            line.append(f"{cost:.4f}" if cost is not None else "?")
        body.append(line)
    widths = [max(len(row[i]) for row in [header, *body]) for i in range(len(header))]
    numeric = range(2, len(header))
    out = []
    for row in [header, *body]:
        cells = [
            cell.rjust(w) if i in numeric else cell.ljust(w)
            for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        ]
        out.append("  ".join(cells).rstrip())
    return "\n".join(out)
