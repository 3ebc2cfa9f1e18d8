"""One turn at a time per thread, in arrival order, across every process sharing the backend.

Inside a process, `reserve()` takes a place in the thread's queue synchronously, the moment a
message arrives, so the awaits that follow (event claim, rate limit) cannot reorder turns. Across
processes, the backend's turn lock (owner token, expiry) decides, renewed while a long turn runs so
it never expires under a live owner.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from types import TracebackType

from core.errors import GatewayError
from core.store.base import MemoryBackend, TurnLock

__all__ = ["ThreadBusyError", "ThreadTurns", "TurnTicket"]

log = logging.getLogger(__name__)
_Key = tuple[str | None, str]


class ThreadBusyError(GatewayError):
    """Another turn of this thread held it for longer than we could wait."""

    user_message = "I'm still working on an earlier message in this conversation. Please send this again shortly."


class TurnTicket:
    """A place in one thread's queue. `async with ticket:` runs the turn; `done()` gives the place up."""

    def __init__(self, turns: ThreadTurns, key: _Key, before: asyncio.Future[None] | None) -> None:
        self._turns = turns
        self._key = key
        self._before = before
        self._mine: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._lock: TurnLock | None = None
        self._renewing: asyncio.Task[None] | None = None

    @property
    def future(self) -> asyncio.Future[None]:
        return self._mine

    async def __aenter__(self) -> None:
        namespace, thread_id = self._key
        try:
            async with asyncio.timeout(self._turns.wait_seconds):
                if self._before is not None:
                    await asyncio.shield(self._before)
                lock = self._turns.backend.turn_lock(namespace, thread_id, self._turns.expire_seconds)
                if not await lock.acquire(self._turns.wait_seconds):
                    raise ThreadBusyError(f"the turn lock of {thread_id} stayed taken")
        except TimeoutError:
            self.done()
            raise ThreadBusyError(f"waited {self._turns.wait_seconds}s for the turn of {thread_id}") from None
        except BaseException:
            self.done()
            raise
        self._lock = lock
        self._renewing = asyncio.create_task(self._renew(lock), name=f"renew-turn-{thread_id}")

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            if self._renewing is not None:
                self._renewing.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._renewing
            if self._lock is not None:
                await asyncio.shield(self._lock.release())
        finally:
            self.done()

    def done(self) -> None:
        """Let the next turn of the thread go; safe to call more than once."""
        if not self._mine.done():
            self._mine.set_result(None)
        self._turns.forget(self._key, self._mine)

    async def _renew(self, lock: TurnLock) -> None:
        while True:
            await asyncio.sleep(self._turns.expire_seconds / 3)  # renewal period, not synchronisation
            if not await lock.extend():
                log.warning("lost the turn lock of %s while the turn ran (it expired)", self._key[1])
                return


class ThreadTurns:
    def __init__(self, backend: MemoryBackend, *, expire_seconds: float, wait_seconds: float) -> None:
        self.backend = backend
        self.expire_seconds = expire_seconds
        self.wait_seconds = wait_seconds
        self._tails: dict[_Key, asyncio.Future[None]] = {}

    def reserve(self, namespace: str | None, thread_id: str) -> TurnTicket:
        """Queue a turn now, before any await, so arrival order is the order turns run in."""
        key = (namespace, thread_id)
        ticket = TurnTicket(self, key, self._tails.get(key))
        self._tails[key] = ticket.future
        return ticket

    def forget(self, key: _Key, future: asyncio.Future[None]) -> None:
        # Bounded memory: only threads with turns queued or running keep an entry.
        if self._tails.get(key) is future:
            del self._tails[key]

    @property
    def queued_threads(self) -> int:
        return len(self._tails)
