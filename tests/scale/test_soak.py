"""Memory stays bounded: 10,000 conversations through the delivery runtime, capped, then expired back to baseline.
And a full runner stays fair: a message queued for want of a slot gets the next one, before later arrivals.

The load runs with TTLs an hour long, far beyond what it can take on any machine, so nothing expires
while it is counted. Then every key it left is checked against its real TTL: each has one, no longer
than the settings allow (a key without one is a leak, reported by its pattern). Then the clock moves
on: every TTL is cut to nothing, and Redis must be back to the baseline key count and memory. The one
key kept without a TTL by design, the recovery index `<prefix>:<ns>:inboxes`, must be emptied by the
delivery runner's sweeper.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest
from redis.asyncio import Redis

from core.llm import OfflineChatModel, OpenAIChatModel
from core.messages import ChatMessage
from core.store.usage import USAGE_KEEP_SECONDS
from core.turns import IncomingMessage
from tests.conftest import make_settings, openai_client
from tests.fakes.openai_server import FakeOpenAI, Hang
from tests.support.delivery import Runtime, start_runtime, stop_runtime
from tests.support.redis_proc import RedisServer
from tests.support.waiting import wait_until

# Each turn is the whole delivery path (intake, lease, commit, post, finish, later the index sweep): about
# 2.5 ms of CPU. Measured on two cores shared with other jobs (load 2.5 to 4): 10,000 conversations (60,000
# keys) 44 to 66 s; 20,000, which assert nothing more, 83 to 110 s.
THREADS = 10_000
BUSY_THREADS, BUSY_TURNS = 40, 14
CAP = 10
TTL = 3600  # THREAD_TTL_SECONDS and DEDUPE_TTL_SECONDS: an hour, whatever the machine's load
RATE_KEY_SECONDS = 120  # how long the inbox keeps a sender's per-minute counter
SLOTS = 64  # MAX_CONCURRENT_TURNS, and messages in flight at once: the runner is kept full
PREFIX, NAMESPACE = "chat", "soak"
PER_THREAD = {f"{PREFIX}:{NAMESPACE}:{{*}}:{part}" for part in ("messages", "writes", "inbox", "turns", "seen", "rate")}
INDEX = f"{PREFIX}:{NAMESPACE}:inboxes"
# Token usage by UTC day (issue 14): per user and channel, and the day's index of each, kept USAGE_KEEP_SECONDS.
USAGE = {f"{PREFIX}:usage:{{*}}:{scope}{each}" for scope in ("user", "channel") for each in ("", ":*")}

# Per key pattern (the hash tag as `{*}`): [keys, keys without a TTL, longest TTL in ms, longest list].
# One script on the test's own Redis: every key surveyed without two round trips per key.
SURVEY = """
local stats, cursor = {}, '0'
repeat
  local page = redis.call('SCAN', cursor, 'MATCH', ARGV[1], 'COUNT', 1000)
  cursor = page[1]
  for _, key in ipairs(page[2]) do
    local p = string.gsub(key, '{[^}]*}', '{*}')
    p = string.gsub(p, '^(.-:usage:{%*}:%a+):.+$', '%1:*')  -- one pattern per scope, not per subject
    local s = stats[p] or {0, 0, 0, 0}
    local ttl = redis.call('PTTL', key)
    s[1] = s[1] + 1
    if ttl < 0 then s[2] = s[2] + 1 elseif ttl > s[3] then s[3] = ttl end
    if redis.call('TYPE', key).ok == 'list' then s[4] = math.max(s[4], redis.call('LLEN', key)) end
    stats[p] = s
  end
until cursor == '0'
return cjson.encode(stats)
"""
# The clock jumps past every TTL: each key that has one expires now. A key without one stays (a leak).
EXPIRE_ALL = """
local cursor, cut = '0', 0
repeat
  local page = redis.call('SCAN', cursor, 'MATCH', ARGV[1], 'COUNT', 1000)
  cursor = page[1]
  for _, key in ipairs(page[2]) do
    if redis.call('PTTL', key) > 0 then
      redis.call('PEXPIRE', key, 1)
      cut = cut + 1
    end
  end
until cursor == '0'
return cut
"""


class OnePieceModel(OfflineChatModel):
    """The offline model's answer streamed in one piece: the turns cost the store's round trips, not previews."""

    async def stream(self, messages: Sequence[ChatMessage]) -> AsyncIterator[str]:
        yield await self.complete(messages)


def message(user: int, n: int) -> IncomingMessage:
    return IncomingMessage(NAMESPACE, f"E{user}-{n}", f"U{user}", "C1", f"hi {n}")


async def pump(runtime: Runtime, messages: list[IncomingMessage]) -> None:
    """Deliver `messages`, SLOTS unanswered at a time; each must get the model's answer."""
    replies, loop = runtime.replies, asyncio.get_running_loop()
    waiting: dict[str, asyncio.Future[str]] = {}
    finished = replies.finished

    def on_finished(key: str, text: str, *, notice: bool = False) -> None:
        finished(key, text, notice=notice)
        future = waiting.pop(key, None)
        if future is not None and not future.done():
            future.set_result(text)

    # One future per message: Replies.wait_for wakes every waiter on every reply, THREADS times over.
    replies.finished = on_finished  # type: ignore[method-assign]
    limit = asyncio.Semaphore(SLOTS)

    async def one(incoming: IncomingMessage) -> None:
        async with limit:
            answered = waiting[incoming.dedupe_key] = loop.create_future()
            assert await runtime.delivery.receive(incoming) in ("taken", "queued")
            text = await asyncio.wait_for(answered, 60)
            assert text.startswith("[offline model]"), text

    try:
        await asyncio.gather(*(one(m) for m in messages))
    finally:
        replies.finished = finished  # type: ignore[method-assign]


async def survey(admin: Redis) -> dict[str, list[int]]:
    stats: dict[str, list[int]] = json.loads(await admin.eval(SURVEY, 0, f"{PREFIX}:*"))
    return stats


@pytest.mark.slow
@pytest.mark.timeout(300)  # under a minute on two busy cores (see THREADS); the bound, not the expectation
async def test_ten_thousand_threads_stay_capped_and_expire_back_to_baseline(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "redis")
    server.start()
    admin = Redis.from_url(server.url, decode_responses=True)
    settings = make_settings(
        redis_url=server.url, key_prefix=PREFIX, max_messages=CAP, thread_ttl_seconds=TTL, dedupe_ttl_seconds=TTL,
        rate_limit_per_minute=1000, max_concurrent_turns=SLOTS, lock_timeout_seconds=3,
    )  # fmt: skip
    runtime: Runtime | None = None
    try:
        baseline_keys = await admin.dbsize()
        baseline_memory = (await admin.info("memory"))["used_memory"]
        runtime = await start_runtime(settings, OnePieceModel(), platform=NAMESPACE)
        started = time.monotonic()
        await pump(runtime, [message(user, 0) for user in range(THREADS)])
        for n in range(BUSY_TURNS):  # a few long conversations push against the cap
            await pump(runtime, [message(user, n + 1) for user in range(BUSY_THREADS)])
        loaded = time.monotonic() - started
        assert loaded < TTL / 10, f"the load took {loaded:.0f}s: the TTLs no longer outlast it by far"
        delivery = runtime.delivery

        async def settled() -> bool:  # the last turns are marked delivered just after their reply is out
            return delivery.in_flight == 0

        await wait_until(settled, timeout=10)

        stats = await survey(admin)
        keys = {p: s[0] for p, s in stats.items()}
        assert {p: n for p, n in keys.items() if p in PER_THREAD} == dict.fromkeys(PER_THREAD, THREADS), keys
        assert stats[f"{PREFIX}:{NAMESPACE}:{{*}}:messages"][3] == CAP  # the busy threads hit the cap, never pass it
        busy = [f"{PREFIX}:{NAMESPACE}:{{user_U{u}_session_C1}}:messages" for u in range(BUSY_THREADS)]
        assert [await admin.llen(key) for key in busy] == [CAP] * BUSY_THREADS
        leaks = {p: s[1] for p, s in stats.items() if s[1] and p != INDEX}
        assert not leaks, f"keys without a TTL, never to expire: {leaks}"
        allowed = {p: (RATE_KEY_SECONDS if p.endswith(":rate") else TTL) * 1000 for p in PER_THREAD}
        allowed |= dict.fromkeys(USAGE, USAGE_KEEP_SECONDS * 1000)
        too_long = {p: s[2] for p, s in stats.items() if p != INDEX and s[2] > allowed.get(p, TTL * 1000)}
        assert not too_long, f"keys kept longer than the settings allow (ms): {too_long}"
        assert set(stats) <= PER_THREAD | USAGE | {INDEX}, f"keys of unknown patterns: {set(stats) - PER_THREAD}"
        assert keys[f"{PREFIX}:usage:{{*}}:user:*"] == THREADS  # every user's tokens counted, one hash each
        assert await admin.zcard(INDEX) <= THREADS  # one entry per conversation at most
        peak_memory = (await admin.info("memory"))["used_memory"]
        assert peak_memory > baseline_memory + THREADS * 100  # the load was real

        assert await admin.eval(EXPIRE_ALL, 0, f"{PREFIX}:*") >= len(PER_THREAD) * THREADS

        async def back_to_baseline() -> bool:
            return await admin.dbsize() == baseline_keys

        try:
            await wait_until(back_to_baseline, timeout=60, every=0.2)
        except TimeoutError:
            left = {p: s[0] for p, s in (await survey(admin)).items()}
            raise AssertionError(f"keys left after every TTL ran out: {left}") from None
        settled_memory = (await admin.info("memory"))["used_memory"]
        assert settled_memory - baseline_memory < 2 * 1024 * 1024, (baseline_memory, peak_memory, settled_memory)
        assert delivery.in_flight == 0 and not delivery._waiting and not delivery._behind  # nothing per conversation
    finally:
        if runtime is not None:
            await stop_runtime(runtime)
        await admin.aclose()
        server.stop()


async def test_a_message_queued_for_want_of_a_slot_goes_before_later_arrivals(
    redis_url: str, key_prefix: str, fake_openai: FakeOpenAI
) -> None:
    """Without this, under sustained load a queued message waits for as long as newcomers keep coming."""
    settings = make_settings(redis_url=redis_url, key_prefix=key_prefix, max_concurrent_turns=1)
    model = OpenAIChatModel("m", async_client=openai_client(fake_openai))
    runtime = await start_runtime(settings, model, platform=NAMESPACE)
    try:
        fake_openai.script(Hang())
        first, queued, newcomer = (message(user, 0) for user in (1, 2, 3))
        assert await runtime.delivery.receive(first) == "taken"
        await asyncio.wait_for(fake_openai.received.get(), 5)
        assert await runtime.delivery.receive(queued) == "queued"  # the one slot is taken
        arrivals: list[asyncio.Future[str]] = []
        # The newcomer arrives the moment the first turn ends and frees the slot, before any sweep.
        turn = runtime.delivery._running[(NAMESPACE, "user_U1_session_C1")]
        turn.add_done_callback(lambda _: arrivals.append(asyncio.ensure_future(runtime.delivery.receive(newcomer))))
        fake_openai.release()
        for incoming in (first, queued, newcomer):
            await runtime.replies.wait_for(incoming.dedupe_key, timeout=10)
        assert await arrivals[0] == "queued"
        assert runtime.replies.order == [first.dedupe_key, queued.dedupe_key, newcomer.dedupe_key]
    finally:
        await stop_runtime(runtime)
