"""One answer of the agent: model -> tools -> model ..., until the model answers in text.

At most `max_tool_steps` rounds of tool calls; the call after the last round offers the tools with
`tool_choice="none"`, so the model has to answer with what it has. Every model call has its own
deadline (MODEL_TIMEOUT_SECONDS); the whole answer is bounded by the caller (TURN_TIMEOUT_SECONDS).

The turn's new messages are the prompt, then per round the assistant's tool calls and one tool message
per call, then the answer: the shape OpenAI accepts, stored as one batch so history never holds a
call without its results. When the model refuses a request for its length, the oldest history is
dropped to a quarter of the context budget (all of it if that is no smaller) and the call is tried
once more; the answer then says so, and `kept` tells the caller which history is left. A model that
refuses the prompt's images (it has no vision) is asked once more without them, and the answer says so.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from core.context import estimate_tokens, fit_history, history_budget_after_refusal, tools_tokens, well_formed
from core.errors import ContextTooLongError, ImagesRefusedError, ModelTimeoutError
from core.messages import ChatMessage
from core.model import ModelReply, ToolChoice, calls_tools
from core.tools.base import Approver, ToolSpec
from core.usage.meter import UsageMeter

if TYPE_CHECKING:
    from core.agent import Agent

__all__ = [
    "DROPPED_NOTE",
    "NO_IMAGES_NOTE",
    "STOPPED_NOTE",
    "TRUNCATED_NOTE",
    "AgentTurn",
    "TurnOptions",
    "TurnResult",
    "running_tools",
]

log = logging.getLogger(__name__)

DROPPED_NOTE = "_(Older messages of our conversation were dropped: they no longer fit the model's context.)_"
_TOOLS_LINE = re.compile(r"(?:^|\n\n)_([^\n]+)…_$")
NO_IMAGES_NOTE = "_(This model cannot see images, so I answered from the text alone.)_"
# Said once per conversation (TRUNCATION_NOTICE) when MAX_MESSAGES or MAX_CONTEXT_TOKENS first cut its history.
TRUNCATED_NOTE = "_(Older messages of our conversation were dropped: I keep only the most recent ones.)_"
STOPPED_NOTE = "I stopped after {steps} rounds of tool calls without reaching an answer. Please try a narrower request."


def running_tools(progress_text: str) -> str | None:
    """The tools a progress text says are running (its last line, as `_show_tools` writes it), else None:
    platforms with a status line of their own (Slack's assistant threads) show them there too."""
    match = _TOOLS_LINE.search(progress_text)
    return match.group(1) if match else None


@dataclass(frozen=True, slots=True)
class TurnOptions:
    """What a profile changes for one answer; None keeps the agent's own (its instructions, model, every tool)."""

    instructions: str | None = None
    model: str | None = None
    temperature: float | None = None
    tool_names: frozenset[str] | None = None  # the tools offered; the others are never shown to the model


@dataclass(frozen=True, slots=True)
class TurnResult:
    """`text` is what to post; `messages` what to store; `kept`, when set, the history left after a cut.
    `cut`: the history sent was shortened to fit MAX_CONTEXT_TOKENS."""

    text: str
    messages: list[ChatMessage]
    model_seconds: float
    kept: list[ChatMessage] | None
    cut: bool = False


class AgentTurn:
    """The state of one answer: the history it sends, the messages it adds, the model time it used."""

    def __init__(
        self,
        agent: Agent,
        history: Sequence[ChatMessage],
        prompt: ChatMessage,
        *,
        on_text: Callable[[str], Awaitable[None]] | None,
        approve: Approver | None,
        options: TurnOptions | None = None,
        meter: UsageMeter | None = None,
    ) -> None:
        self._agent = agent
        self._meter = meter
        options = options or TurnOptions()
        specs: dict[str, ToolSpec] = agent.tools.specs() if agent.tools is not None else {}
        if options.tool_names is not None:
            specs = {name: spec for name, spec in specs.items() if name in options.tool_names}
        self._specs = specs
        self._tool_defs = [spec.to_openai() for spec in self._specs.values()]
        instructions = options.instructions if options.instructions is not None else agent.instructions
        self._system = [ChatMessage(role="system", text=instructions)] if instructions else []
        # Only what the profile sets: a model port without these keywords still works without profiles.
        self._call_options: dict[str, Any] = {
            key: value for key, value in (("model", options.model), ("temperature", options.temperature))
            if value is not None
        }  # fmt: skip
        self._budget = self._history_budget(prompt)
        self._history = self._fit(history)
        self._cut = self._budget is not None and len(self._history) < len(well_formed(history))
        self._new = [prompt]
        self._on_text = on_text
        self._approve = approve
        self._dropped = False
        self._images_refused = False
        self._model_seconds = 0.0

    async def run(self) -> TurnResult:
        steps = self._agent.max_tool_steps
        for step in range(steps + 1):
            last = step == steps
            reply = await self._call("none" if last and self._tool_defs else None)
            if not reply.tool_calls or not self._specs or last:
                text = reply.text or (STOPPED_NOTE.format(steps=steps) if reply.tool_calls else "")
                break
            name = self._agent.name
            call = ChatMessage(role="assistant", text=reply.text, tool_calls=reply.tool_calls, author_id=name)
            await self._show_tools(reply)
            assert self._agent.tools is not None
            results = await self._agent.tools.run(reply.tool_calls, self._specs, approve=self._approve, step=step)
            self._new += [call, *results]
        answer = ChatMessage(role="assistant", text=text, author_id=self._agent.name)
        notes = [note for note, due in ((NO_IMAGES_NOTE, self._images_refused), (DROPPED_NOTE, self._dropped)) if due]
        shown = "\n\n".join([text, *notes]) if notes else text
        kept = self._history if self._dropped else None
        return TurnResult(shown, [*self._new, answer], self._model_seconds, kept, self._cut)

    async def _call(self, tool_choice: ToolChoice | None) -> ModelReply:
        try:
            return await self._fitted_call(tool_choice)
        except ImagesRefusedError as exc:
            prompt = self._new[0]
            if not prompt.images:
                raise
            self._new[0] = prompt.without_images()
            self._images_refused = True
            log.warning("the model refused the image parts (%s); asking once more without them", exc)
            return await self._fitted_call(tool_choice)

    async def _fitted_call(self, tool_choice: ToolChoice | None) -> ModelReply:
        try:
            return await self._timed_call(tool_choice)
        except ContextTooLongError as exc:
            if self._dropped or not self._history:
                raise
            before = len(self._history)
            sent = [*self._system, *self._history, *self._new]
            budget = history_budget_after_refusal(str(exc), sent, self._history)
            if self._budget is not None:
                budget = min(budget, self._budget // 4)
            kept = fit_history(self._history, budget)
            self._history = kept if len(kept) < before else []
            self._dropped = True
            log.warning("the model refused the request for its length (%s); dropped %d of %d history messages "
                        "and trying once more", exc, before - len(self._history), before)  # fmt: skip
            return await self._timed_call(tool_choice)

    async def _timed_call(self, tool_choice: ToolChoice | None) -> ModelReply:
        messages = [*self._system, *self._history, *self._new]
        seconds = self._agent.model_timeout_seconds
        started = time.perf_counter()
        try:
            async with asyncio.timeout(seconds):
                reply = await self._model_call(messages, tool_choice)
        except TimeoutError:
            raise ModelTimeoutError(f"no answer within MODEL_TIMEOUT_SECONDS={seconds}") from None
        finally:
            self._model_seconds += time.perf_counter() - started
        if self._meter is not None:  # every call of the turn counts, tool rounds and retries included
            self._meter.add(reply, messages, self._tool_defs)
        return reply

    async def _model_call(self, messages: list[ChatMessage], tool_choice: ToolChoice | None) -> ModelReply:
        model = self._agent.model
        on_delta = self._streamer() if self._on_text is not None else None
        if calls_tools(model):
            return await model.reply(
                messages, tools=self._tool_defs, tool_choice=tool_choice, on_delta=on_delta, **self._call_options
            )
        if on_delta is None:  # a text-only model (the notebook's, a benchmark's): no tools offered
            return ModelReply(await model.complete(messages))
        parts: list[str] = []
        async for delta in model.stream(messages):
            parts.append(delta)
            await on_delta(delta)
        return ModelReply("".join(parts))

    def _streamer(self) -> Callable[[str], Awaitable[None]]:
        text = ""

        async def on_delta(delta: str) -> None:
            nonlocal text
            text += delta
            assert self._on_text is not None
            await self._on_text(text)

        return on_delta

    async def _show_tools(self, reply: ModelReply) -> None:
        if self._on_text is None:
            return
        titles = [self._specs[c.name].title if c.name in self._specs else c.name for c in reply.tool_calls]
        status = f"_{', '.join(dict.fromkeys(titles))}…_"
        await self._on_text(f"{reply.text}\n\n{status}" if reply.text else status)

    def _history_budget(self, prompt: ChatMessage) -> int | None:
        cap = self._agent.max_context_tokens
        if cap is None:
            return None
        fixed = estimate_tokens(prompt) + sum(estimate_tokens(m) for m in self._system) + tools_tokens(self._tool_defs)
        return cap - fixed - 4

    def _fit(self, history: Sequence[ChatMessage]) -> list[ChatMessage]:
        if self._budget is None:
            return well_formed(history)
        return fit_history(history, self._budget)
