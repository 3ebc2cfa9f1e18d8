"""Why a message gets no model turn: too long, over its sender's rate, or a bot past MAX_BOT_TURNS in a row.

A person is told once per rate window; a bot is never told anything (a notice would be one more
message for it to answer, and the loop would go on).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from core.messages import ChatMessage
from core.metrics import Metrics
from core.turns import IncomingMessage, Reply

__all__ = ["Limits"]

log = logging.getLogger(__name__)


class Limits:
    def __init__(self, *, max_input_chars: int, max_bot_turns: int, metrics: Metrics) -> None:
        self._max_input_chars = max_input_chars
        self._max_bot_turns = max_bot_turns
        self._metrics = metrics

    def refusal(
        self, incoming: IncomingMessage, history: Sequence[ChatMessage], hits: int, *, per_minute: int, thread_id: str
    ) -> Reply | None:
        """The reply that replaces the turn (None: answer it); `hits` is the sender's count in the rate window."""
        cap = self._max_bot_turns
        if incoming.from_bot and cap and _bot_streak(history) >= cap:
            log.info("bot turn cap reached: %d bot messages in a row get no answer until a person writes", cap,
                     extra={"outcome": "bot_cap"})  # fmt: skip
            return Reply("", kind="silent", thread_id=thread_id)
        limited = self._over(incoming, thread_id, hits, per_minute)
        if limited is not None and incoming.from_bot:
            return Reply("", kind="silent", thread_id=thread_id)
        return limited

    def _over(self, incoming: IncomingMessage, thread_id: str, hits: int, per_minute: int) -> Reply | None:
        limit = self._max_input_chars
        if len(incoming.text) > limit:
            text = (
                f"Your message is {len(incoming.text):,} characters long; I accept at most {limit:,}. "
                "Please shorten it or split it up."
            )
            return Reply(text, kind="limit", thread_id=thread_id)
        if per_minute and hits > per_minute:
            self._metrics.rate_limited.labels(incoming.platform).inc()
            if hits > per_minute + 1:  # told once this window; another notice would only add to the flood
                return Reply("", kind="silent", thread_id=thread_id)
            text = f"You're sending messages faster than I can answer ({per_minute} a minute). Please wait a bit."
            return Reply(text, kind="limit", thread_id=thread_id)
        return None


def _bot_streak(history: Sequence[ChatMessage]) -> int:
    """How many of the newest user messages in a row bots wrote (a person's message ends the streak)."""
    streak = 0
    for message in reversed(history):
        if message.role != "user":
            continue
        if not message.metadata.get("from_bot"):
            break
        streak += 1
    return streak
