"""Streaming progress off the turn's critical path: the model never waits for a platform's edit.

`update(text)` only records the newest text; one task of its own sends it, at most once per interval,
so a slow, failed or rate-limited edit delays nothing but the next edit. `close()` lets an edit in
flight end (bounded) so the final post never races a late preview.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

__all__ = ["ProgressPump"]

log = logging.getLogger(__name__)


class ProgressPump:
    def __init__(self, send: Callable[[str], Awaitable[None]], interval_seconds: float) -> None:
        self._send = send
        self._interval = interval_seconds
        self._latest: str | None = None
        self._shown: str | None = None
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._sending = False
        self._closed = False
        self.sent = 0

    async def update(self, text: str) -> None:
        """Record the text so far; returns at once."""
        if self._closed:
            return
        self._latest = text
        self._changed.set()
        if self._task is None:
            self._task = asyncio.create_task(self._pump(), name="progress")
        # A model stream read from one buffer never yields on its own: let the pump have its turn.
        await asyncio.sleep(0)

    async def _pump(self) -> None:
        last = 0.0
        while True:
            await self._changed.wait()
            wait = last + self._interval - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)  # the platform's edit rate, not synchronisation
            self._changed.clear()
            text = self._latest
            if text is None or text == self._shown:
                continue
            last = time.monotonic()
            self._sending = True
            try:
                await self._send(text)
            except Exception:  # a writer's progress should not raise; if it does, previews stop, the turn goes on
                log.warning("progress stopped: the writer raised", exc_info=True)
                return
            finally:
                self._sending = False
            self._shown = text
            self.sent += 1
            if self._closed:
                return

    async def close(self, timeout_seconds: float = 5.0) -> None:
        """Stop sending; an edit already under way may finish within `timeout_seconds`."""
        self._closed = True
        task, self._task = self._task, None
        if task is None:
            return
        if not self._sending:
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError, TimeoutError):
            await asyncio.wait_for(task, timeout_seconds)
