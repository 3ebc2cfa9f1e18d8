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
    def __init__(self, inbox: Inbox, lease: Lease) -> None:
        self._inbox = inbox
        self.lease = lease
        self._seconds = inbox.lease_seconds
        self.deadline = time.monotonic() + self._seconds
        self.lost = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        # Checked as well as cancelling: on Python 3.11, asyncio.wait_for (redis-py sends with it) swallows a
        # cancellation that lands as the send completes, and a keeper that missed it would renew for ever.
        self._stopping = False

    @property
    def expired(self) -> bool:
        return self.lost.is_set() or time.monotonic() >= self.deadline

    async def __aenter__(self) -> LeaseKeeper:
        self._task = asyncio.create_task(self._keep(), name=f"lease-{self.lease.message_key}")
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._task is not None:
            self._stopping = True
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def guard(self, work: Awaitable[T]) -> T:
        """Await `work`, cancelling it if the lease is lost first.

        Raises:
            LeaseLostError: the lease went before `work` ended.
        """
        task = asyncio.ensure_future(work)
        lost = asyncio.ensure_future(self.lost.wait())
        try:
            await asyncio.wait({task, lost}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            lost.cancel()
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if task.cancelled():
            raise LeaseLostError(f"lost the lease on {self.lease.message_key} while answering it")
        return task.result()

    async def _keep(self) -> None:
        while not self._stopping:
            await asyncio.sleep(self._seconds / 3)  # the renewal period, not synchronisation
            if not self._stopping and not await self._renew():
                self.lost.set()
                return

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
