"""End to end: Slack HTTP events and Discord gateway events through the real adapters, delivery and store.

Two parts. Load: each open conversation sends its next DM as soon as the last was answered (closed
loop), with a model that streams its answer in two pieces after a fixed delay (0 ms, 200 ms). On
Slack a DM is a signed Events API POST to the slack-bolt HTTP adapter; on Discord a MESSAGE_CREATE
over the fake's gateway WebSocket to discord.py. A turn ends when the fake platform holds the whole
reply and the delivery runner has reported it (its finish script ran). Printed per row: events/s,
p50/p99 overhead (arrival to complete reply, minus the model's delay), Redis calls per turn and the
process's peak memory; the same run can compare one Redis, a Redis Cluster (3 primaries) and the
embedded store.

Round trips: one conversation on one Redis behind tests/support/tcp_proxy.py DelayProxy, its turns timed with no delay
and then with RTT_MS added per round trip (half each way). Redis round trips on the critical path =
(median time with the delay - median time without) / RTT, from the event's arrival to (a) the reply's
first post (the model's first piece, as a progress post) and (b) the complete reply (the final edit).
Also printed: the Redis requests the proxy forwarded in the same windows (requests in flight together
are one round trip, but two requests).

Everything runs in this one process on loopback: the fake platform, the load and the adapter share
the event loop, so the overhead printed is an upper bound of the gateway's own.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import redis.asyncio.cluster
from redis.asyncio import BlockingConnectionPool, Redis

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.store_bench import ROUND_TRIPS, CountingConnection
from bots.discord_adapter import DiscordAdapter
from bots.slack import SlackAdapter
from core.agent import AgentFactory
from core.delivery import Delivery, TurnOutcome
from core.gateway import Gateway
from core.messages import ChatMessage
from core.settings import Settings
from core.store import MemoryBackend, RedisConnection, SqliteConnection
from core.store.topology import _ClusterClient
from tests.fakes.discord_api import DEFAULT_TOKEN, FakeDiscord
from tests.fakes.slack_api import FakeSlack, im_message, sign
from tests.support.redis_cluster import LocalCluster
from tests.support.redis_proc import RedisServer
from tests.support.tcp_proxy import DelayProxy

SECRET = "bench-signing-secret"
TURN_TIMEOUT_SECONDS = 30.0
# Measured before the redesign (issue 11) through a 25 ms proxy: Redis round trips from arrival to...
OLD_ROUND_TRIPS = {"first post": 3.5, "complete": 5.8}
TARGETS = {"first post": (1, 2), "complete": (2, 3)}  # (target, at most)


class TwoPieceModel(AgentFactory):
    """Streams `answer to <text>` after a fixed delay, then ` in full`: a first post, then the final edit."""

    model_id = "two-piece"
    tail = " in full"

    def __init__(self, delay_seconds: float) -> None:
        self.delay = delay_seconds

    async def complete(self, messages: Sequence[ChatMessage]) -> str:
        return "".join([piece async for piece in self.stream(messages)])

    async def stream(self, messages: Sequence[ChatMessage]) -> AsyncIterator[str]:
        if self.delay:
            await asyncio.sleep(self.delay)  # the model's think time is what this stands for
        yield f"answer to {messages[-1].text}"
        yield self.tail


@dataclass
class Turn:
    """One message's times (perf_counter): arrival, the reply's first post, the complete reply."""

    full_text: str
    arrived: float
    first_post: float | None = None
    complete: float | None = None
    posted: asyncio.Event = field(default_factory=asyncio.Event)


class Watch:
    """What the conversations wait for: their reply on the fake platform, and the delivery's report."""

    def __init__(self) -> None:
        self._open: dict[str, Turn] = {}  # by platform channel: one turn at a time per conversation
        self._reported: dict[str, asyncio.Event] = {}

    def wrote(self, channel: str, text: str) -> None:
        """The fake platform took a post or an edit of the bot's in `channel`."""
        at = time.perf_counter()
        turn = self._open.get(channel)
        if turn is None:
            return
        if turn.first_post is None:
            turn.first_post = at
        if turn.complete is None and turn.full_text in text:
            turn.complete = at
            turn.posted.set()

    def outcome(self, outcome: TurnOutcome) -> None:
        self._reported.setdefault(outcome.event_id, asyncio.Event()).set()

    async def turn(self, channel: str, full_text: str, send: Callable[[], Awaitable[str]]) -> Turn:
        """Send one message (`send` returns its event ID) and wait until it is answered and reported."""
        turn = self._open[channel] = Turn(full_text, time.perf_counter())
        try:
            async with asyncio.timeout(TURN_TIMEOUT_SECONDS):
                event_id = await send()
                await turn.posted.wait()
                await self._reported.setdefault(event_id, asyncio.Event()).wait()
            del self._reported[event_id]
        finally:
            del self._open[channel]
        return turn


class TimedSlack(FakeSlack):
    """FakeSlack telling `watch` of every post and edit as it takes them."""

    def __init__(self, watch: Watch, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        for method in ("chat.postMessage", "chat.update"):
            self._handlers[method] = self._timed(self._handlers[method], watch)

    @staticmethod
    def _timed(handler: Callable[[dict[str, Any]], dict[str, Any]], watch: Watch) -> Any:
        def timed(args: dict[str, Any]) -> dict[str, Any]:
            result = handler(args)
            watch.wrote(str(args.get("channel")), str(args.get("text") or ""))
            return result

        return timed


class _Tap(asyncio.Queue[Any]):
    """Stands in for one of FakeDiscord's queues: tells `seen` of each item, keeps none."""

    def __init__(self, seen: Callable[[Any], None]) -> None:
        super().__init__()
        self._seen = seen

    def put_nowait(self, item: Any) -> None:
        self._seen(item)


def tap_discord(fake: FakeDiscord, watch: Watch) -> None:
    def seen(item: Any) -> None:  # a SentMessage (a post) or a MessageEdit
        watch.wrote(str(item.channel_id), item.content or "")

    fake.posted = fake.edits = _Tap(seen)


Ask = Callable[[int, int], Awaitable[Turn]]


def delivery_for(settings: Settings, gateway: Gateway, watch: Watch) -> Delivery:
    """As bots.serving.build_delivery builds it, reporting each outcome to `watch`."""
    inbox = gateway.backend.inbox(lease_seconds=settings.lock_timeout_seconds, keep_seconds=settings.dedupe_ttl_seconds)
    return Delivery(gateway, inbox, max_turns=settings.max_concurrent_turns, on_outcome=watch.outcome)


@contextlib.asynccontextmanager
async def running(delivery: Delivery, adapter_task: asyncio.Task[None]) -> AsyncIterator[None]:
    """The delivery runner beside the adapter; on the way out, the CLI's order: drain, then stop."""
    runner = asyncio.create_task(delivery.run())
    try:
        yield
    finally:
        await delivery.drain(5)
        for task in (runner, adapter_task):
            task.cancel()
        await asyncio.gather(runner, adapter_task, return_exceptions=True)


@contextlib.asynccontextmanager
async def slack_rig(backend: MemoryBackend, slack: FakeSlack, watch: Watch, delay: float, tag: str
                    ) -> AsyncIterator[Ask]:  # fmt: skip
    settings = Settings(_env_file=None, slack_bot_token="xoxb-bench", slack_signing_secret=SECRET,  # type: ignore[call-arg,arg-type]
                        slack_api_url=slack.api_url, port=0, rate_limit_per_minute=0, max_messages=20)  # fmt: skip
    gateway = Gateway(settings, backend, TwoPieceModel(delay))
    delivery = delivery_for(settings, gateway, watch)
    adapter = SlackAdapter(settings=settings, gateway=gateway, delivery=delivery, host="127.0.0.1",
                           on_outcome=watch.outcome)  # fmt: skip
    task = asyncio.create_task(adapter.run())
    async with running(delivery, task), aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        await asyncio.wait_for(adapter.ready.wait(), 30)
        url = f"http://127.0.0.1:{adapter.port}/slack/events"

        async def ask(c: int, n: int) -> Turn:
            event_id, channel = f"Ev{tag}-{c}-{n}", f"D{tag}{c}"
            body = json.dumps(slack.event_callback(im_message(f"m{n}", user=f"U{tag}{c}", channel=channel), event_id))

            async def send() -> str:
                headers = {"Content-Type": "application/json", **sign(body, SECRET)}
                async with session.post(url, data=body.encode(), headers=headers) as response:
                    await response.read()
                return event_id

            return await watch.turn(channel, f"answer to m{n}{TwoPieceModel.tail}", send)

        yield ask


@contextlib.asynccontextmanager
async def discord_rig(backend: MemoryBackend, fake: FakeDiscord, watch: Watch, delay: float, tag: str,
                      conversations: int) -> AsyncIterator[Ask]:  # fmt: skip
    settings = Settings(_env_file=None, discord_token=DEFAULT_TOKEN, discord_api_url=fake.api_url,  # type: ignore[call-arg,arg-type]
                        rate_limit_per_minute=0, max_messages=20)  # fmt: skip
    gateway = Gateway(settings, backend, TwoPieceModel(delay))
    delivery = delivery_for(settings, gateway, watch)
    base = 2_000_000_000_000_000_000 + abs(hash(tag)) % 1_000_000 * 10_000
    for c in range(conversations):
        fake.add_dm_channel(base + c, base + 5_000 + c)
    adapter = DiscordAdapter(settings=settings, gateway=gateway, delivery=delivery, guild_ready_timeout=0.1,
                             identify_delay_seconds=0)  # fmt: skip
    task = asyncio.create_task(adapter.run())
    async with running(delivery, task):
        await fake.wait_ready(30, count=fake.ready_count + 1)

        async def ask(c: int, n: int) -> Turn:
            async def send() -> str:
                return str(await fake.send_message_create(channel_id=base + c, author_id=base + 5_000 + c,
                                                          content=f"m{n}"))  # fmt: skip

            return await watch.turn(str(base + c), f"answer to m{n}{TwoPieceModel.tail}", send)

        yield ask


@contextlib.asynccontextmanager
async def rig(platform: str, backend: MemoryBackend, fakes: Fakes, delay: float, tag: str, conversations: int
              ) -> AsyncIterator[Ask]:  # fmt: skip
    if platform == "slack":
        async with slack_rig(backend, fakes.slack, fakes.watch, delay, tag) as ask:
            yield ask
    else:
        async with discord_rig(backend, fakes.discord, fakes.watch, delay, tag, conversations) as ask:
            yield ask


@dataclass
class Fakes:
    watch: Watch
    slack: FakeSlack
    discord: FakeDiscord


async def load_level(
    platform: str, backend: MemoryBackend, fakes: Fakes, conversations: int, turns: int, delay: float, tag: str
) -> dict[str, float]:
    async with rig(platform, backend, fakes, delay, tag, conversations) as ask:
        latencies: list[float] = []

        async def conversation(c: int) -> None:
            for n in range(turns):
                turn = await ask(c, n)
                assert turn.complete is not None
                latencies.append(turn.complete - turn.arrived - delay)

        ROUND_TRIPS[0] = 0
        started = time.perf_counter()
        await asyncio.gather(*(conversation(c) for c in range(conversations)))
        elapsed = time.perf_counter() - started
        calls = ROUND_TRIPS[0]
    return summarise(latencies, elapsed, calls)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


def summarise(latencies: list[float], elapsed: float, calls: int) -> dict[str, float]:
    count = len(latencies)
    return {
        "events/s": count / elapsed,
        "p50 ms": percentile(latencies, 0.5) * 1000,
        "p99 ms": percentile(latencies, 0.99) * 1000,
        "calls/turn": calls / count,
        "peak MiB": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


async def round_trips(platform: str, redis_port: int, fakes: Fakes, turns: int, rtt: float) -> dict[str, float]:
    """Redis round trips on one conversation's critical path, and the requests sent meanwhile."""
    async with DelayProxy(redis_port) as proxy:
        backend = RedisConnection(
            Redis.from_pool(BlockingConnectionPool.from_url(f"redis://127.0.0.1:{proxy.port}", max_connections=50,
                                                            timeout=30)),
            max_messages=20, ttl_seconds=3600, owns_client=True,
        )  # fmt: skip
        tag = f"rt{platform[0]}"
        try:
            async with rig(platform, backend, fakes, 0.0, tag, 1) as ask:
                n = 0
                for _ in range(5):  # warm-up: scripts loaded, connections open
                    await ask(0, n)
                    n += 1
                timed: dict[float, list[Turn]] = {}
                for delay in (0.0, rtt / 2):
                    proxy.delay_seconds = delay
                    timed[delay] = []
                    for _ in range(turns):
                        timed[delay].append(await ask(0, n))
                        n += 1
                    proxy.delay_seconds = 0.0
        finally:
            await backend.aclose()

    def median(turns_: list[Turn], until: str) -> float:
        return float(statistics.median(getattr(t, until) - t.arrived for t in turns_))

    def requests(turns_: list[Turn], until: str) -> float:
        return statistics.median(proxy.requests_between(t.arrived, getattr(t, until)) for t in turns_)

    fast, slow = timed[0.0], timed[rtt / 2]
    return {
        "first post": (median(slow, "first_post") - median(fast, "first_post")) / rtt,
        "complete": (median(slow, "complete") - median(fast, "complete")) / rtt,
        "first post requests": requests(slow, "first_post"),
        "complete requests": requests(slow, "complete"),
        "first post ms": median(fast, "first_post") * 1000,
        "complete ms": median(fast, "complete") * 1000,
    }


def verdict(name: str, value: float) -> str:
    target, most = TARGETS[name]
    if value <= target + 0.25:
        return "on target"
    return "within limit" if value <= most + 0.25 else "ABOVE LIMIT"


async def main(args: argparse.Namespace, stores: dict[str, Any], redis_port: int) -> None:
    print(__doc__.split("\n\n")[0])
    columns = ["events/s", "p50 ms", "p99 ms", "calls/turn", "peak MiB"]
    print(
        f"{'platform':>9}{'store':>10}{'model ms':>10}{'convs':>7}{'turns':>7}" + "".join(f"{c:>11}" for c in columns)
    )
    watch = Watch()
    summary: dict[str, dict[str, float]] = {}
    async with (
        TimedSlack(watch, bot_user_id="UBOT", bot_id="BBOT", team_id="T1") as slack,
        FakeDiscord() as discord_fake,
    ):
        tap_discord(discord_fake, watch)
        fakes = Fakes(watch, slack, discord_fake)
        for platform in args.platforms:
            for name, make_backend in stores.items():
                for delay_ms in args.delays:
                    for conversations in args.conversations:
                        # At most about 10 s of model time per conversation, so slow-model rows stay bounded.
                        turns = max(2, min(args.turns // conversations, int(10_000 / max(delay_ms, 1))))
                        backend = make_backend()
                        tag = f"{platform[0]}{name[0]}{delay_ms}-{conversations}-"
                        try:
                            row = await load_level(platform, backend, fakes, conversations, turns, delay_ms / 1000, tag)
                        finally:
                            await backend.aclose()
                        print(f"{platform:>9}{name:>10}{delay_ms:>10}{conversations:>7}{turns * conversations:>7}"
                              + "".join(f"{row[c]:>11.2f}" for c in columns))  # fmt: skip
                        if name == "redis" and delay_ms == 0 and conversations == max(args.conversations):
                            summary[platform] = dict(row)
        if args.rtt_ms > 0:
            print(f"\nRedis round trips on the critical path: one conversation, model 0 ms, {args.rt_turns} turns "
                  f"at 0 and at {args.rtt_ms:g} ms RTT ({args.rtt_ms / 2:g} ms each way), "
                  "through tests/support/tcp_proxy.py DelayProxy")  # fmt: skip
            for platform in args.platforms:
                measured = await round_trips(platform, redis_port, fakes, args.rt_turns, args.rtt_ms / 1000)
                summary.setdefault(platform, {}).update(measured)
    report(summary, args)


def report(summary: dict[str, dict[str, float]], args: argparse.Namespace) -> None:
    if not summary:
        return
    load = f"{max(args.conversations)} conversations, model 0 ms, one Redis"
    print(f"\nSummary (events/s and overhead: {load}; round trips: old = before issue 11, through a 25 ms proxy)")
    rows = list(summary.values())

    def line(label: str, cells: list[str]) -> None:
        print(f"{label:>34}" + "".join(f"{c:>22}" for c in cells))

    def cells(key: str, spec: str) -> list[str]:
        return [format(row[key], spec) if key in row else "-" for row in rows]

    line("", list(summary))
    for key, label in (("events/s", "events/s"), ("p50 ms", "overhead p50 ms"), ("p99 ms", "overhead p99 ms")):
        line(label, cells(key, ".2f"))
    for name in ("first post", "complete"):
        target, most = TARGETS[name]
        line(f"Redis RTs to {name}: old", [f"{OLD_ROUND_TRIPS[name]:.1f}"] * len(rows))
        new = [f"{row[name]:.2f} {verdict(name, row[name])}" if name in row else "-" for row in rows]
        line(f"new (target {target}, at most {most})", new)
        line("Redis requests meanwhile", cells(f"{name} requests", ".0f"))
        line("time at 0 ms RTT (ms)", cells(f"{name} ms", ".2f"))


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--conversations", type=int, nargs="+", default=[1, 10, 100, 1000])
    parser.add_argument("--delays", type=int, nargs="+", default=[0, 200], help="model delay in ms")
    parser.add_argument("--turns", type=int, default=2000, help="turns per row (split over the conversations)")
    parser.add_argument("--stores", nargs="+", default=["redis", "cluster", "embedded"])
    parser.add_argument("--platforms", nargs="+", default=["slack", "discord"])
    parser.add_argument("--rtt-ms", type=float, default=50.0, help="round-trip time added to Redis (0: skip)")
    parser.add_argument("--rt-turns", type=int, default=20, help="turns per latency in the round-trip part")
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
            stores = {name: makers[name] for name in arguments.stores}
            asyncio.run(main(arguments, stores, server.port))
        finally:
            if cluster is not None:
                cluster.stop()
            server.stop()
