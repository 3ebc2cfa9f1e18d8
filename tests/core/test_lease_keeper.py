"""The lease keeper: renewals, the guarded work stopped once the lease is lost, outside cancellation passed through."""

from __future__ import annotations

import asyncio

import pytest

from core.lease_keeper import LeaseKeeper, LeaseLostError
from core.store.inbox import Lease

LEASE = Lease(None, "t1", "1-0", "m1", "gw-test", 1)


class RenewingInbox:
    """Only what the keeper calls: `renew` answers `held`, `schedule` is counted."""

    def __init__(self, lease_seconds: float, *, held: bool = True) -> None:
        self.lease_seconds = lease_seconds
        self.held = held
        self.renewals = 0
        self.scheduled = 0

    async def renew(self, lease: Lease) -> bool:
        self.renewals += 1
        return self.held

    async def schedule(self, namespace: str | None, thread_id: str, at: float) -> str:
        self.scheduled += 1
        return "0"


async def test_renews_every_third_of_the_lease_while_the_work_runs() -> None:
    inbox = RenewingInbox(0.15)
    async with LeaseKeeper(inbox, LEASE) as keeper:  # type: ignore[arg-type]
        await keeper.guard(asyncio.sleep(0.4))
    assert inbox.renewals >= 3 and inbox.scheduled == inbox.renewals
    assert not keeper.lost.is_set()


async def test_the_work_is_stopped_when_the_lease_is_taken_over() -> None:
    inbox = RenewingInbox(0.15, held=False)
    stopped = asyncio.Event()

    async def work() -> None:
        try:
            await asyncio.sleep(30)
        finally:
            stopped.set()

    async with LeaseKeeper(inbox, LEASE) as keeper:  # type: ignore[arg-type]
        with pytest.raises(LeaseLostError):
            await asyncio.wait_for(keeper.guard(work()), 5)
    assert stopped.is_set() and keeper.lost.is_set() and keeper.expired
    assert asyncio.current_task() is not None and asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]


async def test_the_callers_own_cancellation_is_not_a_lost_lease() -> None:
    inbox = RenewingInbox(30)
    started = asyncio.Event()

    async def turn() -> None:
        async with LeaseKeeper(inbox, LEASE) as keeper:  # type: ignore[arg-type]
            started.set()
            await keeper.guard(asyncio.sleep(30))

    task = asyncio.create_task(turn())
    await started.wait()
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
