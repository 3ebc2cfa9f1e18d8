"""Agent, AgentThread and AgentResponse: the reference notebook's API on our model port and stores.

A turn sends the instructions, the stored history (already trimmed by the store) and the new user
message, and calls tools while the model asks for them (core.agent_turn); only after the model
answered are the user message, the tool exchange and the reply stored, in ONE `add_messages` call.
A failed turn stores nothing.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from core.agent_turn import AgentTurn, TurnOptions
from core.context import estimate_tokens, fit_history, well_formed
from core.messages import ChatMessage
from core.model import ChatModel
from core.store.base import MessageStore
from core.tools.base import Approver

if TYPE_CHECKING:
    from core.tools.runner import ToolRunner
    from core.usage.meter import UsageMeter

__all__ = [
    "Agent",
    "AgentFactory",
    "AgentResponse",
    "AgentResponseUpdate",
    "AgentThread",
    "ChatModel",
    "TurnOptions",
    "estimate_tokens",
]


@dataclass(frozen=True, slots=True)
class AgentResponse:
    """`text` answers; `messages` are what the turn adds to the history (prompt, tool exchange, answer).

    `kept` is set when the model refused the history for its length and only that part of it was sent:
    the caller then replaces the stored history with `kept` + `messages`. `cut`: the history sent was
    shortened to fit `max_context_tokens`.
    """

    text: str
    messages: list[ChatMessage]
    model_seconds: float = 0.0
    kept: list[ChatMessage] | None = None
    cut: bool = False


@dataclass(frozen=True, slots=True)
class AgentResponseUpdate:
    """A piece of a streamed reply; the last update carries the whole `response` and no new text."""

    text: str
    response: AgentResponse | None = None


class AgentThread:
    """One conversation. With a store, its messages live there; without, in this object only."""

    def __init__(self, message_store: MessageStore | None = None) -> None:
        self.message_store = message_store
        self._local: list[ChatMessage] = []

    async def list_messages(self) -> list[ChatMessage]:
        if self.message_store is not None:
            return await self.message_store.list_messages()
        return list(self._local)

    async def add_messages(self, messages: Sequence[ChatMessage]) -> None:
        if self.message_store is not None:
            await self.message_store.add_messages(messages)
        else:
            self._local.extend(messages)

    async def serialize(self) -> dict[str, Any]:
        """Where the conversation lives (store kind, thread ID, limits); never its messages or secrets."""
        if self.message_store is None:
            return {"type": "agent_thread_state", "store_state": None}
        return {"type": "agent_thread_state", "store_state": await self.message_store.serialize()}

    @classmethod
    async def deserialize(cls, state: dict[str, Any], *, message_store: MessageStore | None = None) -> AgentThread:
        """Reattach to the stored conversation `state` names, through `message_store`."""
        store_state = state.get("store_state")
        if message_store is not None and store_state:
            await message_store.update_from_state(store_state)
        return cls(message_store=message_store)


class Agent:
    """An LLM with instructions; `run` takes one turn of a thread and commits it."""

    def __init__(
        self,
        model: ChatModel,
        *,
        name: str = "assistant",
        instructions: str = "",
        chat_message_store_factory: Callable[[], MessageStore] | None = None,
        max_context_tokens: int | None = None,
        tools: ToolRunner | None = None,
        max_tool_steps: int = 8,
        model_timeout_seconds: float | None = None,
    ) -> None:
        self.model = model
        self.name = name
        self.instructions = instructions
        self.chat_message_store_factory = chat_message_store_factory
        self.max_context_tokens = max_context_tokens
        self.tools = tools
        self.max_tool_steps = max_tool_steps
        self.model_timeout_seconds = model_timeout_seconds

    async def respond(
        self,
        history: Sequence[ChatMessage],
        prompt: ChatMessage,
        *,
        on_text: Callable[[str], Awaitable[None]] | None = None,
        approve: Approver | None = None,
        options: TurnOptions | None = None,
        meter: UsageMeter | None = None,
    ) -> AgentResponse:
        """Answer `prompt` after `history`, storing nothing: the caller commits `response.messages`.

        With `on_text`, the reply is streamed and `on_text` is awaited with the text so far after each
        piece (and with the tools' titles while they run). `approve` is asked before each call of a tool
        that needs approval; without it such calls are not run. `options` are a profile's changes for this
        answer (instructions, model, temperature, the tools offered); `meter` sums what every model call cost.

        Raises:
            ModelError: the model failed (ModelTimeoutError: one call took over MODEL_TIMEOUT_SECONDS).
        """
        turn = AgentTurn(self, history, prompt, on_text=on_text, approve=approve, options=options, meter=meter)
        result = await turn.run()
        return AgentResponse(result.text, result.messages, result.model_seconds, result.kept, result.cut)

    def get_new_thread(self) -> AgentThread:
        factory = self.chat_message_store_factory
        return AgentThread(message_store=factory() if factory is not None else None)

    async def run(self, message: str | ChatMessage, *, thread: AgentThread | None = None) -> AgentResponse:
        """One turn: history plus `message` to the model, then both stored together.

        Raises:
            ModelError: the model failed; nothing was stored.
            StoreError: the history could not be read or the turn not stored.
        """
        thread = thread if thread is not None else self.get_new_thread()
        prompt = _as_prompt(message)
        response = await self.respond(await thread.list_messages(), prompt)
        await thread.add_messages(response.messages)
        return response

    async def run_stream(
        self, message: str | ChatMessage, *, thread: AgentThread | None = None
    ) -> AsyncIterator[AgentResponseUpdate]:
        """As `run`, yielding text deltas as they arrive; the final update holds the stored response."""
        thread = thread if thread is not None else self.get_new_thread()
        prompt = _as_prompt(message)
        request = self._request(await thread.list_messages(), prompt)
        parts: list[str] = []
        started = time.perf_counter()
        async for delta in self.model.stream(request):
            parts.append(delta)
            yield AgentResponseUpdate(text=delta)
        response = self._response(prompt, "".join(parts), time.perf_counter() - started)
        await thread.add_messages(response.messages)
        yield AgentResponseUpdate(text="", response=response)

    def _request(self, history: list[ChatMessage], prompt: ChatMessage) -> list[ChatMessage]:
        system = [ChatMessage(role="system", text=self.instructions)] if self.instructions else []
        return [*system, *self._fit(history, prompt), prompt]

    def _fit(self, history: list[ChatMessage], prompt: ChatMessage) -> list[ChatMessage]:
        """Drop the oldest history until the request fits `max_context_tokens` (an estimate)."""
        if self.max_context_tokens is None:
            return well_formed(history)
        budget = self.max_context_tokens - estimate_tokens(prompt) - len(self.instructions) // 4 - 4
        return fit_history(history, budget)

    def _response(self, prompt: ChatMessage, text: str, model_seconds: float) -> AgentResponse:
        answer = ChatMessage(role="assistant", text=text, author_id=self.name)
        return AgentResponse(text=text, messages=[prompt, answer], model_seconds=model_seconds)


def _as_prompt(message: str | ChatMessage) -> ChatMessage:
    return message if isinstance(message, ChatMessage) else ChatMessage(role="user", text=message)


class AgentFactory:
    """`model.create_agent(...)`, the reference notebook's way to build an agent on a model."""

    def create_agent(
        self,
        *,
        name: str,
        instructions: str,
        chat_message_store_factory: Callable[[], MessageStore] | None = None,
        max_context_tokens: int | None = None,
    ) -> Agent:
        model: ChatModel = self  # type: ignore[assignment]  # only mixed into ChatModel implementations
        return Agent(
            model,
            name=name,
            instructions=instructions,
            chat_message_store_factory=chat_message_store_factory,
            max_context_tokens=max_context_tokens,
        )
