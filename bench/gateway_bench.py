"""Core overhead: a message through `Delivery` (inbox, lease, answer, commit, post, finish) minus the model's time,
on a real Redis.

The model answers at once (in-process, no HTTP) and the platform is a writer that posts nothing, so
what is measured is the core itself: from `Delivery.receive` (the intake script: dedupe, rate window,
inbox append, lease, history) to the delivery runner's report once the turn is committed, "posted"
and finished. Two loads per conversation count:

- closed loop: every conversation sends its next message as soon as the last is answered, so all N
  are in flight at once; latency then includes queueing behind the other N-1 on one event loop (and,
  past MAX_CONCURRENT_TURNS, in the inbox);
- open loop: messages from N open conversations arrive at a fixed rate (half the closed-loop
  capacity), the way chat traffic arrives; this is the overhead a user sees.

Also printed: Redis calls per turn (commands sent on the client sockets; calls in flight together
count one each), Redis memory per open conversation (its keys: history,
recent write IDs, the inbox stream and the turn records kept for dedupe) and gateway process memory
per open conversation. Without --redis-url a redis-server is started on a free port.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import resource
import sys
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any
from uuid import uuid4

from redis.asyncio import BlockingConnectionPool, Redis

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.redis_server import run_with_redis
from bench.store_bench import ROUND_TRIPS, CountingConnection
from core.agent import AgentFactory
from core.delivery import Delivery, TurnOutcome
from core.gateway import Gateway
from core.messages import ChatMessage
from core.settings import Settings
from core.store import RedisConnection
from core.turns import IncomingMessage

PLATFORM = "bench"


class InstantModel(AgentFactory):
    """Answers at once and keeps the time it spent, so it can be taken out of the turn."""

    model_id = "instant"

    def __init__(self) -> None:
        self.seconds = 0.0

    async def complete(self, messages: Sequence[ChatMessage]) -> str:
        started = time.perf_counter()
        text = f"answer to {messages[-1].text[:40]}"
        self.seconds += time.perf_counter() - started
        return text

    async def stream(self, messages: Sequence[ChatMessage]) -> AsyncIterator[str]:
        yield await self.complete(messages)


class NullWriter:
    """A platform that takes every post at once: the core's own cost is what is left."""

    def __init__(self, incoming: IncomingMessage) -> None:
        self._key = incoming.dedupe_key
        self.posted: list[str] = []

    def resume(self, posted: Sequence[str]) -> None:
        self.posted = list(posted[:1])

    async def progress(self, text: str) -> None:
        """No previews: a preview would be the platform's cost."""

    async def finish(self, text: str) -> None:
        if not self.posted:
            self.posted.append(f"r-{self._key}")

    async def notice(self, text: str) -> None:
        raise AssertionError(f"the turn of {self._key} failed: {text}")

    @contextlib.asynccontextmanager
    async def working(self) -> AsyncIterator[None]:
        yield


class Bench:
    """A gateway and its delivery runner; `turn` sends one message and waits for the runner's report."""

    def __init__(self, gateway: Gateway, model: InstantModel, max_turns: int) -> None:
        self.model = model
        settings = gateway.settings
        inbox = gateway.backend.inbox(lease_seconds=settings.lock_timeout_seconds,
                                      keep_seconds=settings.dedupe_ttl_seconds)  # fmt: skip
        self.delivery = Delivery(gateway, inbox, max_turns=max_turns, on_outcome=self._reported)
        self.delivery.serve(PLATFORM, NullWriter)
        self._waiting: dict[str, asyncio.Future[TurnOutcome]] = {}
        self._runner: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Bench:
        self._runner = asyncio.create_task(self.delivery.run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.delivery.drain(5)
        if self._runner is not None:
            self._runner.cancel()
            await asyncio.gather(self._runner, return_exceptions=True)

    def _reported(self, outcome: TurnOutcome) -> None:
        future = self._waiting.pop(outcome.event_id, None)
        if future is not None and not future.done():
            future.set_result(outcome)

    async def turn(self, incoming: IncomingMessage, out: list[float]) -> None:
        done = self._waiting[incoming.event_id] = asyncio.get_running_loop().create_future()
        model_before = self.model.seconds
        started = time.perf_counter()
        await self.delivery.receive(incoming)
        outcome = await asyncio.wait_for(done, 60)
        elapsed = time.perf_counter() - started
        assert outcome.result == "answered" and outcome.reply is not None and outcome.reply.kind == "answer", outcome
        out.append(elapsed - (self.model.seconds - model_before))


def message(conversation: int, n: int) -> IncomingMessage:
    return IncomingMessage(
        platform=PLATFORM, event_id=uuid4().hex, user_id=f"U{conversation}", channel_id="C1", text=f"message {n}"
    )


async def closed_loop(bench: Bench, conversations: int, turns: int) -> tuple[float, list[float]]:
    overheads: list[float] = []

    async def conversation(c: int) -> None:
        for n in range(turns):
            await bench.turn(message(c, n), overheads)

    started = time.perf_counter()
    await asyncio.gather(*(conversation(c) for c in range(conversations)))
    return len(overheads) / (time.perf_counter() - started), overheads


async def open_loop(bench: Bench, conversations: int, rate: float, count: int) -> list[float]:
    overheads: list[float] = []
    tasks: list[asyncio.Task[None]] = []
    started = time.perf_counter()
    for i in range(count):
        delay = started + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)  # pacing the arrivals is the point of an open-loop load
        incoming = message(i % conversations, i // conversations)
        tasks.append(asyncio.create_task(bench.turn(incoming, overheads)))
    await asyncio.gather(*tasks)
    return overheads


async def key_bytes(admin: Redis, prefix: str) -> int:
    """What the conversations' keys take in Redis (MEMORY USAGE), without connection buffers."""
    total = 0
    async for key in admin.scan_iter(match=f"{prefix}*", count=1000):
        total += await admin.memory_usage(key) or 0
    return total


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))] * 1000


async def run(args: argparse.Namespace) -> None:
    admin = Redis.from_url(args.redis_url)
    rows: list[tuple[Any, ...]] = []
    for conversations in args.conversations:
        prefix = f"gbench{uuid4().hex[:8]}"
        settings = Settings(_env_file=None, redis_url=args.redis_url, key_prefix=prefix, rate_limit_per_minute=0,  # type: ignore[call-arg]
                            max_messages=20)  # fmt: skip
        client = Redis.from_pool(  # a bounded, waiting pool, as the gateway builds it (REDIS_POOL_SIZE)
            BlockingConnectionPool.from_url(args.redis_url, connection_class=CountingConnection,
                                            max_connections=args.pool_size, timeout=30)
        )  # fmt: skip
        backend = RedisConnection(client, key_prefix=prefix, max_messages=20, ttl_seconds=3600, owns_client=True)
        model = InstantModel()
        gateway = Gateway(settings, backend, model)
        async with Bench(gateway, model, args.max_turns or settings.max_concurrent_turns) as bench:
            await closed_loop(bench, min(conversations, 8), 5)  # warm-up: scripts loaded, pool filled
            gc.collect()
            rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            ROUND_TRIPS[0] = 0
            rate, closed = await closed_loop(bench, conversations, args.turns)
            round_trips = ROUND_TRIPS[0] / len(closed)
            redis_per_conversation = await key_bytes(admin, prefix) / conversations
            rss_growth = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before) * 1024 / conversations
            opened = await open_loop(bench, conversations, rate * args.open_load, args.open_turns)
        rows.append((conversations, rate, percentile(closed, 0.5), percentile(closed, 0.99),
                     rate * args.open_load, percentile(opened, 0.5), percentile(opened, 0.99), round_trips,
                     redis_per_conversation, rss_growth))  # fmt: skip
        await backend.aclose()
        async for key in admin.scan_iter(match=f"{prefix}*", count=1000):
            await admin.delete(key)
    await admin.aclose()
    report(rows, args)


def report(rows: list[tuple[Any, ...]], args: argparse.Namespace) -> None:
    turns = args.max_turns or "MAX_CONCURRENT_TURNS"
    print(f"gateway_bench: instant model, max_messages 20, {args.turns} turns per conversation (closed loop), "
          f"{args.open_turns} arrivals at {args.open_load:.0%} of capacity (open loop), "
          f"{turns} turns in flight")  # fmt: skip
    header = ("convs", "turns/s", "closed p50", "closed p99", "open rate/s", "open p50", "open p99",
              "calls/turn", "redis B/conv", "rss B/conv")  # fmt: skip
    print("".join(f"{h:>13}" for h in header))
    for row in rows:
        print(f"{row[0]:>13}" + "".join(f"{v:>13.2f}" for v in row[1:8]) + f"{row[8]:>13.0f}{row[9]:>13.0f}")
    print("overheads in ms (receive to the runner's report, minus model time); "
          "target: p99 under 2 ms at 256 open conversations")  # fmt: skip


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--redis-url", help="default: start a redis-server on a free port")
    parser.add_argument("--conversations", type=int, nargs="+", default=[1, 32, 256])
    parser.add_argument("--turns", type=int, default=20, help="closed-loop turns per conversation")
    parser.add_argument("--open-turns", type=int, default=3000, help="open-loop arrivals")
    parser.add_argument("--open-load", type=float, default=0.5, help="open-loop rate as a share of capacity")
    parser.add_argument("--pool-size", type=int, default=300, help="Redis connections at most")
    parser.add_argument("--max-turns", type=int, default=0, help="turns in flight (default: MAX_CONCURRENT_TURNS)")
    return parser.parse_args()


if __name__ == "__main__":
    run_with_redis(run, parse_args())
