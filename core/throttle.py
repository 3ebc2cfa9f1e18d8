"""Throttled progress for streamed replies: platforms rate-limit edits, so show the newest text now and then."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

__all__ = ["ProgressThrottle"]


class ProgressThrottle:
    """Forwards the newest text to `send` at most once per interval; adapters post the final text themselves."""

    def __init__(
        self,
        send: Callable[[str], Awaitable[None]],
        interval_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._send = send
        self._interval = interval_seconds
        self._clock = clock
        self._last_sent: float | None = None
        self.sent = 0

    async def __call__(self, text: str) -> None:
        now = self._clock()
        if self._last_sent is not None and now - self._last_sent < self._interval:
            return
        self._last_sent = now
        self.sent += 1
        await self._send(text)
