"""A turn's side of context from the platform (core.platform_context): the read, and the truncation notice."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from core.agent import AgentResponse
from core.messages import ChatMessage
from core.platform_context import THREAD_REF, ContextSource, Seed, lacks_context, note_truncation, seed_messages
from core.turns import IncomingMessage

__all__ = ["Seeding"]

log = logging.getLogger(__name__)

_SEED_LIMIT = 200  # platform messages seeded at most when MAX_MESSAGES=0 (unlimited)
_SEED_READ_SECONDS = 15.0  # the SDKs retry rate limits within this; past it the turn goes on unseeded


class Seeding:
    """CONTEXT_FROM_PLATFORM and TRUNCATION_NOTICE for the process's turns."""

    def __init__(self, *, enabled: bool, notice: bool, context_tokens: int, agent_name: str) -> None:
        self._enabled = enabled
        self._notice = notice
        self._context_tokens = context_tokens
        self._agent_name = agent_name

    async def seed(
        self,
        incoming: IncomingMessage,
        history: Sequence[ChatMessage],
        context: ContextSource | None,
        *,
        max_messages: int | None,
    ) -> Seed:
        """The platform's history of this conversation when the memory lacks it, at most `max_messages` (the
        conversation's cap: its profile's or MAX_MESSAGES); empty on any failure."""
        if context is None or not self._enabled or not lacks_context(incoming, history):
            return Seed([])
        limit = max_messages or _SEED_LIMIT
        try:
            async with asyncio.timeout(_SEED_READ_SECONDS):
                found = await context.read(incoming, limit=limit + 1)  # one more: were any left out?
        except Exception as exc:  # a failed read is no context, never a failed turn
            log.warning("platform context not read, answering without it: %s: %s", type(exc).__name__, exc,
                        extra={"outcome": "no_seed"})  # fmt: skip
            return Seed([])
        seed = seed_messages(
            found, limit=limit, budget_tokens=self._context_tokens, agent_name=self._agent_name,
            metadata={THREAD_REF: incoming.thread_ref} if incoming.thread_ref else None,
        )  # fmt: skip
        log.info("platform context seeded", extra={"messages": len(seed.messages), "read": len(found)})
        return seed

    def noted(
        self, response: AgentResponse, history: Sequence[ChatMessage], seed: Seed, cap: int | None
    ) -> tuple[str, list[ChatMessage]]:
        """The reply and the turn's messages, noting the first cut of the history (core.platform_context);
        `cap` is the conversation's max_messages (its profile's), None: no cap."""
        trimmed = cap is not None and len(history) + len(response.messages) > cap
        cut = seed.cut or response.cut or trimmed or response.kept is not None
        notice = self._notice and response.kept is None  # DROPPED_NOTE says it already
        return note_truncation(response.text, response.messages, history, cut=cut, notice=notice)
