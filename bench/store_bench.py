"""Stored-turn throughput: our store beside a bare redis-py pipeline and a reference-shaped store, one Redis, one run.

A turn is what the agent does per message: one add of [user, assistant], then one list of the
thread. Three contenders run the same turns, interleaved over several rounds (best round kept):

- baseline: bare redis-py, MULTI/EXEC of RPUSH + LTRIM + EXPIRE, then LRANGE; no JSON decoding;
- ours: `RedisChatMessageStore` through `RedisConnection` (Lua append+trim+TTL, LRANGE, decoded);
- reference-shaped: the command pattern of Agent Framework's Redis store (the notebook's): MULTI +
  RPUSH per message + EXEC, then LLEN, LTRIM when over the cap, LRANGE of the whole list, a client
  built per store.

Round trips are counted on the client socket (one `send_packed_command` = one round trip); commands
come from the server's INFO commandstats. Without --redis-url a redis-server is started on a free port,
with `--aof everysec` or `--aof always` persisting as docker-compose.yml's Redis does (README Durability).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from uuid import uuid4

from redis.asyncio import Connection, Redis

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.redis_server import add_redis_arguments, run_with_redis
from core.messages import ChatMessage
from core.store import RedisConnection

ROUND_TRIPS = [0]


class CountingConnection(Connection):
    """A redis-py connection that counts what it sends: one call is one network round trip."""

    async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        ROUND_TRIPS[0] += 1
        await super().send_packed_command(command, check_health)


Turn = Callable[[str, int], Awaitable[None]]


def turn_messages(thread: str, n: int) -> list[ChatMessage]:
    return [ChatMessage(role="user", text=f"question {n} in {thread}: " + "x" * 80),
            ChatMessage(role="assistant", text=f"answer {n}: " + "y" * 200)]  # fmt: skip


def baseline_turn(client: Redis, prefix: str, cap: int, ttl: int) -> Turn:
    async def turn(thread: str, n: int) -> None:
        key = f"{prefix}:{{{thread}}}:messages"
        async with client.pipeline(transaction=True) as pipe:
            pipe.rpush(key, *(m.to_json() for m in turn_messages(thread, n)))
            pipe.ltrim(key, -cap, -1)
            pipe.expire(key, ttl)
            await pipe.execute()
        await client.lrange(key, -cap, -1)  # type: ignore[misc]

    return turn


def ours_turn(connection: RedisConnection) -> Turn:
    async def turn(thread: str, n: int) -> None:
        store = connection.store(thread, "bench")
        await store.add_messages(turn_messages(thread, n))
        await store.list_messages()

    return turn


def reference_turn(url: str, prefix: str, cap: int, clients: dict[str, Redis]) -> Turn:
    async def turn(thread: str, n: int) -> None:
        client = clients.get(thread)
        if client is None:  # the reference builds a client per store, i.e. per conversation
            client = clients[thread] = Redis.from_url(url, decode_responses=True, connection_class=CountingConnection)
        key = f"{prefix}:{thread}"
        async with client.pipeline(transaction=True) as pipe:
            for message in turn_messages(thread, n):
                pipe.rpush(key, json.dumps(message.model_dump(mode="json"), separators=(",", ":")))
            await pipe.execute()
        if await client.llen(key) > cap:  # type: ignore[misc]
            await client.ltrim(key, -cap, -1)  # type: ignore[misc]
        raw = await client.lrange(key, 0, -1)  # type: ignore[misc]
        [ChatMessage.model_validate(json.loads(item)) for item in raw]

    return turn


async def drive(turn: Turn, threads: int, turns: int, concurrency: int) -> tuple[float, list[float]]:
    work: asyncio.Queue[tuple[str, int]] = asyncio.Queue()
    for n in range(turns):
        for t in range(threads):
            work.put_nowait((f"user_U{t}_session_C1", n))
    latencies: list[float] = []

    async def worker() -> None:
        while not work.empty():
            thread, n = work.get_nowait()
            started = time.perf_counter()
            await turn(thread, n)
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - started, latencies


async def commandstats(client: Redis) -> int:
    stats: dict[str, Any] = await client.info("commandstats")
    return sum(int(v["calls"]) for k, v in stats.items() if k not in ("cmdstat_info",))


async def measure(name: str, turn: Turn, admin: Redis, args: argparse.Namespace) -> dict[str, float]:
    ROUND_TRIPS[0] = 0
    before = await commandstats(admin)
    elapsed, latencies = await drive(turn, args.threads, args.turns, args.concurrency)
    count = args.threads * args.turns
    commands = (await commandstats(admin) - before - 1) / count
    latencies.sort()
    return {
        "turns/s": count / elapsed,
        "p50 ms": statistics.median(latencies) * 1000,
        "p99 ms": latencies[int(len(latencies) * 0.99) - 1] * 1000,
        "round trips/turn": ROUND_TRIPS[0] / count,
        "commands/turn": commands,
    }


async def main(args: argparse.Namespace) -> None:
    admin = Redis.from_url(args.redis_url)
    best: dict[str, dict[str, float]] = {}
    for _ in range(args.rounds):
        prefix = f"bench{uuid4().hex[:8]}"
        connection = RedisConnection(
            Redis.from_url(args.redis_url, connection_class=CountingConnection, max_connections=args.concurrency),
            key_prefix=prefix, max_messages=args.max_messages, ttl_seconds=3600, owns_client=True,
        )  # fmt: skip
        baseline_client = Redis.from_url(args.redis_url, connection_class=CountingConnection)
        reference_clients: dict[str, Redis] = {}
        contenders = {
            "bare redis-py pipeline": baseline_turn(baseline_client, f"{prefix}b", args.max_messages, 3600),
            "chat-gateway store": ours_turn(connection),
            "reference-shaped store": reference_turn(
                args.redis_url, f"{prefix}r", args.max_messages, reference_clients
            ),
        }
        for name, turn in contenders.items():
            result = await measure(name, turn, admin, args)
            if name not in best or result["turns/s"] > best[name]["turns/s"]:
                best[name] = result
        await connection.aclose()
        await baseline_client.aclose()
        for client in reference_clients.values():
            await client.aclose()
        async for key in admin.scan_iter(match=f"{prefix}*", count=1000):
            await admin.delete(key)
    await admin.aclose()
    report(best, args)


def report(best: dict[str, dict[str, float]], args: argparse.Namespace) -> None:
    print(f"store_bench: {args.threads} threads x {args.turns} turns, concurrency {args.concurrency}, "
          f"max_messages {args.max_messages}, best of {args.rounds} rounds, AOF fsync: {args.aof_note}")  # fmt: skip
    columns = ["turns/s", "p50 ms", "p99 ms", "round trips/turn", "commands/turn"]
    print(f"{'':26}" + "".join(f"{c:>18}" for c in columns))
    for name, row in best.items():
        print(f"{name:26}" + "".join(f"{row[c]:>18.2f}" for c in columns))
    ours, base = best["chat-gateway store"], best["bare redis-py pipeline"]
    ref = best["reference-shaped store"]
    print(f"ours vs bare pipeline: {ours['turns/s'] / base['turns/s'] * 100:.1f}% of its turns/s "
          f"(target: within 10%, i.e. >= 90%)")  # fmt: skip
    print(f"ours vs reference-shaped: {ours['turns/s'] / ref['turns/s']:.1f}x its turns/s (target: 4x)")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_redis_arguments(parser)
    parser.add_argument("--threads", type=int, default=200)
    parser.add_argument("--turns", type=int, default=50)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--max-messages", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    return parser.parse_args()


if __name__ == "__main__":
    run_with_redis(main, parse_args())
