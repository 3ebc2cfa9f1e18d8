"""Waiting on a condition with a deadline, for state only observable by asking (TTL expiry, failover)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

__all__ = ["wait_until"]


async def wait_until(condition: Callable[[], Awaitable[bool]], *, timeout: float = 10, every: float = 0.05) -> None:
    """Re-check `condition` until it holds; fail with TimeoutError after `timeout` seconds."""
    async with asyncio.timeout(timeout):
        while not await condition():
            await asyncio.sleep(every)  # polling interval, not synchronisation: the deadline is the contract
