"""The usage ledger's contract, on Redis, a Redis Cluster and the embedded SQLite file alike: counts per
subject and model, the budget charge, atomic reservations, the top list."""

from __future__ import annotations

import asyncio

from core.store.usage import Charge, Subject
from core.usage.meter import TokenCount
from tests.store.conftest import BackendFactory

DAY, NEXT = "2026-12-01", "2026-12-02"
U1, U2 = Subject("user", "slack", "U1"), Subject("user", "slack", "U2")
C1 = Subject("channel", "slack", "C1")
T1 = Subject("workspace", "slack", "T1")


async def test_a_settled_turn_counts_for_each_subject_by_model(backend_factory: BackendFactory) -> None:
    ledger = (await backend_factory()).usage()
    await ledger.settle(DAY, [U1, C1, T1], "gpt-a", TokenCount(100, 20), [Charge(U1, 120), Charge(T1, 120)])
    await ledger.settle(DAY, [U1, C1, T1], "gpt-b", TokenCount(10, 5, 15), [Charge(U1, 15), Charge(T1, 15)])
    await ledger.settle(NEXT, [U1, C1], "gpt-a", TokenCount(1, 1), [Charge(U1, 2)])
    [user, channel, workspace] = await ledger.usage([DAY], [U1, C1, T1])
    assert user.models == {"gpt-a": TokenCount(100, 20), "gpt-b": TokenCount(10, 5, 15)}
    assert user.tokens == TokenCount(110, 25, 15) and user.turns == 2 and user.charged == 135
    assert channel.tokens == user.tokens and channel.charged == 0  # channels have no budget
    assert workspace.charged == 135
    [both_days] = await ledger.usage([DAY, NEXT], [U1])
    assert both_days.tokens == TokenCount(111, 26, 15) and both_days.turns == 3
    assert both_days.charged == 2  # the charge is the last day's: budgets are daily
    [nobody] = await ledger.usage([DAY], [U2])
    assert nobody.tokens == TokenCount() and nobody.turns == 0


async def test_a_reservation_is_refused_once_the_charge_reached_the_limit(backend_factory: BackendFactory) -> None:
    ledger = (await backend_factory()).usage()
    assert await ledger.reserve(DAY, [Charge(U1, 60, limit=100), Charge(T1, 60, limit=1000)]) is None
    assert await ledger.reserve(DAY, [Charge(U1, 60, limit=100), Charge(T1, 60, limit=1000)]) is None  # 60 < 100
    assert await ledger.reserve(DAY, [Charge(U1, 60, limit=100), Charge(T1, 60, limit=1000)]) == U1  # 120 >= 100
    [user, workspace] = await ledger.usage([DAY], [U1, T1])
    assert user.charged == 120 and workspace.charged == 120  # the refused one added to neither
    assert await ledger.reserve(DAY, [Charge(U2, 60, limit=100), Charge(T1, 60, limit=120)]) == T1
    assert await ledger.reserve(NEXT, [Charge(U1, 60, limit=100)]) is None  # a new day, a new budget


async def test_settling_gives_back_what_a_turn_did_not_use_and_never_goes_below_zero(
    backend_factory: BackendFactory,
) -> None:
    ledger = (await backend_factory()).usage()
    await ledger.reserve(DAY, [Charge(U1, 500, limit=1000)])
    await ledger.settle(DAY, [U1, C1], "m", TokenCount(), [Charge(U1, -500)])  # a failed turn: all of it back
    [user] = await ledger.usage([DAY], [U1])
    assert user.charged == 0 and user.turns == 0 and user.tokens == TokenCount()
    await ledger.settle(DAY, [U1], "m", TokenCount(), [Charge(U1, -50)])
    assert (await ledger.usage([DAY], [U1]))[0].charged == 0
    await ledger.settle(DAY, [U2], "m", TokenCount(), [Charge(U2, -50)])  # nothing charged yet: nothing to refund
    assert await ledger.reserve(DAY, [Charge(U2, 10, limit=10)]) is None
    assert (await ledger.usage([DAY], [U2]))[0].charged == 10


async def test_concurrent_reservations_overshoot_by_at_most_one(backend_factory: BackendFactory) -> None:
    backend = await backend_factory()
    ledger = backend.usage()
    results = await asyncio.gather(*(ledger.reserve(DAY, [Charge(U1, 30, limit=100)]) for _ in range(40)))
    admitted = results.count(None)
    assert admitted == 4  # 0, 30, 60, 90 were each below 100; from 120 on, none
    assert (await ledger.usage([DAY], [U1]))[0].charged == 120  # the limit plus less than one reservation


async def test_top_lists_the_most_tokens_first_over_the_days_asked(backend_factory: BackendFactory) -> None:
    ledger = (await backend_factory()).usage()
    await ledger.settle(DAY, [U1], "m", TokenCount(10, 0), [])
    await ledger.settle(DAY, [U2], "m", TokenCount(30, 0), [])
    await ledger.settle(NEXT, [U1], "m", TokenCount(25, 0), [])
    await ledger.settle(NEXT, [Subject("user", "discord", "99")], "m", TokenCount(1000, 0), [])
    top = await ledger.top([DAY, NEXT], "user", 10, platform="slack")
    assert [(u.subject.id, u.tokens.total) for u in top] == [("U1", 35), ("U2", 30)]
    assert [u.subject.id for u in await ledger.top([DAY, NEXT], "user", 1)] == ["99"]
    assert await ledger.top([DAY], "workspace", 10) == []
