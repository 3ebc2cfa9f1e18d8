"""What every tool source offers the agent: tools with a JSON schema, and a way to call them.

A source is the Python tools module or one MCP server. A tool's `name` is the source's own; the
toolbox decides the name the model sees (`ToolSpec.name`). A source reports a tool's failure as an
`ToolOutput` with `is_error` when the tool itself failed, and raises `ToolUnavailableError` when it
could not run it at all (its server is down): both reach the model as the call's result.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

__all__ = [
    "Approver",
    "PendingCall",
    "SourceTool",
    "ToolOutput",
    "ToolSource",
    "ToolSpec",
    "ToolUnavailableError",
]


class ToolUnavailableError(Exception):
    """The source could not run the call (server down, tool gone); the text says why, for the model too."""


@dataclass(frozen=True, slots=True)
class SourceTool:
    """A tool as its source names and describes it."""

    name: str
    description: str
    parameters: Mapping[str, Any]
    title: str | None = None
    needs_approval: bool = False


@dataclass(frozen=True, slots=True)
class ToolOutput:
    text: str
    is_error: bool = False


class ToolSource(Protocol):
    """The Python tools module, or one MCP server."""

    @property
    def name(self) -> str: ...

    def tools(self) -> list[SourceTool]:
        """The tools it offers right now (none while an MCP server is down)."""
        ...

    async def call(self, tool: str, arguments: dict[str, Any]) -> ToolOutput:
        """Run `tool`. Raises `ToolUnavailableError` when it cannot; any other exception is the tool's failure."""
        ...


@dataclass(frozen=True, slots=True)
class ToolSpec:
    """A tool as the model sees it: its unique `name`, where it runs, whether a person must approve it."""

    name: str
    source: ToolSource = field(compare=False, repr=False)
    tool: SourceTool

    @property
    def server(self) -> str:
        return self.source.name

    @property
    def needs_approval(self) -> bool:
        return self.tool.needs_approval

    @property
    def title(self) -> str:
        return self.tool.title or self.tool.name

    def to_openai(self) -> dict[str, Any]:
        function: dict[str, Any] = {"name": self.name, "parameters": dict(self.tool.parameters)}
        if self.tool.description:
            function["description"] = self.tool.description
        return {"type": "function", "function": function}


@dataclass(frozen=True, slots=True)
class PendingCall:
    """A call that needs a person's approval before it runs: what the approval prompt shows.

    `step` (the round of tool calls in the answer, from 0) and `index` (the call's place in its round) name
    the call within its turn alike in every attempt at the turn, unlike the model's `call_id`.
    """

    call_id: str
    tool: str
    server: str
    title: str
    arguments: Mapping[str, Any]
    step: int = 0
    index: int = 0


# Awaited once per call that needs approval: True runs it, False is a denial, a string is the call's result
# instead of running it (it expired, or an earlier attempt at the turn already ran it). Delivery implements it.
Approver = Callable[[PendingCall], Awaitable[bool | str]]
