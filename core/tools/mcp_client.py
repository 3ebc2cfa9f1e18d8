"""One MCP server, through the official `mcp` SDK: started once per process, restarted with backoff.

Each server lives in a supervisor task of its own: the SDK's transports and `ClientSession` are anyio
context managers that must be entered and left in one task, and a transport that breaks cancels the
task holding it. Calls come from turns in other tasks and only use the session, so a dying server
fails its calls with `ToolUnavailableError` and never cancels a turn.

A stdio server that exits is noticed at once (its stdout ends); an HTTP server when a call or the
heartbeat ping fails. Either way the supervisor reconnects after 0.5 s, doubling to 30 s while it
keeps failing, and logs each failure with the server's name. Secrets (env values, headers) never reach
a log line: the config keeps them as `SecretStr` and URLs are logged without userinfo or query.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sys
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AbstractAsyncContextManager
from types import TracebackType
from typing import Any, Literal, Self

import httpx2
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from mcp.types import CallToolResult, EmbeddedResource, ImageContent, PaginatedRequestParams, TextContent, Tool

from core.tools.base import SourceTool, ToolOutput, ToolUnavailableError
from core.tools.mcp_config import McpServerConfig

__all__ = ["McpServer", "ServerState"]

log = logging.getLogger(__name__)

ServerState = Literal["starting", "up", "down", "closed"]
_BACKOFF_FIRST_SECONDS = 0.5
_BACKOFF_MAX_SECONDS = 30.0
_HEALTHY_SECONDS = 60.0  # a connection that lived this long resets the backoff
_PING_EVERY_SECONDS = 15.0
_PING_TIMEOUT_SECONDS = 10.0
_LIST_PAGES = 100


class _EndWatch:
    """The transport's read stream, setting `ended` when it runs out (a stdio server exited)."""

    def __init__(self, stream: Any, ended: asyncio.Event) -> None:
        self._stream = stream
        self._ended = ended

    async def receive(self) -> Any:
        try:
            return await self._stream.receive()
        except Exception:
            self._ended.set()
            raise

    async def aclose(self) -> None:
        await self._stream.aclose()

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> Any:
        try:
            return await self._stream.__anext__()
        except (StopAsyncIteration, Exception):
            self._ended.set()
            raise

    async def __aenter__(self) -> Self:
        await self._stream.__aenter__()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool | None:
        self._ended.set()
        result: bool | None = await self._stream.__aexit__(exc_type, exc, tb)
        return result


class McpServer:
    """A `ToolSource` for one configured server; `start()` launches it, `aclose()` stops it for good."""

    def __init__(self, config: McpServerConfig, *, connect_timeout_seconds: float = 30.0) -> None:
        self.config = config
        self.state: ServerState = "starting"
        self.last_error: str | None = None
        self.connects = 0  # successful connections so far; more than one means it was restarted
        self._connect_timeout = connect_timeout_seconds
        self._session: ClientSession | None = None
        self._tools: list[SourceTool] = []
        self._lost = asyncio.Event()
        self._changed = asyncio.Condition()
        self._task: asyncio.Task[None] | None = None
        self._closing = False

    @property
    def name(self) -> str:
        return self.config.name

    async def start(self) -> None:
        """Launch the supervisor and wait for the first attempt to connect (it may fail: see `state`)."""
        if self._task is None:
            self._task = asyncio.create_task(self._supervise(), name=f"mcp-{self.name}")
        await self._wait(lambda: self.connects > 0 or self.last_error is not None)

    async def wait_up(self, *, connects: int = 1) -> None:
        """Wait until the server has connected `connects` times in all and is up (tests, restarts)."""
        await self._wait(lambda: self.state == "up" and self.connects >= connects)

    def tools(self) -> list[SourceTool]:
        return list(self._tools) if self.state == "up" else []

    async def call(self, tool: str, arguments: dict[str, Any]) -> ToolOutput:
        session = self._session
        if session is None or self.state != "up":
            raise ToolUnavailableError(f"the MCP server {self.name!r} is not running right now")
        try:
            result = await session.call_tool(tool, arguments)
        except MCPError as exc:
            if exc.code == -32000:  # CONNECTION_CLOSED: the server went away under the call
                self._lost.set()
                raise ToolUnavailableError(f"the MCP server {self.name!r} stopped during the call") from exc
            return ToolOutput(f"the MCP server refused the call: {exc.message}", is_error=True)
        except (OSError, httpx2.HTTPError, RuntimeError) as exc:
            self._lost.set()
            raise ToolUnavailableError(f"the MCP server {self.name!r} could not be reached: {exc}") from exc
        return _output(result)

    async def aclose(self) -> None:
        self._closing = True
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        await self._set_state("closed")

    async def _supervise(self) -> None:
        delay = _BACKOFF_FIRST_SECONDS
        attempts = 0
        while not self._closing:
            started = time.monotonic()
            try:
                await self._connect_and_serve()
                reason = "its connection ended"
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if self._closing or task is None:
                    raise
                task.uncancel()  # a broken transport's cancel scope leaked out; we were not asked to stop
                reason = "its transport was cancelled"
            except Exception as exc:  # every way a server can fail: spawn, handshake, transport, timeout
                reason = _describe_error(exc)
            self._session = None
            if self._closing:
                return
            self.last_error = reason
            await self._set_state("down")
            if time.monotonic() - started > _HEALTHY_SECONDS:
                delay = _BACKOFF_FIRST_SECONDS
            attempts += 1
            if attempts > 1 or self.connects:  # the first failure is the toolbox's "failed to start" line
                log.warning("MCP server %s is down (%s); starting it again in %.1fs", self.name, reason, delay,
                            extra={"mcp_server": self.name})  # fmt: skip
            await asyncio.sleep(delay)  # the backoff itself, not a wait for another task
            delay = min(delay * 2, _BACKOFF_MAX_SECONDS)

    async def _connect_and_serve(self) -> None:
        self._lost = asyncio.Event()
        async with contextlib.AsyncExitStack() as stack:
            async with asyncio.timeout(self._connect_timeout):
                read, write = await stack.enter_async_context(self._transport())
                session = await stack.enter_async_context(ClientSession(_EndWatch(read, self._lost), write))
                await session.initialize()
                tools = await _list_tools(session)
            self._tools = [self._source_tool(tool) for tool in tools]
            self._session = session
            self.connects += 1
            self.last_error = None
            await self._set_state("up")
            log.info("MCP server %s is up (%s) with %d tools: %s", self.name, self.config.describe(), len(tools),
                     ", ".join(t.name for t in tools), extra={"mcp_server": self.name})  # fmt: skip
            await self._heartbeat(session)

    async def _heartbeat(self, session: ClientSession) -> None:
        """Return when the connection is lost: the stream ended, a call failed, or a ping went unanswered."""
        while not self._lost.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(_PING_EVERY_SECONDS):
                    await self._lost.wait()
                    return
            async with asyncio.timeout(_PING_TIMEOUT_SECONDS):
                await session.send_ping()

    def _transport(self) -> AbstractAsyncContextManager[Any]:
        config = self.config
        if config.command is not None:
            params = StdioServerParameters(
                command=config.command,
                args=config.args,
                env={key: value.get_secret_value() for key, value in config.env.items()},
                cwd=config.cwd,
            )
            return stdio_client(params, errlog=sys.stderr)
        return _http_transport(config.url or "", {k: v.get_secret_value() for k, v in config.headers.items()})

    def _source_tool(self, tool: Tool) -> SourceTool:
        hints = tool.annotations
        destructive = bool(hints and hints.destructive_hint is True and hints.read_only_hint is not True)
        return SourceTool(
            name=tool.name,
            description=tool.description or "",
            parameters=tool.input_schema,
            title=tool.title or (hints.title if hints else None),
            needs_approval=self.config.needs_approval(tool.name, destructive=destructive),
        )

    async def _set_state(self, state: ServerState) -> None:
        self.state = state
        async with self._changed:
            self._changed.notify_all()

    async def _wait(self, ready: Callable[[], bool]) -> None:
        async with self._changed:
            await self._changed.wait_for(ready)


@contextlib.asynccontextmanager
async def _http_transport(url: str, headers: Mapping[str, str]) -> AsyncIterator[Any]:
    # The SDK's own timeouts for MCP: 30 s to connect or write, 300 s to read a long-lived stream.
    async with (
        httpx2.AsyncClient(headers=dict(headers), timeout=httpx2.Timeout(30, read=300), follow_redirects=True) as http,
        streamable_http_client(url, http_client=http) as streams,
    ):
        yield streams


async def _list_tools(session: ClientSession) -> list[Tool]:
    tools: list[Tool] = []
    result = await session.list_tools()
    tools += result.tools
    for _ in range(_LIST_PAGES):
        if result.next_cursor is None:
            break
        result = await session.list_tools(params=PaginatedRequestParams(cursor=result.next_cursor))
        tools += result.tools
    return tools


def _output(result: CallToolResult) -> ToolOutput:
    parts: list[str] = []
    for block in result.content:
        if isinstance(block, TextContent):
            parts.append(block.text)
        elif isinstance(block, ImageContent):
            parts.append(f"[image: {block.mime_type}]")
        elif isinstance(block, EmbeddedResource):
            text = getattr(block.resource, "text", None)
            parts.append(text if isinstance(text, str) else f"[resource: {block.resource.uri}]")
        else:
            parts.append(f"[{getattr(block, 'type', 'content')}]")
    if not parts and result.structured_content is not None:
        parts.append(json.dumps(result.structured_content, ensure_ascii=False, default=str))
    return ToolOutput("\n".join(parts), is_error=result.is_error)


def _describe_error(exc: BaseException) -> str:
    """The innermost cause of a failure, unwrapping the SDK's exception groups, in one line."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    if isinstance(exc, TimeoutError):
        return "no answer in time"
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
