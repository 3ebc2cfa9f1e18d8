"""Redis that stalls instead of failing: DEBUG SLEEP (the server answers nobody), CLIENT PAUSE (writes wait),
and a connection pool far smaller than the load.

A stalled command is not a failed one: the client times out and retries, and the attempt it gave up on
may still run when the server wakes up. Never, whatever the timing: a message answered twice, a message
accepted and left unanswered (or dropped as a "duplicate" of its own earlier attempt), a turn stored
twice, a user told "saved nothing" about a turn that was stored, or turns stored out of arrival order.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Iterator
from itertools import count
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import TimeoutError as RedisTimeoutError

from core.errors import StoreError, StoreUnavailableError
from core.llm import OpenAIChatModel
from core.store.keys import ConversationKeys
from core.turns import IncomingMessage
from tests.conftest import make_settings, openai_client
from tests.fakes.openai_server import FakeOpenAI, Hang
from tests.support.delivery import Runtime, start_runtime, stop_runtime
from tests.support.redis_proc import RedisServer
from tests.support.waiting import wait_until

_events = count()
REDIS_TIMEOUT = 0.5


def message(text: str, user: str = "U1") -> IncomingMessage:
    return IncomingMessage("test", f"S{next(_events)}", user, "C1", text)


@pytest.fixture(scope="module")
def stall_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A redis-server of this module's own: DEBUG SLEEP and CLIENT PAUSE stall every client of a server."""
    server = RedisServer(tmp_path_factory.mktemp("stall-redis"), args=["--enable-debug-command", "local"])
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def admin(stall_server: RedisServer) -> AsyncIterator[Redis]:
    """A connection of its own for the stalls, with no timeout: DEBUG SLEEP answers when the sleep is over."""
    client = Redis(host="127.0.0.1", port=stall_server.port)
    try:
        yield client
    finally:
        with contextlib.suppress(Exception):
            await client.client_unpause()
        await client.aclose()


@pytest.fixture
async def runtimes() -> AsyncIterator[list[Runtime]]:
    started: list[Runtime] = []
    yield started
    for rt in started:
        await stop_runtime(rt)


@pytest.fixture
def start(stall_server: RedisServer, key_prefix: str, fake_openai: FakeOpenAI, runtimes: list[Runtime]) -> Any:
    async def make(progress_interval_seconds: float = 0.01, **overrides: Any) -> Runtime:
        options = {"redis_timeout_seconds": REDIS_TIMEOUT, "rate_limit_per_minute": 0, **overrides}
        settings = make_settings(redis_url=stall_server.url, key_prefix=key_prefix, **options)
        model = OpenAIChatModel("m", async_client=openai_client(fake_openai))
        rt = await start_runtime(settings, model, progress_interval_seconds=progress_interval_seconds)
        runtimes.append(rt)
        return rt

    return make


@contextlib.asynccontextmanager
async def debug_sleep(admin: Redis, port: int, seconds: float) -> AsyncIterator[asyncio.Task[Any]]:
    """Redis asleep for `seconds` from the block's start; the task ends when it wakes (await it to know)."""
    sleeper = asyncio.create_task(admin.execute_command("DEBUG", "SLEEP", str(seconds)))  # type: ignore[no-untyped-call]
    probe = Redis(host="127.0.0.1", port=port, socket_timeout=0.1, retry=Retry(NoBackoff(), 0))

    async def asleep() -> bool:
        try:
            await probe.ping()  # answered: Redis read it before the DEBUG SLEEP
        except RedisTimeoutError:
            return True
        return False

    try:
        await wait_until(asleep, timeout=5, every=0.01)
        yield sleeper
        async with asyncio.timeout(seconds + 10):
            await sleeper
    finally:
        sleeper.cancel()
        await asyncio.gather(sleeper, return_exceptions=True)
        await probe.aclose()


async def deliver(rt: Runtime, incoming: IncomingMessage, *, within: float = 20) -> str:
    """`receive` as a platform drives it: a refused message (not acknowledged) is delivered again."""
    async with asyncio.timeout(within):
        while True:
            try:
                return await rt.delivery.receive(incoming)
            except StoreError:
                await asyncio.sleep(0.1)  # the platform's redelivery interval, not synchronisation


async def settled(*group: Runtime) -> None:
    async def idle() -> bool:
        return all(rt.delivery.in_flight == 0 for rt in group)

    await wait_until(idle, timeout=15)


def posted(group: list[Runtime] | tuple[Runtime, ...], incoming: IncomingMessage) -> list[str]:
    """Every reply and notice any runtime posted for `incoming`."""
    key = incoming.dedupe_key
    return [t for rt in group for t in rt.replies.texts.get(key, []) + rt.replies.notices.get(key, [])]


async def history(rt: Runtime, user: str = "U1") -> list[str]:
    return [m.text for m in await rt.gateway.backend.store(f"user_{user}_session_C1", "test").list_messages()]


async def inbox_state(stall_server: RedisServer, key_prefix: str, user: str = "U1") -> tuple[int, dict[str, str]]:
    """(entries left in the conversation's inbox stream, message key -> state of its turn record)."""
    keys = ConversationKeys.of(key_prefix, "test", f"user_{user}_session_C1")
    client = Redis.from_url(stall_server.url, decode_responses=True)
    try:
        left = await client.xlen(keys.inbox)
        records = await client.hgetall(keys.turns)
    finally:
        await client.aclose()
    return left, {str(k): json.loads(v)["state"] for k, v in records.items()}


@pytest.mark.parametrize("seconds", [1.5, 3.0], ids=["retries-outlast-the-sleep", "sleep-outlasts-the-retries"])
async def test_a_message_arriving_while_redis_sleeps_is_stored_and_answered_once(
    start: Any, admin: Redis, stall_server: RedisServer, key_prefix: str, seconds: float
) -> None:
    """The attempt the client gave up on runs when Redis wakes: its retry (same call, or the platform's
    redelivery) must not make the message a duplicate of itself, left unanswered until a lease expires."""
    rt = await start(lock_timeout_seconds=10)  # longer than any wait below: no lease expiry rescues a lost message
    warm = message("warm up")
    assert await rt.ask(warm) == "echo: warm up"
    await settled(rt)
    during = message("during the sleep")
    async with debug_sleep(admin, stall_server.port, seconds) as woken:
        try:
            outcome: str | None = await rt.delivery.receive(during)
        except StoreUnavailableError:  # not acknowledged: the platform delivers it again
            outcome = None
        await woken
    if seconds < REDIS_TIMEOUT * 4:  # redis-py's four attempts reach past the sleep
        assert outcome == "taken"  # redis-py's retry of the very same call is recognised as it
    if outcome is None:
        outcome = await deliver(rt, during)
    assert outcome in ("taken", "queued", "duplicate")
    assert await rt.replies.wait_for(during.dedupe_key, timeout=5) == "echo: during the sleep"
    await settled(rt)
    assert posted([rt], during) == ["echo: during the sleep"]
    assert await history(rt) == ["warm up", "echo: warm up", "during the sleep", "echo: during the sleep"]
    left, states = await inbox_state(stall_server, key_prefix)
    assert left == 0 and states == {warm.dedupe_key: "delivered", during.dedupe_key: "delivered"}


@pytest.mark.parametrize("lease", [5.0, 1.0], ids=["lease-outlasts-the-sleep", "sleep-outlasts-the-lease"])
async def test_a_turn_committing_while_redis_sleeps_is_answered_once_as_stored(
    start: Any, admin: Redis, stall_server: RedisServer, key_prefix: str, fake_openai: FakeOpenAI, lease: float
) -> None:
    """What the user reads is what is stored: an answer stored once, never "saved nothing" about it."""
    rt = await start(lock_timeout_seconds=lease, progress_interval_seconds=3600)  # no progress: straight to commit
    warm = message("warm up")
    assert await rt.ask(warm) == "echo: warm up"
    await settled(rt)
    fake_openai.script(Hang())
    turn = message("commit in the sleep")
    assert await rt.delivery.receive(turn) == "taken"
    await asyncio.wait_for(fake_openai.received.get(), 5)
    async with debug_sleep(admin, stall_server.port, 3.0) as woken:  # longer than redis-py's four attempts
        fake_openai.release()  # the answer is ready while Redis sleeps: the commit waits on it
        await woken
    told = await rt.replies.wait_for(turn.dedupe_key, timeout=10)
    await settled(rt)
    assert posted([rt], turn) == [told]
    stored = await history(rt)
    assert stored.count("commit in the sleep") == (0 if "saved nothing" in told else 1)
    assert told == "echo: commit in the sleep"  # Redis came back: the turn is kept, not given up
    assert stored == ["warm up", "echo: warm up", "commit in the sleep", "echo: commit in the sleep"]
    assert await rt.ask(message("after")) == "echo: after"
    left, states = await inbox_state(stall_server, key_prefix)
    assert left == 0 and set(states.values()) == {"delivered"}


@pytest.mark.parametrize("phase", ["answering", "committing"])
async def test_a_lease_lost_mid_turn_to_a_pause_is_answered_once_by_either_replica_in_order(
    start: Any,
    admin: Redis,
    stall_server: RedisServer,
    key_prefix: str,
    fake_openai: FakeOpenAI,
    caplog: pytest.LogCaptureFixture,
    phase: str,
) -> None:
    """CLIENT PAUSE WRITE outlasts the lease: the owner's renewals and commit wait and its lease runs out.
    Answering, its turn stops and either replica resumes the message; committing, the late commit lands
    (nobody took the lease yet) or is fenced out by the replica that did. Either way each message is
    posted once across both replicas, and the history is whole and in arrival order."""
    first, second = await start(lock_timeout_seconds=1), await start(lock_timeout_seconds=1)
    group = (first, second)
    sent: list[IncomingMessage] = []

    async def arrive(rt: Runtime, text: str) -> IncomingMessage:
        incoming = message(text)
        await deliver(rt, incoming)
        sent.append(incoming)  # arrival order: the order in which `receive` accepted them
        return incoming

    fake_openai.script(Hang())
    held = await arrive(first, "m0 held")
    await asyncio.wait_for(fake_openai.received.get(), 5)  # `first` holds the lease and waits on the model
    await arrive(second, "m1 queued")
    assert await admin.client_pause(2500, all=False)  # WRITE: scripts and writes wait, reads go on
    if phase == "committing":
        fake_openai.release()  # the answer comes while writes wait: the commit waits past the lease
    await arrive(second, "m2 in the pause")  # refused while paused (the platform retries) or stored late
    if phase == "answering":
        fake_openai.release()  # the turn that lost its lease was cancelled; nothing waits on this any more
    for i, rt in enumerate((first, second, first), start=3):
        await arrive(rt, f"m{i} after")

    async def all_answered() -> bool:
        return all(posted(group, incoming) for incoming in sent)

    await wait_until(all_answered, timeout=20)
    await settled(*group)
    for incoming in sent:
        assert posted(group, incoming) == [f"echo: {incoming.text}"], incoming.text
    assert await history(first) == [t for m in sent for t in (m.text, f"echo: {m.text}")]
    assert "lease expired unrenewed" in caplog.text  # the owner did lose its lease mid-turn
    handled = [w for rt in group for w in rt.replies.writers if w.incoming.dedupe_key == held.dedupe_key]
    if phase == "answering":
        assert len(handled) >= 2  # the first owner's turn, then the one that resumed it after the lease ran out
    left, states = await inbox_state(stall_server, key_prefix)
    assert left == 0 and set(states.values()) == {"delivered"} and len(states) == len(sent)


@pytest.mark.slow
async def test_four_hundred_conversations_on_a_pool_of_two_are_all_answered(start: Any) -> None:
    """A busy pool is not a down Redis: waiting for a connection is bounded by the lease, not by
    REDIS_TIMEOUT_SECONDS, so no one is told the memory is unreachable."""
    rt = await start(redis_pool_size=2)  # REDIS_TIMEOUT_SECONDS stays 0.5: far less than the wait for a connection
    assert rt.gateway.backend.client.connection_pool.max_connections == 2
    incoming = [message(f"hello from {i}", user=f"P{i}") for i in range(400)]
    outcomes = await asyncio.gather(*(rt.delivery.receive(m) for m in incoming))
    assert set(outcomes) <= {"taken", "queued"}
    await rt.replies.wait_count(400, timeout=90)
    await settled(rt)
    assert rt.replies.notices == {}
    for m in incoming:
        assert rt.replies.texts[m.dedupe_key] == [f"echo: {m.text}"]
    for m in incoming[::40]:
        assert await history(rt, m.user_id) == [m.text, f"echo: {m.text}"]
