"""A terminal chat on the shared gateway, for local use: the embedded default's front door.

The same `--user`/`--channel` pair resumes the same memory after a restart. Replies stream to the
terminal as the model writes them.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import threading
from typing import TextIO
from uuid import uuid4

from core.gateway import Gateway
from core.turns import IncomingMessage

__all__ = ["ConsoleAdapter"]

PROMPT = "you> "


class ConsoleAdapter:
    name = "console"

    def __init__(
        self,
        gateway: Gateway,
        *,
        user_id: str = "local",
        channel_id: str = "console",
        stdin: TextIO | None = None,
        stdout: TextIO | None = None,
    ) -> None:
        self._gateway = gateway
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
                    async with self._gateway.in_flight():
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

    async def _turn(self, text: str) -> None:
        shown = ""

        async def progress(so_far: str) -> None:
            nonlocal shown
            if not shown:
                self._write("bot> ")
            self._write(so_far[len(shown) :])
            shown = so_far

        reply = await self._gateway.handle(self._incoming(text), on_progress=progress)
        if reply is None:
            return
        if shown and reply.text.startswith(shown):
            self._write(reply.text[len(shown) :] + "\n")
        else:
            self._write(("\n" if shown else "") + f"bot> {reply.text}\n")
