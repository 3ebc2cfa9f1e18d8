"""Memory stays bounded: 20,000 conversations through the gateway, capped, then expired back to baseline."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from redis.asyncio import Redis

from core.gateway import Gateway
from core.llm import OfflineChatModel
from core.store import open_backend
from core.turns import IncomingMessage
from tests.conftest import make_settings
from tests.support.redis_proc import RedisServer
from tests.support.waiting import wait_until

THREADS = 20_000
BUSY_THREADS, BUSY_TURNS = 40, 14
CAP, TTL = 10, 20  # the TTL outlasts the load (about 15 s on 2 cores), then everything must go


@pytest.mark.slow
async def test_twenty_thousand_threads_stay_capped_and_expire_back_to_baseline(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "redis")
    server.start()
    admin = Redis.from_url(server.url)
    settings = make_settings(
        redis_url=server.url, max_messages=CAP, thread_ttl_seconds=TTL, dedupe_ttl_seconds=TTL,
        rate_limit_per_minute=0,  # its per-minute counters would outlive the TTL under test
    )  # fmt: skip
    gateway = Gateway(settings, open_backend(settings), OfflineChatModel())
    try:
        baseline_keys = await admin.dbsize()
        baseline_memory = (await admin.info("memory"))["used_memory"]
        limit = asyncio.Semaphore(200)

        async def turn(user: int, n: int) -> None:
            async with limit:
                reply = await gateway.handle(IncomingMessage("soak", f"E{user}-{n}", f"U{user}", "C1", f"hi {n}"))
                assert reply is not None and reply.kind == "answer", reply

        await asyncio.gather(*(turn(user, 0) for user in range(THREADS)))
        for n in range(BUSY_TURNS):  # a few long conversations push against the cap
            await asyncio.gather(*(turn(user, n + 1) for user in range(BUSY_THREADS)))

        keys = [key async for key in admin.scan_iter(match="chat:soak:*:messages", count=2000)]
        lengths: list[int] = []
        for start in range(0, len(keys), 1000):
            async with admin.pipeline(transaction=False) as pipe:
                for key in keys[start : start + 1000]:
                    pipe.llen(key)
                lengths += await pipe.execute()
        assert len(lengths) == THREADS
        assert max(lengths) == CAP  # the busy threads hit the cap and never pass it
        peak_memory = (await admin.info("memory"))["used_memory"]
        assert peak_memory > baseline_memory + THREADS * 100  # the load was real

        async def back_to_baseline() -> bool:
            return await admin.dbsize() == baseline_keys

        await wait_until(back_to_baseline, timeout=60, every=0.5)
        settled = (await admin.info("memory"))["used_memory"]
        assert settled - baseline_memory < 2 * 1024 * 1024, (baseline_memory, peak_memory, settled)
        assert gateway.backend is not None and not gateway._turns.queued_threads  # no per-thread state left
    finally:
        await gateway.backend.aclose()
        await admin.aclose()
        server.stop()
