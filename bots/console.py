"""A terminal chat on the shared gateway, for local use: the embedded default's front door.

The same `--user`/`--channel` pair resumes the same memory after a restart. Messages take the same
delivery path as any platform's (inbox, lease, commit); replies stream to the terminal as the model
writes them.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from typing import TextIO
from uuid import uuid4

from core.delivery import Delivery
from core.errors import GatewayError
from core.gateway import Gateway
from core.turns import IncomingMessage

__all__ = ["ConsoleAdapter"]

PROMPT = "you> "


class ConsoleAdapter:
    name = "console"

    def __init__(
        self,
        gateway: Gateway,
        delivery: Delivery,
        *,
        user_id: str = "local",
        channel_id: str = "console",
        stdin: TextIO | None = None,
        stdout: TextIO | None = None,
    ) -> None:
        self._gateway = gateway
        self._delivery = delivery
        self._answered: dict[str, asyncio.Future[None]] = {}
        self._user_id = user_id
        self._channel_id = channel_id
        self._stdin = stdin or sys.stdin
        self._stdout = stdout or sys.stdout
        self._connected = False

    @property
    def connected(self) -> bool:
        return self._connected

    def _write(self, text: str) -> None:
        self._stdout.write(text)
        self._stdout.flush()

    async def run(self) -> None:
        """Chat until end of input (Ctrl-D) or cancellation."""
        self._connected = True
        self._delivery.serve("console", self._writer)
        thread_id = self._gateway.thread_id(self._incoming(""))
        self._write(f"chat-gateway console — conversation {thread_id}. Type `help`; Ctrl-D quits.\n")
        lines = self._read_lines()
        try:
            while True:
                self._write(PROMPT)
                line = await lines.get()
                if line is None:
                    self._write("\n")
                    return
                if line.strip():
                    await self._turn(line.rstrip("\n"))
        finally:
            self._connected = False

    def _read_lines(self) -> asyncio.Queue[str | None]:
        """Lines of stdin, read by a daemon thread: a blocked read must neither stall the loop nor delay exit."""
        loop = asyncio.get_running_loop()
        lines: asyncio.Queue[str | None] = asyncio.Queue()

        def read() -> None:
            with contextlib.suppress(RuntimeError):  # the loop closed first: nobody is listening any more
                for line in iter(self._stdin.readline, ""):
                    loop.call_soon_threadsafe(lines.put_nowait, line)
                loop.call_soon_threadsafe(lines.put_nowait, None)

        threading.Thread(target=read, name="console-stdin", daemon=True).start()
        return lines

    def _incoming(self, text: str) -> IncomingMessage:
        return IncomingMessage(
            platform="console", event_id=uuid4().hex, user_id=self._user_id, channel_id=self._channel_id, text=text
        )

    def _writer(self, incoming: IncomingMessage) -> ConsoleWriter:
        done = self._answered.get(incoming.dedupe_key)
        return ConsoleWriter(self._write, done)

    async def _turn(self, text: str) -> None:
        incoming = self._incoming(text)
        done = self._answered[incoming.dedupe_key] = asyncio.get_running_loop().create_future()
        try:
            if await self._delivery.receive(incoming) != "ignored":
                await done
        except GatewayError as exc:  # not stored: say so, and the next line is a fresh try
            self._write(f"bot> {exc.user_message}\n")
        finally:
            del self._answered[incoming.dedupe_key]


class ConsoleWriter:
    """Prints the reply as it grows, then the rest of the exact final text."""

    def __init__(self, write: Callable[[str], None], done: asyncio.Future[None] | None) -> None:
        self._write = write
        self._done = done
        self._shown = ""
        self.posted: list[str] = []

    def resume(self, posted: Sequence[str]) -> None:
        self.posted = list(posted)

    async def progress(self, text: str) -> None:
        if not self._shown:
            self._write("bot> ")
            self.posted.append("terminal")
        if text.startswith(self._shown):
            self._write(text[len(self._shown) :])
            self._shown = text

    async def finish(self, text: str) -> None:
        if self._shown and text.startswith(self._shown):
            self._write(text[len(self._shown) :] + "\n")
        else:
            self._write(("\n" if self._shown else "") + f"bot> {text}\n")
        self._settle()

    async def notice(self, text: str) -> None:
        self._write(f"\n{text}\n")
        self._settle()

    @contextlib.asynccontextmanager
    async def working(self) -> AsyncIterator[None]:
        yield

    def _settle(self) -> None:
        if self._done is not None and not self._done.done():
            self._done.set_result(None)
