"""The model port's shapes: what a model is asked (messages, tool definitions) and what it answers.

`ChatModel` is the text-only port the reference notebook needs; `ToolCallingModel` adds `reply`, one
model call that may answer with tool calls, streamed or not. The agent uses `reply` when a model has it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol, runtime_checkable

from core.messages import ChatMessage, ToolCall

__all__ = ["ChatModel", "DeltaCallback", "ModelReply", "ToolCallingModel", "ToolChoice"]

DeltaCallback = Callable[[str], Awaitable[None]]
ToolChoice = Literal["auto", "none"]


@dataclass(frozen=True, slots=True)
class ModelReply:
    """One model call's answer: text, and the tool calls it asks for (none: `text` is the answer)."""

    text: str
    tool_calls: tuple[ToolCall, ...] = ()
    finish_reason: str | None = None


class ChatModel(Protocol):
    model_id: str

    async def complete(self, messages: Sequence[ChatMessage]) -> str: ...

    def stream(self, messages: Sequence[ChatMessage]) -> AsyncIterator[str]: ...


@runtime_checkable
class ToolCallingModel(ChatModel, Protocol):
    async def reply(
        self,
        messages: Sequence[ChatMessage],
        *,
        tools: Sequence[dict[str, Any]] = (),
        tool_choice: ToolChoice | None = None,
        on_delta: DeltaCallback | None = None,
    ) -> ModelReply:
        """One call; with `on_delta`, streamed, and `on_delta` is awaited with each piece of text.

        Raises:
            ModelError: the call failed (ContextTooLongError: the request is too long for the model).
        """
        ...
