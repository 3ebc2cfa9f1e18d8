"""Every tool of the process, from TOOLS_MODULE and the MCP servers, under the names the model sees.

A tool keeps its own name unless two sources offer the same one; then each of those is prefixed with
its source's name (`orders_lookup`). Names are made to fit OpenAI's `^[A-Za-z0-9_-]{1,64}$`. The set
is computed per turn from what is up right now, so a server that died takes its tools with it until
it is back, and the rest keep working.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from core.settings import Settings
from core.tools.base import SourceTool, ToolSource, ToolSpec
from core.tools.mcp_config import load_mcp_config
from core.tools.python_tools import PythonTools

if TYPE_CHECKING:
    from core.tools.mcp_client import McpServer

__all__ = ["SourceStatus", "Toolbox", "model_name", "open_toolbox", "resolve_names"]

log = logging.getLogger(__name__)

_INVALID = re.compile(r"[^A-Za-z0-9_-]")
_MAX_NAME = 64


def model_name(name: str) -> str:
    """`name` within OpenAI's rules for a function name."""
    return _INVALID.sub("_", name)[:_MAX_NAME] or "tool"


def resolve_names(entries: Sequence[tuple[ToolSource, SourceTool]]) -> dict[str, ToolSpec]:
    """The model's name for each tool: its own, or `<source>_<tool>` where two sources share it."""
    counts = Counter(model_name(tool.name) for _, tool in entries)
    specs: dict[str, ToolSpec] = {}
    for source, tool in entries:
        base = model_name(tool.name)
        name = base if counts[base] == 1 else model_name(f"{source.name}_{tool.name}")
        suffix = 2
        while name in specs:  # still taken (a tool that was already named so): number it
            name = f"{name[: _MAX_NAME - 4]}_{suffix}"
            suffix += 1
        specs[name] = ToolSpec(name=name, source=source, tool=tool)
    return specs


@dataclass(frozen=True, slots=True)
class SourceStatus:
    """One source for `tools list` and `check`: `ok` False means it offers nothing right now."""

    name: str
    kind: str
    ok: bool
    detail: str


class Toolbox:
    """The process's tool sources. Start once with `start()`; `aclose()` stops the MCP servers."""

    def __init__(
        self,
        sources: Sequence[ToolSource] = (),
        *,
        servers: Sequence[McpServer] = (),
        misconfigured: Mapping[str, str] | None = None,
    ) -> None:
        self.servers = list(servers)
        self.sources: list[ToolSource] = [*sources, *self.servers]
        self.misconfigured = dict(misconfigured or {})

    def specs(self) -> dict[str, ToolSpec]:
        """The tools the model may call now, by the name it sees."""
        return resolve_names([(source, tool) for source in self.sources for tool in source.tools()])

    async def start(self) -> None:
        """Start every MCP server at once; one that fails is logged by name and retried in the background."""
        servers = self.servers
        await asyncio.gather(*(server.start() for server in servers))
        for name, reason in self.misconfigured.items():
            log.error("MCP server %s is misconfigured and was not started: %s", name, reason,
                      extra={"mcp_server": name})  # fmt: skip
        for server in servers:
            if server.state != "up":
                log.error("MCP server %s failed to start (%s); serving without its tools, retrying in the background",
                          server.name, server.last_error, extra={"mcp_server": server.name})  # fmt: skip
        specs = self.specs()
        if specs or self.sources:
            listing = ", ".join(f"{name} ({spec.server})" for name, spec in specs.items()) or "none"
            log.info("tools the model can call: %s", listing)

    def status(self) -> list[SourceStatus]:
        statuses = [
            SourceStatus(source.name, "python", True, f"{len(source.tools())} tools from {source.module}")
            for source in self.sources
            if isinstance(source, PythonTools)
        ]
        for name, why in self.misconfigured.items():
            statuses.append(SourceStatus(name, "mcp", False, f"misconfigured: {why}"))
        for server in self.servers:
            ok = server.state == "up"
            detail = f"{len(server.tools())} tools ({server.config.describe()})" if ok else f"down: {server.last_error}"
            statuses.append(SourceStatus(server.name, "mcp", ok, detail))
        return statuses

    async def aclose(self) -> None:
        await asyncio.gather(*(server.aclose() for server in self.servers))


async def open_toolbox(settings: Settings) -> Toolbox:
    """The tools TOOLS_MODULE and MCP_CONFIG name, started.

    Raises:
        ConfigError: TOOLS_MODULE cannot be imported, or MCP_CONFIG cannot be read.
    """
    sources: list[ToolSource] = []
    if settings.tools_module:
        sources.append(PythonTools.from_module(settings.tools_module))
    servers: list[McpServer] = []
    misconfigured: dict[str, str] = {}
    if settings.mcp_config is not None:
        config = load_mcp_config(settings.mcp_config)
        misconfigured = config.invalid
        if config.servers:
            # The SDK takes over a second to import: it loads only when MCP servers are configured.
            client = importlib.import_module("core.tools.mcp_client")
            timeout = settings.mcp_connect_timeout_seconds
            servers = [client.McpServer(server, connect_timeout_seconds=timeout) for server in config.servers]
    toolbox = Toolbox(sources, servers=servers, misconfigured=misconfigured)
    await toolbox.start()
    return toolbox
