"""What one turn cost in tokens: every model call of it summed, the server's figures where it gave them.

A server that reports no `usage` (some OpenAI-compatible ones, or a text-only model) is estimated with
core.context's guess, and the count says how many of its tokens are estimated.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from core.context import estimate_tokens, tools_tokens
from core.messages import ChatMessage
from core.model import ModelReply

__all__ = ["TokenCount", "UsageMeter"]


@dataclass(frozen=True, slots=True)
class TokenCount:
    """Tokens of one turn (or any sum of turns); `estimated` of them were guessed, not reported."""

    prompt: int = 0
    completion: int = 0
    estimated: int = 0

    @property
    def total(self) -> int:
        return self.prompt + self.completion

    def __add__(self, other: TokenCount) -> TokenCount:
        return TokenCount(
            self.prompt + other.prompt, self.completion + other.completion, self.estimated + other.estimated
        )


class UsageMeter:
    """Owned by the caller of a turn, so what the calls before a failure cost is still known after it."""

    def __init__(self, model_id: str) -> None:
        self.model_id = model_id
        self.reported = TokenCount()
        self.guessed = TokenCount()  # its `estimated` is left 0: all of it is
        self.calls = 0

    @property
    def count(self) -> TokenCount:
        """Everything the turn's calls cost, `estimated` saying how much of it was guessed."""
        guessed = self.guessed
        return self.reported + TokenCount(guessed.prompt, guessed.completion, guessed.total)

    def add(self, reply: ModelReply, sent: Sequence[ChatMessage], tools: Sequence[dict[str, Any]] = ()) -> None:
        self.calls += 1
        if reply.usage is not None:
            self.reported += TokenCount(reply.usage.prompt_tokens, reply.usage.completion_tokens)
            return
        prompt = sum(estimate_tokens(m) for m in sent) + tools_tokens(tools)
        answer = ChatMessage(role="assistant", text=reply.text, tool_calls=reply.tool_calls)
        self.guessed += TokenCount(prompt, estimate_tokens(answer))
