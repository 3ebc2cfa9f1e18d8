"""The test MCP server (tests/fakes/mcp_server.py) as MCP_CONFIG entries, and over HTTP as a process of its own."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

__all__ = ["REPO", "HttpMcpServer", "kill_pid_file", "stdio_entry", "write_config"]

REPO = Path(__file__).resolve().parents[2]


def stdio_entry(*, pid_file: Path | None = None, only: str | None = None, **extra: Any) -> dict[str, Any]:
    """A stdio server entry running the test server; `only` keeps those tools, `pid_file` says which process it is."""
    env = {"PYTHONPATH": str(REPO)}
    if pid_file is not None:
        env["MCP_TEST_PID_FILE"] = str(pid_file)
    if only is not None:
        env["MCP_TEST_ONLY"] = only
    env.update(extra.pop("env", {}))
    return {"command": sys.executable, "args": ["-m", "tests.fakes.mcp_server", "stdio"], "env": env,
            "cwd": str(REPO), **extra}  # fmt: skip


def write_config(path: Path, servers: dict[str, Any]) -> Path:
    path.write_text(json.dumps({"mcpServers": servers}))
    return path


def kill_pid_file(pid_file: Path) -> None:
    """Kill the stdio server that wrote `pid_file` (a process this test started, through the gateway)."""
    os.kill(int(pid_file.read_text()), signal.SIGKILL)


class HttpMcpServer:
    """The test server over streamable HTTP on 127.0.0.1; `start()` again after `kill()` reuses the port."""

    def __init__(self) -> None:
        self.port = 0
        self._process: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/mcp"

    async def start(self) -> None:
        env = {**os.environ, "PYTHONPATH": str(REPO), "MCP_TEST_PORT": str(self.port)}
        self._process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tests.fakes.mcp_server", "http", cwd=REPO, env=env,
            stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        assert self._process.stdout is not None
        async with asyncio.timeout(30):
            line = await self._process.stdout.readline()  # printed once the socket listens
        self.port = int(line.split()[1])

    async def kill(self) -> None:
        process, self._process = self._process, None
        if process is not None and process.returncode is None:
            process.kill()
            await process.wait()
