"""The inbox contract: durable intake, one lease per conversation, fencing, states, recovery index."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from pathlib import Path

import pytest

from core.messages import ChatMessage
from core.store import RedisConnection, SqliteConnection
from core.store.inbox import Claim, Inbox, Lease
from core.store.sqlite_db import sweep

InboxFactory = Callable[..., Inbox]
NS, TID = "slack", "user_U1_session_T1-C1"


@pytest.fixture(params=["redis", "cluster", "sqlite"])
async def inbox_factory(
    request: pytest.FixtureRequest, redis_url: str, key_prefix: str, tmp_path: Path
) -> AsyncIterator[InboxFactory]:
    backend: RedisConnection | SqliteConnection
    if request.param == "sqlite":
        backend = SqliteConnection(tmp_path / "memory.sqlite3", key_prefix=key_prefix, max_messages=4)
    else:
        url = request.getfixturevalue("redis_cluster").url if request.param == "cluster" else redis_url
        backend = RedisConnection.from_url(url, key_prefix=key_prefix, max_messages=4)

    def make(*, owner: str | None = None, lease_seconds: float = 30.0) -> Inbox:
        return backend.inbox(lease_seconds=lease_seconds, keep_seconds=3600, owner=owner)

    yield make
    await backend.aclose()


async def receive(inbox: Inbox, key: str, *, token: str | None = None, take: bool = True, **kwargs: object):  # type: ignore[no-untyped-def]
    return await inbox.receive(NS, TID, key, f'{{"text": "{key}"}}', token=token or f"t-{key}", take=take, **kwargs)  # type: ignore[arg-type]


def turn(text: str) -> list[ChatMessage]:
    return [ChatMessage(role="user", text=text), ChatMessage(role="assistant", text=f"re: {text}")]


async def test_receive_takes_the_free_lease_and_hands_back_the_message(inbox_factory: InboxFactory) -> None:
    inbox = inbox_factory(owner="a")
    intake = await receive(inbox, "m1")
    assert intake.outcome == "taken" and intake.claim is not None
    claim = intake.claim
    assert (claim.lease.message_key, claim.lease.owner, claim.lease.deliveries) == ("m1", "a", 1)
    assert claim.payload == '{"text": "m1"}' and claim.record.state == "received" and claim.history == []
    assert not claim.resumed


async def test_another_delivery_of_a_message_is_a_duplicate_but_a_retry_of_the_same_call_is_not(
    inbox_factory: InboxFactory,
) -> None:
    inbox = inbox_factory(owner="a")
    first = await receive(inbox, "m1", token="tok")
    again = await receive(inbox, "m1", token="tok")  # redis-py resending a call whose reply was lost
    other = await receive(inbox, "m1", token="other")  # the platform delivering it again
    assert first.claim is not None and again.claim is not None
    assert again.outcome == "taken" and again.claim.lease == first.claim.lease
    assert other.outcome == "duplicate" and other.state == "received"


async def test_messages_behind_a_lease_queue_and_are_handed_over_in_arrival_order(inbox_factory: InboxFactory) -> None:
    inbox = inbox_factory(owner="a")
    first = await receive(inbox, "m1")
    assert first.claim is not None
    assert (await receive(inbox, "m2")).outcome == "queued"
    assert (await receive(inbox, "m3")).outcome == "queued"
    claim: Claim | None = first.claim
    order = []
    while claim is not None:
        order.append(claim.lease.message_key)
        record = claim.record.answered(f"re {claim.lease.message_key}", "answer")
        assert await inbox.commit(claim.lease, turn(claim.lease.message_key), record)
        claim = await inbox.finish(claim.lease, record.delivered(["ts1"]), take_next=True)
    assert order == ["m1", "m2", "m3"]
    assert (await receive(inbox, "m2", token="late")).state == "delivered"


async def test_the_next_claim_carries_the_history_committed_before_it(inbox_factory: InboxFactory) -> None:
    inbox = inbox_factory(owner="a")
    first = await receive(inbox, "m1")
    await receive(inbox, "m2")
    assert first.claim is not None
    record = first.claim.record.answered("re: m1", "answer")
    await inbox.commit(first.claim.lease, turn("m1"), record)
    second = await inbox.finish(first.claim.lease, record.delivered([]), take_next=True)
    assert second is not None
    assert [m.text for m in second.history] == ["m1", "re: m1"]


async def test_a_live_lease_is_busy_for_others_and_a_released_one_is_taken_over(inbox_factory: InboxFactory) -> None:
    a, b = inbox_factory(owner="a"), inbox_factory(owner="b")
    intake = await receive(a, "m1")
    assert intake.claim is not None
    busy = await b.resume(NS, TID)
    assert isinstance(busy, float) and 0 < busy <= 30
    await a.release(intake.claim.lease)
    taken = await b.resume(NS, TID)
    assert isinstance(taken, Claim)
    assert (taken.lease.owner, taken.lease.deliveries, taken.lease.message_key) == ("b", 2, "m1")
    assert taken.resumed


async def test_a_stale_owner_is_fenced_out_of_every_write(inbox_factory: InboxFactory) -> None:
    a, b = inbox_factory(owner="a"), inbox_factory(owner="b")
    intake = await receive(a, "m1")
    assert intake.claim is not None
    stale = intake.claim.lease
    await a.release(stale)
    taken = await b.resume(NS, TID)
    assert isinstance(taken, Claim)
    record = taken.record.answered("stale answer", "answer")
    assert not await a.commit(stale, turn("m1"), record)
    assert not await a.renew(stale)
    assert not await a.note_posted(stale, record)
    assert await b.commit(taken.lease, turn("m1"), taken.record.answered("fresh", "answer"))
    after = await b.finish(taken.lease, taken.record.delivered([]), take_next=True)
    assert after is None


async def test_an_expired_lease_is_taken_over_with_the_stored_answer(inbox_factory: InboxFactory) -> None:
    a, b = inbox_factory(owner="a", lease_seconds=0.2), inbox_factory(owner="b", lease_seconds=0.2)
    intake = await receive(a, "m1")
    assert intake.claim is not None
    await a.commit(intake.claim.lease, turn("m1"), intake.claim.record.answered("stored reply", "answer"))
    taken: Claim | float | None = None
    async with asyncio.timeout(5):  # the lease's own expiry, polled as a condition
        while not isinstance(taken, Claim):
            taken = await b.resume(NS, TID)
            if not isinstance(taken, Claim):
                await asyncio.sleep(0.05)
    assert taken.record.state == "answered" and taken.record.reply == "stored reply"
    assert [m.text for m in taken.history] == ["m1", "re: m1"]


async def test_a_retried_commit_stores_the_turn_once(inbox_factory: InboxFactory) -> None:
    inbox = inbox_factory(owner="a")
    intake = await receive(inbox, "m1")
    assert intake.claim is not None
    messages, record = turn("m1"), intake.claim.record.answered("re: m1", "answer")
    assert await inbox.commit(intake.claim.lease, messages, record)
    assert await inbox.commit(intake.claim.lease, messages, record)
    await receive(inbox, "m2")
    nxt = await inbox.finish(intake.claim.lease, record.delivered([]), take_next=True)
    assert nxt is not None and [m.text for m in nxt.history] == ["m1", "re: m1"]


async def test_a_commit_trims_to_its_own_max_messages_over_the_inboxs(inbox_factory: InboxFactory) -> None:
    inbox = inbox_factory(owner="a")  # the backend keeps 4
    first = await receive(inbox, "m1")
    assert first.claim is not None
    messages = [*turn("a"), *turn("b"), *turn("c")]
    await inbox.commit(first.claim.lease, messages, first.claim.record.answered("x", "answer"), max_messages=2,
                       ttl_seconds=600)  # fmt: skip
    await receive(inbox, "m2")
    second = await inbox.finish(first.claim.lease, first.claim.record.delivered([]), take_next=True)
    assert second is not None and [m.text for m in second.history] == ["c", "re: c"]


async def test_commit_with_clear_empties_the_history_first(inbox_factory: InboxFactory) -> None:
    inbox = inbox_factory(owner="a")
    first = await receive(inbox, "m1")
    assert first.claim is not None
    await inbox.commit(first.claim.lease, turn("m1"), first.claim.record.answered("x", "answer"))
    await receive(inbox, "reset")
    second = await inbox.finish(first.claim.lease, first.claim.record.delivered([]), take_next=True)
    assert second is not None and len(second.history) == 2
    await inbox.commit(second.lease, [], second.record.answered("Done", "command"), clear=True)
    await receive(inbox, "m3")
    third = await inbox.finish(second.lease, second.record.delivered([]), take_next=True)
    assert third is not None and third.history == []


async def test_a_reset_commit_empties_the_history_and_keeps_its_watermark(inbox_factory: InboxFactory) -> None:
    inbox = inbox_factory(owner="a")
    first = await receive(inbox, "m1")
    assert first.claim is not None
    await inbox.commit(first.claim.lease, turn("m1"), first.claim.record.answered("x", "answer"), clear=True)
    assert await inbox.reset_watermark(NS, TID) is None  # a clear that is no reset (the model's cut) marks nothing
    await receive(inbox, "reset")
    second = await inbox.finish(first.claim.lease, first.claim.record.delivered([]), take_next=True)
    assert second is not None and len(second.history) == 2
    await inbox.commit(second.lease, [], second.record.answered("Done", "command"), reset=1700000000.000123)
    await receive(inbox, "m3")
    third = await inbox.finish(second.lease, second.record.delivered([]), take_next=True)
    assert third is not None and third.history == []
    assert await inbox.reset_watermark(NS, TID) == 1700000000.000123
    assert await inbox.reset_watermark(NS, "another conversation") is None
    before = time.time()
    await inbox.mark_reset(NS, TID)  # an operator's `threads clear`
    mark = await inbox.reset_watermark(NS, TID)
    assert mark is not None and before <= mark <= time.time()


async def test_a_fenced_reset_commit_moves_no_watermark(inbox_factory: InboxFactory) -> None:
    inbox = inbox_factory(owner="a")
    first = await receive(inbox, "reset")
    assert first.claim is not None
    await inbox.release(first.claim.lease)
    assert isinstance(await inbox_factory(owner="b").resume(NS, TID), Claim)  # b holds it now
    assert not await inbox.commit(first.claim.lease, [], first.claim.record.answered("Done", "command"), reset=1.0)
    assert await inbox.reset_watermark(NS, TID) is None


async def test_rate_hits_count_the_sender_in_the_window_once_per_message(inbox_factory: InboxFactory) -> None:
    inbox = inbox_factory(owner="a")
    hits = [(await receive(inbox, f"m{i}", user_id="U1", rate_window=7, rate_limit=2)).hits for i in range(3)]
    assert hits == [1, 2, 3]
    assert (await receive(inbox, "m0", user_id="U1", rate_window=7, rate_limit=2)).hits == 1  # own retry
    assert (await receive(inbox, "n1", user_id="U1", rate_window=8, rate_limit=2)).hits == 1  # a new window


async def test_concurrent_arrivals_give_one_lease_and_lose_nothing(inbox_factory: InboxFactory) -> None:
    inbox = inbox_factory(owner="a")
    intakes = await asyncio.gather(*(receive(inbox, f"m{i:02d}") for i in range(30)))
    claims = [i.claim for i in intakes if i.outcome == "taken"]
    assert len(claims) == 1 and claims[0] is not None
    seen: list[str] = []
    claim: Claim | None = claims[0]
    while claim is not None:
        seen.append(claim.lease.message_key)
        claim = await inbox.finish(claim.lease, claim.record.delivered([]), take_next=True)
    assert sorted(seen) == [f"m{i:02d}" for i in range(30)] and len(set(seen)) == 30


async def test_the_index_lists_due_conversations_and_unschedules_only_an_unchanged_entry(
    inbox_factory: InboxFactory,
) -> None:
    inbox = inbox_factory(owner="a")
    score = await inbox.schedule(NS, TID, at=0)
    assert tuple(tid for tid, _ in await inbox.due(NS, 10) if tid == TID) == (TID,)
    newer = await inbox.schedule(NS, TID, at=1)
    await inbox.unschedule(NS, TID, score)  # rescheduled since: stays
    assert TID in [tid for tid, _ in await inbox.due(NS, 10)]
    await inbox.unschedule(NS, TID, newer)
    assert TID not in [tid for tid, _ in await inbox.due(NS, 10)]


def test_leases_are_plain_values() -> None:
    lease = Lease("slack", TID, "1-0", "m1", "a", 1)
    assert lease == Lease("slack", TID, "1-0", "m1", "a", 1)


# SQLite only: the embedded file keeps the inbox across restarts and expires it on its own clock.


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


async def test_sqlite_inbox_state_survives_reopening_the_file(tmp_path: Path) -> None:
    clock, path = FakeClock(), tmp_path / "memory.sqlite3"
    first = SqliteConnection(path, max_messages=4, clock=clock)
    a = first.inbox(lease_seconds=30, keep_seconds=3600, owner="a")
    intake = await receive(a, "m1")
    assert intake.claim is not None
    record = intake.claim.record.answered("stored reply", "answer")
    assert await a.commit(intake.claim.lease, turn("m1"), record)
    assert await a.note_posted(intake.claim.lease, replace(record, posted=("ts1",)))
    await first.aclose()  # the process dies here, its reply half posted

    second = SqliteConnection(path, max_messages=4, clock=clock)
    b = second.inbox(lease_seconds=30, keep_seconds=3600, owner="b")
    busy = await b.resume(NS, TID)
    assert isinstance(busy, float) and 0 < busy <= 30  # a's lease outlives the file being closed
    clock.now += 31
    taken = await b.resume(NS, TID)
    assert isinstance(taken, Claim) and taken.resumed
    assert (taken.lease.owner, taken.lease.deliveries, taken.payload) == ("b", 2, '{"text": "m1"}')
    assert (taken.record.state, taken.record.reply, taken.record.posted) == ("answered", "stored reply", ("ts1",))
    assert [m.text for m in taken.history] == ["m1", "re: m1"]
    assert (await receive(b, "m1", token="redelivered")).state == "answered"
    assert await b.finish(taken.lease, taken.record.delivered(["ts1"]), take_next=True) is None
    assert (await receive(b, "m1", token="late")).state == "delivered"
    await second.aclose()


async def test_sqlite_inbox_forgets_a_conversation_untouched_for_keep_seconds(tmp_path: Path) -> None:
    clock = FakeClock()
    backend = SqliteConnection(tmp_path / "memory.sqlite3", ttl_seconds=60, clock=clock)
    inbox = backend.inbox(lease_seconds=30, keep_seconds=120, owner="a")
    intake = await receive(inbox, "m1", user_id="U1", rate_window=1, rate_limit=5)
    assert intake.claim is not None
    await inbox.commit(intake.claim.lease, turn("m1"), intake.claim.record.answered("re", "answer"))
    assert (await receive(inbox, "m2")).outcome == "queued"
    clock.now += 121  # keep (and the history's TTL) passed: as if the Redis keys had expired
    again = await receive(inbox, "m1", token="redelivered", user_id="U1", rate_window=1, rate_limit=5)
    assert again.outcome == "taken" and again.claim is not None and again.hits == 1
    assert (again.claim.lease.deliveries, again.claim.record.state, again.claim.history) == (1, "received", [])
    assert not await inbox.renew(intake.claim.lease)  # the old entry went with its inbox
    assert await inbox.finish(again.claim.lease, again.claim.record.delivered([]), take_next=True) is None
    await backend.aclose()


_COLUMNS = {"inbox": "conversation", "turns": "conversation", "inbox_keep": "conversation"}
_COLUMNS |= {"writes": "conversation", "kv": "key", "messages": "key", "threads": "key"}


def rows_of(conn: sqlite3.Connection, thread_id: str) -> dict[str, int]:
    """Rows per table whose name carries the conversation's hash tag."""
    pattern = f"%{{{thread_id}}}%"
    return {
        table: conn.execute(f"SELECT count(*) FROM {table} WHERE {column} LIKE ?", (pattern,)).fetchone()[0]
        for table, column in _COLUMNS.items()
    }


async def test_sqlite_sweep_drops_expired_inbox_rows_and_keeps_live_ones(tmp_path: Path) -> None:
    clock, path = FakeClock(), tmp_path / "memory.sqlite3"
    backend = SqliteConnection(path, ttl_seconds=150, clock=clock)
    inbox = backend.inbox(lease_seconds=30, keep_seconds=120, owner="a")  # keeps records for the TTL: 150 s
    for thread_id in ("old", "live"):
        intake = await inbox.receive(NS, thread_id, "m1", "{}", token="t", take=True, user_id="U1", rate_limit=5)
        assert intake.claim is not None
        await inbox.commit(intake.claim.lease, turn("m1"), intake.claim.record.answered("re", "answer"))
        await inbox.receive(NS, thread_id, "m2", "{}", token="t2", take=True)
        await inbox.schedule(NS, thread_id, at=0)
        clock.now += 100
    await backend.aclose()
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        assert all(rows_of(conn, "old").values())
        sweep(conn, clock.now)  # "old" is 200 s old: past keep, TTL and the rate window; "live" 100 s
        assert rows_of(conn, "old") == dict.fromkeys(_COLUMNS, 0)
        assert all(rows_of(conn, "live").values())
        assert conn.execute("SELECT count(*) FROM inbox_index").fetchone()[0] == 2  # no TTL in Redis either
    finally:
        conn.close()


async def test_a_conversation_scheduled_for_now_is_due_at_once(inbox_factory: InboxFactory) -> None:
    """Scores carry a random fraction of a millisecond: one scheduled in this very millisecond is due too."""
    inbox = inbox_factory()
    for i in range(30):
        await inbox.schedule(NS, f"{TID}-{i}", time.time())
        assert f"{TID}-{i}" in [thread_id for thread_id, _ in await inbox.due(NS, 100)]
