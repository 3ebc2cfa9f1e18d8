"""Gateway overhead: a turn through `Gateway.handle` minus the model's time, on a real Redis.

The model answers at once (in-process, no HTTP), so what is measured is the gateway itself: event
claim, rate limit, turn lock, history read, commit, release. Two loads per conversation count:

- closed loop: every conversation sends its next message as soon as the last is answered, so all N
  are in flight at once; latency then includes queueing behind the other N-1 on one event loop;
- open loop: messages from N open conversations arrive at a fixed rate (half the closed-loop
  capacity), the way chat traffic arrives; this is the overhead a user sees.

Also printed: Redis round trips per turn, Redis memory per open conversation (its keys:
history, recent write IDs and the day-long event claims of its messages) and gateway process memory
per open conversation. Without --redis-url a redis-server is started on a free port.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import resource
import sys
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any
from uuid import uuid4

from redis.asyncio import Redis

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.redis_server import run_with_redis
from bench.store_bench import ROUND_TRIPS, CountingConnection
from core.agent import AgentFactory
from core.gateway import Gateway
from core.messages import ChatMessage
from core.settings import Settings
from core.store import RedisConnection
from core.turns import IncomingMessage


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


def message(conversation: int, n: int) -> IncomingMessage:
    return IncomingMessage(
        platform="bench", event_id=uuid4().hex, user_id=f"U{conversation}", channel_id="C1", text=f"message {n}"
    )


async def timed_turn(gateway: Gateway, model: InstantModel, incoming: IncomingMessage, out: list[float]) -> None:
    model_before = model.seconds
    started = time.perf_counter()
    reply = await gateway.handle(incoming)
    elapsed = time.perf_counter() - started
    assert reply is not None and reply.kind == "answer", reply
    out.append(elapsed - (model.seconds - model_before))


async def closed_loop(
    gateway: Gateway, model: InstantModel, conversations: int, turns: int
) -> tuple[float, list[float]]:
    overheads: list[float] = []

    async def conversation(c: int) -> None:
        for n in range(turns):
            await timed_turn(gateway, model, message(c, n), overheads)

    started = time.perf_counter()
    await asyncio.gather(*(conversation(c) for c in range(conversations)))
    return len(overheads) / (time.perf_counter() - started), overheads


async def open_loop(gateway: Gateway, model: InstantModel, conversations: int, rate: float, count: int) -> list[float]:
    overheads: list[float] = []
    tasks: list[asyncio.Task[None]] = []
    started = time.perf_counter()
    for i in range(count):
        delay = started + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)  # pacing the arrivals is the point of an open-loop load
        incoming = message(i % conversations, i // conversations)
        tasks.append(asyncio.create_task(timed_turn(gateway, model, incoming, overheads)))
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
        client = Redis.from_url(args.redis_url, connection_class=CountingConnection, max_connections=300)
        backend = RedisConnection(client, key_prefix=prefix, max_messages=20, ttl_seconds=3600, owns_client=True)
        model = InstantModel()
        gateway = Gateway(settings, backend, model)
        await closed_loop(gateway, model, min(conversations, 8), 5)  # warm-up: scripts loaded, pool filled
        gc.collect()
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        ROUND_TRIPS[0] = 0
        rate, closed = await closed_loop(gateway, model, conversations, args.turns)
        round_trips = ROUND_TRIPS[0] / len(closed)
        redis_per_conversation = await key_bytes(admin, prefix) / conversations
        rss_growth = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before) * 1024 / conversations
        opened = await open_loop(gateway, model, conversations, rate * args.open_load, args.open_turns)
        rows.append((conversations, rate, percentile(closed, 0.5), percentile(closed, 0.99),
                     rate * args.open_load, percentile(opened, 0.5), percentile(opened, 0.99), round_trips,
                     redis_per_conversation, rss_growth))  # fmt: skip
        await backend.aclose()
        async for key in admin.scan_iter(match=f"{prefix}*", count=1000):
            await admin.delete(key)
    await admin.aclose()
    report(rows, args)


def report(rows: list[tuple[Any, ...]], args: argparse.Namespace) -> None:
    print(f"gateway_bench: instant model, max_messages 20, {args.turns} turns per conversation (closed loop), "
          f"{args.open_turns} arrivals at {args.open_load:.0%} of capacity (open loop)")  # fmt: skip
    header = ("convs", "turns/s", "closed p50", "closed p99", "open rate/s", "open p50", "open p99",
              "RTs/turn", "redis B/conv", "rss B/conv")  # fmt: skip
    print("".join(f"{h:>13}" for h in header))
    for row in rows:
        print(f"{row[0]:>13}" + "".join(f"{v:>13.2f}" for v in row[1:8]) + f"{row[8]:>13.0f}{row[9]:>13.0f}")
    print("overheads in ms (turn minus model time); target: p99 under 2 ms at 256 open conversations")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--redis-url", help="default: start a redis-server on a free port")
    parser.add_argument("--conversations", type=int, nargs="+", default=[1, 32, 256])
    parser.add_argument("--turns", type=int, default=20, help="closed-loop turns per conversation")
    parser.add_argument("--open-turns", type=int, default=3000, help="open-loop arrivals")
    parser.add_argument("--open-load", type=float, default=0.5, help="open-loop rate as a share of capacity")
    return parser.parse_args()


if __name__ == "__main__":
    run_with_redis(run, parse_args())
