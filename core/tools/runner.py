"""One round of tool calls: each call resolved, approved if it must be, run under its deadline, and
answered, whatever happens, with one tool message the model reads as the call's result.

Nothing a tool does can crash the turn: an unknown tool, arguments that are not JSON, an exception,
a timeout (TOOL_TIMEOUT_SECONDS), a server that is down, or a result past MAX_TOOL_RESULT_CHARS (cut,
with a note) all become the result text. The calls of one round run concurrently. A call that needs
approval waits for the `approve` hook first (its wait does not count against the tool's deadline);
without a hook it is not run and the model is told approvals are not available here.

Arguments and results are logged at DEBUG only.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

from core.messages import ChatMessage, ToolCall
from core.metrics import Metrics
from core.tools.base import Approver, PendingCall, ToolSpec, ToolUnavailableError
from core.tools.toolbox import Toolbox

__all__ = ["NO_APPROVALS", "ToolRunner"]

log = logging.getLogger(__name__)

NO_APPROVALS = (
    "Not run: this tool needs a person's approval before it runs, and approvals are not available in this "
    "conversation. Tell the user you could not run it and why."
)
DENIED = "Not run: the user did not approve this call. Do not try it again unless the user asks."


class ToolRunner:
    """Runs the model's tool calls on `toolbox`'s tools; shared by every turn of a process."""

    def __init__(
        self,
        toolbox: Toolbox,
        *,
        timeout_seconds: float = 30.0,
        max_result_chars: int = 20000,
        metrics: Metrics | None = None,
    ) -> None:
        self.toolbox = toolbox
        self._timeout = timeout_seconds
        self._max_chars = max_result_chars
        self._metrics = metrics or Metrics()

    def specs(self) -> dict[str, ToolSpec]:
        """The tools of a turn: taken once when it starts, so names stay put while it runs."""
        return self.toolbox.specs()

    async def run(
        self, calls: Sequence[ToolCall], specs: Mapping[str, ToolSpec], *, approve: Approver | None = None,
        step: int = 0,
    ) -> list[ChatMessage]:  # fmt: skip
        """One tool message per call, in the calls' order; `step` is the round's number in the answer."""
        texts = await asyncio.gather(*(self._one(call, specs, approve, step, i) for i, call in enumerate(calls)))
        return [
            ChatMessage(role="tool", text=text, tool_call_id=call.id, metadata={"tool": call.name})
            for call, text in zip(calls, texts, strict=True)
        ]

    async def _one(
        self, call: ToolCall, specs: Mapping[str, ToolSpec], approve: Approver | None, step: int, index: int
    ) -> str:
        spec = specs.get(call.name)
        if spec is None:
            return self._done("unknown", "unknown", f"Error: there is no tool named {call.name!r}.", call)
        try:
            arguments = _arguments(call.arguments)
        except ValueError as exc:
            return self._done(spec.name, "invalid", f"Error: the arguments are not a JSON object ({exc}).", call)
        if spec.needs_approval:
            pending = PendingCall(call.id, spec.name, spec.server, spec.title, arguments, step=step, index=index)
            refusal = await self._approval(spec, pending, approve)
            if refusal is not None:
                return self._done(spec.name, "denied", refusal, call)
        log.debug("tool call %s(%s)", spec.name, call.arguments, extra={"tool": spec.name})
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self._timeout):
                output = await spec.source.call(spec.tool.name, arguments)
        except TimeoutError:
            outcome, text = "timeout", f"Error: the tool did not finish within {self._timeout:g} seconds."
        except ToolUnavailableError as exc:
            outcome, text = "unavailable", f"Error: {exc}."
        except Exception as exc:  # the tool's own failure is its result; the turn goes on
            log.warning("tool %s failed: %s", spec.name, type(exc).__name__, extra={"tool": spec.name})
            outcome, text = "error", f"Error: {type(exc).__name__}: {exc}"
        else:
            outcome, text = ("error", f"Tool error: {output.text}") if output.is_error else ("ok", output.text)
        self._metrics.tool_seconds.labels(spec.name).observe(time.perf_counter() - started)
        if len(text) > self._max_chars:
            outcome = "truncated" if outcome == "ok" else outcome
            text = (
                f"{text[: self._max_chars]}\n[truncated: the result had {len(text):,} characters; "
                f"only the first {self._max_chars:,} are shown]"
            )
        return self._done(spec.name, outcome, text, call)

    async def _approval(self, spec: ToolSpec, pending: PendingCall, approve: Approver | None) -> str | None:
        """None when the call may run; else the result that says why not."""
        if approve is None:
            return NO_APPROVALS
        try:
            approved = await approve(pending)
        except Exception as exc:  # an approval that cannot be asked is not an approval
            log.warning("approval for %s failed: %s: %s", spec.name, type(exc).__name__, exc)
            return NO_APPROVALS
        if isinstance(approved, str):
            return approved
        return None if approved else DENIED

    def _done(self, tool: str, outcome: str, text: str, call: ToolCall) -> str:
        self._metrics.tool_calls.labels(tool, outcome).inc()
        log.info("tool %s: %s", tool, outcome, extra={"tool": tool, "outcome": outcome})
        log.debug("tool %s result: %s", tool, text, extra={"tool": tool, "tool_call_id": call.id})
        return text


def _arguments(raw: str) -> dict[str, Any]:
    parsed = json.loads(raw or "{}")
    if not isinstance(parsed, dict):
        raise ValueError(f"got {type(parsed).__name__}")  # noqa: TRY004 -- reported with JSON errors
    return parsed
