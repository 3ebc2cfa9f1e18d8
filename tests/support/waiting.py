"""Waiting on a condition with a deadline, for state only observable by asking (TTL expiry, failover)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

__all__ = ["in_one_rate_window", "wait_until"]


async def wait_until(condition: Callable[[], Awaitable[bool]], *, timeout: float = 10, every: float = 0.05) -> None:
    """Re-check `condition` until it holds; fail with TimeoutError after `timeout` seconds."""
    async with asyncio.timeout(timeout):
        while not await condition():
            await asyncio.sleep(every)  # polling interval, not synchronisation: the deadline is the contract


async def in_one_rate_window(seconds: float = 10.0) -> None:
    """Start a rate-limit test with at least `seconds` left in the current minute.

    The rate window is the wall-clock minute (`time.time() // 60`, shared by every process): a test whose
    messages straddle a minute boundary would see the count start again. This aligns to the clock; it
    does not wait for the system under test.
    """
    left = 60 - time.time() % 60
    if left < seconds:
        await asyncio.sleep(left + 0.05)
