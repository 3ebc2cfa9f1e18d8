"""`chat-gateway run ...` as real processes: settings from the environment only, loopback ports, a log file each.

Nothing of the developer's environment leaks in (REDIS_*, OPENAI_*, SLACK_*, DISCORD_*, proxies), and the
working directory is the test's own, so no `.env` is read. Each process logs to `<name>.log` beside it: a
pipe nobody reads would fill up and stall it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import sys
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import IO

import aiohttp

from tests.fakes.slack_api import sign
from tests.support.redis_proc import free_port
from tests.support.waiting import wait_until

__all__ = ["GatewayProcess", "ProcessGroup", "gateway_command", "start_gateway"]

_LEAKY = ("REDIS_", "OPENAI_", "SLACK_", "DISCORD_", "HTTP", "http", "ALL_PROXY", "all_proxy", "NO_PROXY", "no_proxy")


def gateway_command() -> list[str]:
    """The installed `chat-gateway` console script of this interpreter's environment."""
    script = Path(sys.executable).with_name("chat-gateway")
    if script.exists():
        return [str(script)]
    found = shutil.which("chat-gateway")
    return [found] if found else [sys.executable, "-c", "from bots.cli import main; main()"]


class GatewayProcess:
    """One running `chat-gateway run <adapters>`; `port` is Slack HTTP mode's, `health_port` the probes'."""

    def __init__(
        self,
        proc: asyncio.subprocess.Process,
        *,
        name: str,
        port: int,
        health_port: int,
        log_path: Path,
        log: IO[bytes],
    ) -> None:
        self.proc, self.name, self.port, self.health_port = proc, name, port, health_port
        self.log_path = log_path
        self._log = log

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def running(self) -> bool:
        return self.proc.returncode is None

    def log_tail(self, chars: int = 4000) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")[-chars:]

    async def ready(self) -> bool:
        """Whether /readyz says ready; a process that has exited fails the test with its log."""
        if not self.running:
            raise AssertionError(f"{self.name} exited with {self.proc.returncode}:\n{self.log_tail()}")
        try:
            async with (
                aiohttp.ClientSession() as session,
                session.get(f"http://127.0.0.1:{self.health_port}/readyz") as response,
            ):
                return response.status == 200
        except aiohttp.ClientError:
            return False

    async def wait_ready(self, timeout: float = 60) -> None:
        try:
            await wait_until(self.ready, timeout=timeout, every=0.1)
        except TimeoutError:
            raise AssertionError(f"{self.name} not ready within {timeout}s:\n{self.log_tail()}") from None

    async def post_slack_event(self, body: bytes, secret: str, *, retry_num: int = 0) -> int:
        """POST a signed Events API body to /slack/events; the HTTP status."""
        headers = {"Content-Type": "application/json", **sign(body.decode(), secret)}
        if retry_num:
            headers |= {"X-Slack-Retry-Num": str(retry_num), "X-Slack-Retry-Reason": "http_timeout"}
        async with (
            aiohttp.ClientSession() as session,
            session.post(f"http://127.0.0.1:{self.port}/slack/events", data=body, headers=headers) as response,
        ):
            await response.read()
            return response.status

    def kill(self) -> None:
        """SIGKILL: no drain, no release, nothing flushed; what the process held is left to the others."""
        if self.running:
            self.proc.send_signal(signal.SIGKILL)

    def terminate(self) -> None:
        """SIGTERM: the CLI stops intake, drains for SHUTDOWN_GRACE_SECONDS, releases the rest, exits 0."""
        if self.running:
            self.proc.send_signal(signal.SIGTERM)

    async def wait(self, timeout: float) -> int:
        """The exit code once the process has ended (-9 after a SIGKILL)."""
        try:
            code = await asyncio.wait_for(self.proc.wait(), timeout)
        except TimeoutError:
            tail = self.log_tail()
            self.kill()  # leave no process behind
            await self.proc.wait()
            raise AssertionError(f"{self.name} still running after {timeout}s:\n{tail}") from None
        finally:
            if not self.running:
                self._log.close()
        return code


async def start_gateway(
    directory: Path, adapters: Sequence[str], env: Mapping[str, str], *, name: str = "gateway"
) -> GatewayProcess:
    """Start `chat-gateway run <adapters>` in `directory` with exactly `env` (plus ports) as its settings."""
    port, health_port = free_port(), free_port()
    directory.mkdir(parents=True, exist_ok=True)
    clean = {k: v for k, v in os.environ.items() if not k.startswith(_LEAKY)}
    settings = {"PORT": str(port), "HEALTH_PORT": str(health_port), "HEALTH_HOST": "127.0.0.1", **env}
    log_path = directory / f"{name}.log"
    log = log_path.open("ab")
    proc = await asyncio.create_subprocess_exec(
        *gateway_command(), "run", *adapters, cwd=directory, env={**clean, **settings},
        stdin=asyncio.subprocess.DEVNULL, stdout=log, stderr=log,
    )  # fmt: skip
    return GatewayProcess(proc, name=name, port=port, health_port=health_port, log_path=log_path, log=log)


class ProcessGroup:
    """The processes a test starts; `stop()` ends those still running with SIGTERM and checks they exit 0."""

    def __init__(self, directory: Path, adapters: Sequence[str], env: Mapping[str, str]) -> None:
        self.directory, self.adapters, self.env = directory, list(adapters), dict(env)
        self.started: list[GatewayProcess] = []

    async def start(self, name: str, **env: str) -> GatewayProcess:
        process = await start_gateway(self.directory, self.adapters, {**self.env, **env}, name=name)
        self.started.append(process)
        return process

    async def start_ready(self, name: str, **env: str) -> GatewayProcess:
        process = await self.start(name, **env)
        await process.wait_ready()
        return process

    async def stop(self, timeout: float = 30) -> None:
        for process in self.started:
            process.terminate()
        failures = []
        for process in self.started:
            try:
                code = await process.wait(timeout)
            except AssertionError as exc:
                failures.append(str(exc))
                continue
            if code not in (0, -signal.SIGKILL):  # killed on purpose, or stopped cleanly: nothing else
                failures.append(f"{process.name} exited with {code}:\n{process.log_tail(2000)}")
        assert not failures, "\n".join(failures)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[ProcessGroup]:
        try:
            yield self
        finally:
            await self.stop()
