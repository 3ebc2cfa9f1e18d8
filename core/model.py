"""The model port's shapes: what a model is asked (messages, tool definitions) and what it answers.

`ChatModel` is the text-only port the reference notebook needs; `ToolCallingModel` adds `reply`, one
model call that may answer with tool calls, streamed or not. The agent uses `reply` when a model has it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol, TypeGuard

from core.messages import ChatMessage, ToolCall

__all__ = [
    "ChatModel",
    "DeltaCallback",
    "ModelReply",
    "ModelUsage",
    "ToolCallingModel",
    "ToolChoice",
    "calls_tools",
]

DeltaCallback = Callable[[str], Awaitable[None]]
ToolChoice = Literal["auto", "none"]


@dataclass(frozen=True, slots=True)
class ModelUsage:
    """The tokens one call cost, as the server reported them (its `usage`)."""

    prompt_tokens: int
    completion_tokens: int


@dataclass(frozen=True, slots=True)
class ModelReply:
    """One model call's answer: text, and the tool calls it asks for (none: `text` is the answer).
    `usage` is None when the server reported none (the caller then estimates)."""

    text: str
    tool_calls: tuple[ToolCall, ...] = ()
    finish_reason: str | None = None
    usage: ModelUsage | None = None


class ChatModel(Protocol):
    model_id: str

    async def complete(self, messages: Sequence[ChatMessage]) -> str: ...

    def stream(self, messages: Sequence[ChatMessage]) -> AsyncIterator[str]: ...


class ToolCallingModel(ChatModel, Protocol):
    async def reply(
        self,
        messages: Sequence[ChatMessage],
        *,
        tools: Sequence[dict[str, Any]] = (),
        tool_choice: ToolChoice | None = None,
        on_delta: DeltaCallback | None = None,
        model: str | None = None,
        temperature: float | None = None,
    ) -> ModelReply:
        """One call; with `on_delta`, streamed, and `on_delta` is awaited with each piece of text.
        `model` and `temperature` are this call's (a profile's); None: the model's own and the server's default.

        Raises:
            ModelError: the call failed (ContextTooLongError: the request is too long for the model).
        """
        ...


def calls_tools(model: ChatModel) -> TypeGuard[ToolCallingModel]:
    """Whether `model` has `reply`, the one member a ToolCallingModel adds to a ChatModel. Asked on every
    model call: isinstance() against a runtime-checkable Protocol walks the Protocol's attributes each
    time (typing._get_protocol_attrs on Python 3.11), a cost on every turn."""
    return callable(getattr(model, "reply", None))
