"""End to end: Slack HTTP events and Discord gateway events through the real adapters, gateway and store.

Each open conversation sends its next DM as soon as the last was answered (closed loop), from 1 to
1,000 conversations, with a model that answers after a fixed delay (0 ms, 200 ms). On Slack a DM is
a signed Events API POST to the slack-bolt HTTP adapter; on Discord a MESSAGE_CREATE over the fake's
gateway WebSocket to discord.py. A turn ends when the adapter has posted the reply to the fake API.
Printed per row: events/s, p50/p99 overhead (end to end minus the model's delay), Redis round trips
per turn and the process's peak memory; the same run compares one Redis, a Redis Cluster
(3 primaries) and the embedded store.

Everything runs in this one process on loopback: the fake platform, the load and the adapter share
the event loop, so the overhead printed is an upper bound of the gateway's own.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import aiohttp
import redis.asyncio.cluster
from redis.asyncio import BlockingConnectionPool, Redis

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.store_bench import ROUND_TRIPS, CountingConnection
from bots.discord_adapter import DiscordAdapter
from bots.slack import SlackAdapter, TurnOutcome
from core.agent import AgentFactory
from core.gateway import Gateway
from core.messages import ChatMessage
from core.settings import Settings
from core.store import MemoryBackend, RedisConnection, SqliteConnection
from core.store.topology import _ClusterClient
from tests.fakes.discord_api import DEFAULT_TOKEN, FakeDiscord
from tests.fakes.slack_api import FakeSlack, im_message, sign
from tests.support.redis_cluster import LocalCluster
from tests.support.redis_proc import RedisServer

SECRET = "bench-signing-secret"


class FixedDelayModel(AgentFactory):
    model_id = "fixed-delay"

    def __init__(self, delay_seconds: float) -> None:
        self.delay = delay_seconds

    async def complete(self, messages: Sequence[ChatMessage]) -> str:
        if self.delay:
            await asyncio.sleep(self.delay)  # the model's think time is what this stands for
        return f"answer to {messages[-1].text}"

    async def stream(self, messages: Sequence[ChatMessage]) -> AsyncIterator[str]:
        yield await self.complete(messages)


async def run_level(
    backend: MemoryBackend, slack: FakeSlack, conversations: int, turns: int, delay: float, tag: str
) -> dict[str, float]:
    settings = Settings(_env_file=None, slack_bot_token="xoxb-bench", slack_signing_secret=SECRET,  # type: ignore[call-arg]
                        slack_api_url=slack.api_url, port=0, rate_limit_per_minute=0, max_messages=20)  # fmt: skip
    gateway = Gateway(settings, backend, FixedDelayModel(delay))
    done: dict[str, asyncio.Future[None]] = {}

    def finished(outcome: TurnOutcome) -> None:
        future = done.get(outcome.event_id)
        if future is not None and not future.done():
            future.set_result(None)

    adapter = SlackAdapter(settings=settings, gateway=gateway, host="127.0.0.1", on_outcome=finished)
    task = asyncio.create_task(adapter.run())
    await asyncio.wait_for(adapter.ready.wait(), 30)
    url = f"http://127.0.0.1:{adapter.port}/slack/events"
    latencies: list[float] = []
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def conversation(c: int) -> None:
            for n in range(turns):
                event_id = f"Ev{tag}-{c}-{n}"
                body = json.dumps(slack.event_callback(im_message(f"m{n}", user=f"U{tag}{c}", channel=f"D{tag}{c}"),
                                                       event_id))  # fmt: skip
                done[event_id] = asyncio.get_running_loop().create_future()
                started = time.perf_counter()
                headers = {"Content-Type": "application/json", **sign(body, SECRET)}
                async with session.post(url, data=body.encode(), headers=headers) as response:
                    await response.read()
                await done[event_id]
                latencies.append(time.perf_counter() - started - delay)
                del done[event_id]

        ROUND_TRIPS[0] = 0
        started = time.perf_counter()
        await asyncio.gather(*(conversation(c) for c in range(conversations)))
        elapsed = time.perf_counter() - started
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    return summarise(latencies, elapsed)


async def run_discord_level(
    backend: MemoryBackend, fake: FakeDiscord, conversations: int, turns: int, delay: float, tag: str
) -> dict[str, float]:
    settings = Settings(_env_file=None, discord_token=DEFAULT_TOKEN, discord_api_url=fake.api_url,  # type: ignore[call-arg]
                        rate_limit_per_minute=0, max_messages=20)  # fmt: skip
    gateway = Gateway(settings, backend, FixedDelayModel(delay))
    base = 2_000_000_000_000_000_000 + abs(hash(tag)) % 1_000_000 * 10_000
    for c in range(conversations):
        fake.add_dm_channel(base + c, base + 5_000 + c)
    adapter = DiscordAdapter(settings=settings, gateway=gateway, guild_ready_timeout=0.1, identify_delay_seconds=0)
    task = asyncio.create_task(adapter.run())
    await fake.wait_ready(30, count=fake.ready_count + 1)
    waiting: dict[int, tuple[str, asyncio.Future[None]]] = {}

    async def route_replies() -> None:
        while True:
            sent = await fake.posted.get()
            expected = waiting.get(sent.channel_id)
            if expected is not None and sent.content == expected[0] and not expected[1].done():
                expected[1].set_result(None)

    router = asyncio.create_task(route_replies())
    latencies: list[float] = []

    async def conversation(c: int) -> None:
        for n in range(turns):
            done = asyncio.get_running_loop().create_future()
            waiting[base + c] = (f"answer to m{n}", done)
            started = time.perf_counter()
            await fake.send_message_create(channel_id=base + c, author_id=base + 5_000 + c, content=f"m{n}")
            await done
            latencies.append(time.perf_counter() - started - delay)

    ROUND_TRIPS[0] = 0
    started = time.perf_counter()
    await asyncio.gather(*(conversation(c) for c in range(conversations)))
    elapsed = time.perf_counter() - started
    for running in (router, task):
        running.cancel()
    await asyncio.gather(router, task, return_exceptions=True)
    return summarise(latencies, elapsed)


def summarise(latencies: list[float], elapsed: float) -> dict[str, float]:
    latencies.sort()
    count = len(latencies)
    return {
        "events/s": count / elapsed,
        "p50 ms": latencies[count // 2] * 1000,
        "p99 ms": latencies[min(count - 1, int(count * 0.99))] * 1000,
        "RTs/turn": ROUND_TRIPS[0] / count,
        "peak MiB": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


async def main(args: argparse.Namespace, stores: dict[str, Any]) -> None:
    print(__doc__.split("\n\n")[0])
    columns = ["events/s", "p50 ms", "p99 ms", "RTs/turn", "peak MiB"]
    print(
        f"{'platform':>9}{'store':>10}{'model ms':>10}{'convs':>7}{'turns':>7}" + "".join(f"{c:>11}" for c in columns)
    )
    async with FakeSlack(bot_user_id="UBOT", bot_id="BBOT", team_id="T1") as slack, FakeDiscord() as discord_fake:
        for platform in args.platforms:
            for name, make_backend in stores.items():
                for delay_ms in args.delays:
                    for conversations in args.conversations:
                        # At most about 10 s of model time per conversation, so slow-model rows stay bounded.
                        turns = max(2, min(args.turns // conversations, int(10_000 / max(delay_ms, 1))))
                        backend = make_backend()
                        tag = f"{platform[0]}{name[0]}{delay_ms}-{conversations}-"
                        if platform == "slack":
                            row = await run_level(backend, slack, conversations, turns, delay_ms / 1000, tag)
                        else:
                            row = await run_discord_level(
                                backend, discord_fake, conversations, turns, delay_ms / 1000, tag
                            )
                        await backend.aclose()
                        print(f"{platform:>9}{name:>10}{delay_ms:>10}{conversations:>7}{turns * conversations:>7}"
                              + "".join(f"{row[c]:>11.2f}" for c in columns))  # fmt: skip


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--conversations", type=int, nargs="+", default=[1, 10, 100, 1000])
    parser.add_argument("--delays", type=int, nargs="+", default=[0, 200], help="model delay in ms")
    parser.add_argument("--turns", type=int, default=2000, help="turns per row (split over the conversations)")
    parser.add_argument("--stores", nargs="+", default=["redis", "cluster", "embedded"])
    parser.add_argument("--platforms", nargs="+", default=["slack", "discord"])
    return parser.parse_args()


if __name__ == "__main__":
    # RedisCluster takes no connection_class: count its round trips by swapping the class it builds.
    redis.asyncio.cluster.Connection = CountingConnection  # type: ignore[attr-defined]
    arguments = parse_args()
    with tempfile.TemporaryDirectory() as directory:
        server = RedisServer(Path(directory) / "redis")
        server.start()
        cluster = LocalCluster(Path(directory) / "cluster") if "cluster" in arguments.stores else None
        if cluster is not None:
            cluster.start()
        try:
            makers = {
                "redis": lambda: RedisConnection(  # a bounded, waiting pool, as the gateway builds it
                    Redis.from_pool(BlockingConnectionPool.from_url(
                        server.url, connection_class=CountingConnection, max_connections=50, timeout=30)),
                    max_messages=20, ttl_seconds=3600, owns_client=True,
                ),
                "cluster": lambda: RedisConnection(
                    _ClusterClient(host="127.0.0.1", port=cluster.nodes[0].port, pool_size=50),  # type: ignore[union-attr]
                    max_messages=20, ttl_seconds=3600, owns_client=True,
                ),
                "embedded": lambda: SqliteConnection(Path(directory) / "embedded.sqlite3", max_messages=20,
                                                     ttl_seconds=3600),
            }  # fmt: skip
            asyncio.run(main(arguments, {name: makers[name] for name in arguments.stores}))
        finally:
            if cluster is not None:
                cluster.stop()
            server.stop()
