"""Keeping a turn's lease while it runs, and stopping the turn the moment the lease is gone.

Renewal runs every third of the lease; a failed renewal is retried until the lease's deadline has
passed (a Redis blip must not cost a live turn its lease). The lease is lost when the inbox says it
belongs to someone else, or when the deadline passes unrenewed: from then on another process may
answer the message, so this one must stop and post nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable
from types import TracebackType
from typing import TypeVar

from core.errors import GatewayError, StoreError
from core.store.inbox import Inbox, Lease

__all__ = ["LeaseKeeper", "LeaseLostError"]

log = logging.getLogger(__name__)
T = TypeVar("T")
_RETRY_SECONDS = 0.2


class LeaseLostError(GatewayError):
    """Another process may be answering this message now; this turn stops and posts nothing."""


class LeaseKeeper:
    """Renews `lease` while the block runs; `guard` stops the work it awaits once the lease is lost.

    A turn usually ends well within a renewal period: a timer, not a task, waits for the first renewal,
    and `guard` runs the work in the caller's own task (cancelled, as asyncio.timeout does, if the lease
    goes), so keeping a lease costs a turn no task of its own.
    """

    def __init__(self, inbox: Inbox, lease: Lease) -> None:
        self._inbox = inbox
        self.lease = lease
        self._seconds = inbox.lease_seconds
        self.deadline = time.monotonic() + self._seconds
        self.lost = asyncio.Event()
        self._timer: asyncio.TimerHandle | None = None
        self._task: asyncio.Task[None] | None = None
        self._guarded: asyncio.Task[object] | None = None  # the task in `guard`, cancelled if the lease goes
        self._stopped_work = False
        # Checked as well as cancelling: on Python 3.11, asyncio.wait_for (redis-py sends with it) swallows a
        # cancellation that lands as the send completes, and a keeper that missed it would renew for ever.
        self._stopping = False

    @property
    def expired(self) -> bool:
        return self.lost.is_set() or time.monotonic() >= self.deadline

    async def __aenter__(self) -> LeaseKeeper:
        self._schedule()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stopping = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def guard(self, work: Awaitable[T]) -> T:
        """Await `work`, cancelling it if the lease is lost first.

        Raises:
            LeaseLostError: the lease went before `work` ended.
        """
        current = asyncio.current_task()
        if current is None or self._guarded is not None:
            raise RuntimeError("LeaseKeeper.guard needs a task of its own, one work at a time")
        if self.lost.is_set():
            if asyncio.iscoroutine(work):
                work.close()
            raise LeaseLostError(f"lost the lease on {self.lease.message_key} while answering it")
        self._guarded = current
        try:
            result = await work
        except asyncio.CancelledError:
            if self._stopped_work and current.uncancel() == 0:  # our cancellation, not the caller's
                raise LeaseLostError(f"lost the lease on {self.lease.message_key} while answering it") from None
            raise
        finally:
            self._guarded = None
        if self._stopped_work:  # the work swallowed our cancellation: the lease is gone all the same
            current.uncancel()
            raise LeaseLostError(f"lost the lease on {self.lease.message_key} while answering it")
        return result

    def _schedule(self) -> None:
        """The next renewal, a third of the lease from now (the renewal period, not synchronisation)."""
        self._timer = asyncio.get_running_loop().call_later(self._seconds / 3, self._due)

    def _due(self) -> None:
        self._timer = None
        if not self._stopping:
            self._task = asyncio.create_task(self._keep(), name=f"lease-{self.lease.message_key}")

    async def _keep(self) -> None:
        if self._stopping:
            return
        if await self._renew():
            if not self._stopping:
                self._schedule()
        elif not self._stopping:
            self._lose()

    def _lose(self) -> None:
        self.lost.set()
        if self._guarded is not None and not self._stopped_work:
            self._stopped_work = True
            self._guarded.cancel()

    async def _renew(self) -> bool:
        while not self._stopping:
            left = self.deadline - time.monotonic()
            if left <= 0:
                log.warning("lease expired unrenewed", extra={"message_key": self.lease.message_key})
                return False
            try:
                async with asyncio.timeout(left):
                    held = await self._inbox.renew(self.lease)
            except (StoreError, TimeoutError) as exc:
                log.info("lease renewal failed, retrying: %s", exc, extra={"message_key": self.lease.message_key})
                await asyncio.sleep(min(_RETRY_SECONDS, max(self.deadline - time.monotonic(), 0)))
                continue
            if not held:
                log.warning("lease taken over by another process", extra={"message_key": self.lease.message_key})
                return False
            self.deadline = time.monotonic() + self._seconds
            with contextlib.suppress(StoreError):  # the index is for recovery; a miss is mended by the next renewal
                await self._inbox.schedule(self.lease.namespace, self.lease.thread_id, time.time() + self._seconds)
            return True
        return True  # the turn is over: nothing to keep
