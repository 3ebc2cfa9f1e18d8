"""A real MCP server written with the `mcp` SDK, for the tool tests: run it over stdio or streamable HTTP.

    python -m tests.fakes.mcp_server stdio
    python -m tests.fakes.mcp_server http      # binds 127.0.0.1 on a free port, prints "port <n>" on stdout

Tools
    ``lookup_order(order_id)``   read-only: ``order <id>: 2 books, shipped``
    ``delete_order(order_id)``   destructive (``destructiveHint: true``): ``deleted order <id>``
    ``add(a, b)``                plain, no annotations: the sum
    ``fail(reason)``             raises, so the result comes back with ``isError``
    ``hang()``                   never returns (until the process is killed)
    ``big(size)``                ``size`` characters of ``x``
    ``whoami()``                 the value of the ``MCP_TEST_SECRET`` environment variable, or ``unset``

Environment
    ``MCP_TEST_NAME``      the server's name (default ``test-tools``)
    ``MCP_TEST_ONLY``      comma-separated tool names to keep (default: all)
    ``MCP_TEST_PID_FILE``  write the process ID there at start, so a test can kill exactly this process
    ``MCP_TEST_PORT``      http: listen on this port instead of a free one
"""

from __future__ import annotations

import asyncio
import os
import socket
import sys

import uvicorn
from mcp.server.mcpserver import MCPServer
from mcp.types import ToolAnnotations

server = MCPServer(os.environ.get("MCP_TEST_NAME", "test-tools"))


@server.tool(title="Looking up the order", annotations=ToolAnnotations(read_only_hint=True))
def lookup_order(order_id: str) -> str:
    """Look up an order by its ID."""
    return f"order {order_id}: 2 books, shipped"


@server.tool(annotations=ToolAnnotations(destructive_hint=True, read_only_hint=False))
def delete_order(order_id: str) -> str:
    """Delete an order for good."""
    return f"deleted order {order_id}"


@server.tool()
def add(a: int, b: int) -> int:
    """Add two numbers."""
    return a + b


@server.tool()
def fail(reason: str = "broken") -> str:
    """Always fails."""
    raise ValueError(f"the tool failed: {reason}")


@server.tool()
async def hang() -> str:
    """Never answers."""
    await asyncio.Event().wait()
    return "unreachable"


@server.tool()
def big(size: int) -> str:
    """A long result."""
    return "x" * size


@server.tool()
def whoami() -> str:
    """The secret this server was started with."""
    return os.environ.get("MCP_TEST_SECRET", "unset")


def _keep_only() -> None:
    only = os.environ.get("MCP_TEST_ONLY")
    if not only:
        return
    keep = {name.strip() for name in only.split(",")}
    for tool in asyncio.run(server.list_tools()):
        if tool.name not in keep:
            server.remove_tool(tool.name)


async def _serve_http() -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", int(os.environ.get("MCP_TEST_PORT", "0"))))
    sock.listen(128)  # connections wait in the backlog from now on, so the port can be announced
    print(f"port {sock.getsockname()[1]}", flush=True)
    config = uvicorn.Config(server.streamable_http_app(), log_level="warning", lifespan="on")
    await uvicorn.Server(config).serve(sockets=[sock])


def main() -> None:
    pid_file = os.environ.get("MCP_TEST_PID_FILE")
    if pid_file:
        with open(pid_file, "w") as out:
            out.write(str(os.getpid()))
    _keep_only()
    if sys.argv[1:] == ["http"]:
        asyncio.run(_serve_http())
    else:
        server.run("stdio")


if __name__ == "__main__":
    main()
