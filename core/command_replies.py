"""The replies to the commands a user types (core.commands): reset, help, memory, usage, admin usage."""

from __future__ import annotations

from collections.abc import Sequence

from core.commands import Command, describe_duration, help_text
from core.messages import ChatMessage
from core.profile_rules import Resolved
from core.store.base import MemoryBackend
from core.store.usage import UsageLedger
from core.turns import IncomingMessage
from core.usage.budgets import BudgetLimits
from core.usage.prices import PriceTable
from core.usage.report import admin_usage_text, usage_text

__all__ = ["CommandReplies", "conversation_name"]


class CommandReplies:
    def __init__(self, backend: MemoryBackend, ledger: UsageLedger, prices: PriceTable | None) -> None:
        self._backend = backend
        self._ledger = ledger
        self._prices = prices

    async def reply(
        self,
        command: Command,
        incoming: IncomingMessage,
        thread_id: str,
        history: Sequence[ChatMessage],
        resolved: Resolved,
        *,
        budgets: BudgetLimits,
        exempt: bool,
    ) -> tuple[str, bool]:
        """The reply text, and whether the conversation's history is cleared (a reset)."""
        max_messages, ttl = resolved.max_messages or None, resolved.ttl_seconds or None
        what = conversation_name(incoming, resolved.memory_scope)
        count = len(history)
        messages = f"{count} message{'' if count == 1 else 's'}"
        if command == "reset":
            if count:
                return f"Done: I've forgotten the {messages} of {what}. We start fresh.", True
            text = f"There was nothing to forget in {what}."
            if resolved.memory_scope == "thread" and not incoming.thread_ref:
                text += " Here each thread has its own conversation: write `reset` in the thread to forget it."
            return text, True
        if command == "help":
            return help_text(max_messages, ttl), False
        if command == "usage":
            return await usage_text(self._ledger, incoming, budgets, self._prices, exempt=exempt), False
        if command == "admin usage":
            return await admin_usage_text(self._ledger, incoming.platform, self._prices), False
        cap = f" (I keep the last {max_messages})" if max_messages else ""
        if not ttl:
            expiry = "They never expire; `reset` forgets them."
        else:
            left = await self._backend.store(thread_id, incoming.platform).ttl_seconds_left() if count else None
            remaining = f" — {describe_duration(left)} from now" if left is not None else ""
            expiry = f"They are forgotten after {describe_duration(ttl)} without activity{remaining}."
        return f"I remember {messages} of {what}{cap}. {expiry}", False


def conversation_name(incoming: IncomingMessage, scope: str) -> str:
    """The conversation a command acts on, in the user's words (the memory scope decides which it is)."""
    if scope == "channel":
        return "this channel's shared conversation"
    if scope == "thread":
        return "this thread's conversation" if incoming.thread_ref else "this channel's conversation"
    return "your conversation with me in this channel"
