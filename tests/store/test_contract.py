"""The memory contract, run unchanged against Redis and the embedded SQLite store."""

from __future__ import annotations

import asyncio
import logging

import pytest

from core.messages import ChatMessage
from core.store import RedisConnection, SqliteConnection
from tests.store.conftest import BackendFactory


def user(text: str) -> ChatMessage:
    return ChatMessage(role="user", text=text)


def reply(text: str) -> ChatMessage:
    return ChatMessage(role="assistant", text=text)


async def test_list_messages_returns_added_messages_oldest_first(backend_factory: BackendFactory) -> None:
    store = (await backend_factory()).store("user_U1_session_C1", "slack")
    sent = [user("hello"), reply("hi there"), user("how are you?")]
    await store.add_messages(sent[:2])
    await store.add_messages(sent[2:])
    assert await store.list_messages() == sent


async def test_add_messages_keeps_only_newest_when_over_max(backend_factory: BackendFactory) -> None:
    store = (await backend_factory(max_messages=3)).store("t1")
    for i in range(5):
        await store.add_messages([user(f"m{i}")])
    assert [m.text for m in await store.list_messages()] == ["m2", "m3", "m4"]


async def test_one_batch_larger_than_max_keeps_its_newest(backend_factory: BackendFactory) -> None:
    store = (await backend_factory(max_messages=4)).store("t1")
    await store.add_messages([user(f"m{i}") for i in range(6)])
    assert [m.text for m in await store.list_messages()] == ["m2", "m3", "m4", "m5"]


async def test_max_messages_none_keeps_everything(backend_factory: BackendFactory) -> None:
    store = (await backend_factory(max_messages=None)).store("t1")
    await store.add_messages([user(f"m{i}") for i in range(1500)])
    assert len(await store.list_messages()) == 1500


@pytest.mark.parametrize("bad", [0, -1])
async def test_max_messages_zero_or_negative_is_rejected(backend_factory: BackendFactory, bad: int) -> None:
    backend = await backend_factory(max_messages=bad)
    with pytest.raises(ValueError, match="max_messages"):
        backend.store("t1")


async def test_add_messages_with_nothing_writes_nothing(backend_factory: BackendFactory) -> None:
    store = (await backend_factory(ttl_seconds=100)).store("t1")
    await store.add_messages([])
    assert await store.list_messages() == []
    assert await store.ttl_seconds_left() is None


async def test_round_trip_is_exact_for_unicode_newlines_and_100kb(backend_factory: BackendFactory) -> None:
    store = (await backend_factory()).store("t1")
    texts = [
        "héllo wörld 你好 🌍👩‍👩‍👧",
        "line1\nline2\r\n\ttab\u2028sep\x00nul",
        "x" * 100_000,
        "",
        '{"json": "in text"}',
    ]
    sent = [user(t) for t in texts]
    await store.add_messages(sent)
    assert await store.list_messages() == sent


async def test_threads_and_namespaces_are_isolated(backend_factory: BackendFactory) -> None:
    backend = await backend_factory()
    a, b, c = backend.store("t1", "slack"), backend.store("t2", "slack"), backend.store("t1", "discord")
    await a.add_messages([user("a")])
    await b.add_messages([user("b")])
    await c.add_messages([user("c")])
    assert [[m.text for m in await s.list_messages()] for s in (a, b, c)] == [["a"], ["b"], ["c"]]


async def test_clear_forgets_the_thread_only(backend_factory: BackendFactory) -> None:
    backend = await backend_factory()
    a, b = backend.store("t1"), backend.store("t2")
    await a.add_messages([user("a")])
    await b.add_messages([user("b")])
    await a.clear()
    assert await a.list_messages() == []
    assert [m.text for m in await b.list_messages()] == ["b"]


async def test_ttl_is_set_on_write_and_refreshed_by_the_next(backend_factory: BackendFactory) -> None:
    store = (await backend_factory(ttl_seconds=1000)).store("t1")
    await store.add_messages([user("a")])
    first = await store.ttl_seconds_left()
    assert first is not None and 990 <= first <= 1000
    await store.add_messages([user("b")])
    second = await store.ttl_seconds_left()
    assert second is not None and second >= first - 1


async def test_no_ttl_means_the_thread_never_expires(backend_factory: BackendFactory) -> None:
    store = (await backend_factory(ttl_seconds=None)).store("t1")
    await store.add_messages([user("a")])
    assert await store.ttl_seconds_left() is None


async def test_fifty_concurrent_writers_lose_nothing_and_never_exceed_the_cap(
    backend_factory: BackendFactory,
) -> None:
    backend = await backend_factory(max_messages=20)
    store = backend.store("busy")
    seen_lengths: list[int] = []
    done = asyncio.Event()

    async def writer(n: int) -> None:
        await backend.store("busy").add_messages([user(f"u{n}"), reply(f"r{n}")])

    async def reader() -> None:
        while not done.is_set():
            seen_lengths.append(len(await backend.store("busy").list_messages()))

    reading = asyncio.create_task(reader())
    await asyncio.gather(*(writer(n) for n in range(50)))
    done.set()
    await reading
    stored = await store.list_messages()
    assert len(stored) == 20
    assert max(seen_lengths) <= 20
    # Each turn's pair stays together and in order: atomic appends never interleave.
    pairs = [(stored[i].text, stored[i + 1].text) for i in range(0, 20, 2)]
    assert all(u[1:] == r[1:] and u[0] == "u" and r[0] == "r" for u, r in pairs)


async def test_fifty_concurrent_writers_without_cap_store_every_message(backend_factory: BackendFactory) -> None:
    backend = await backend_factory()
    await asyncio.gather(*(backend.store("busy").add_messages([user(f"u{n}")]) for n in range(50)))
    assert sorted(m.text for m in await backend.store("busy").list_messages()) == sorted(f"u{n}" for n in range(50))


async def test_serialize_holds_metadata_only(backend_factory: BackendFactory) -> None:
    store = (await backend_factory(max_messages=7, ttl_seconds=60)).store("user_U1_session_C1", "slack")
    await store.add_messages([user("secret text")])
    state = await store.serialize()
    assert state["thread_id"] == "user_U1_session_C1"
    assert state["namespace"] == "slack"
    assert state["max_messages"] == 7
    flat = repr(state)
    assert "secret text" not in flat and "redis://" not in flat and "sqlite3" not in flat


async def test_update_from_state_points_a_store_at_the_saved_thread(backend_factory: BackendFactory) -> None:
    backend = await backend_factory()
    original = backend.store("keep-me", "discord")
    await original.add_messages([user("remember this")])
    fresh = backend.store("something-else")
    await fresh.update_from_state(await original.serialize())
    assert fresh.thread_id == "keep-me"
    assert [m.text for m in await fresh.list_messages()] == ["remember this"]


async def test_a_corrupt_entry_is_skipped_with_a_warning_naming_the_key(
    backend_factory: BackendFactory, caplog: pytest.LogCaptureFixture
) -> None:
    backend = await backend_factory()
    store = backend.store("t1")
    await store.add_messages([user("before")])
    await _append_raw(backend, store.key, "not json at all {")
    await _append_raw(backend, store.key, '{"role": "wizard", "text": 1}')
    await store.add_messages([user("after")])
    with caplog.at_level(logging.WARNING):
        assert [m.text for m in await store.list_messages()] == ["before", "after"]
    assert sum(store.key in r.getMessage() for r in caplog.records) == 2


async def _append_raw(backend: RedisConnection | SqliteConnection, key: str, raw: str) -> None:
    if isinstance(backend, RedisConnection):
        await backend.client.rpush(key, raw)  # type: ignore[misc]
    else:
        await backend._db.run(
            lambda conn: conn.execute("INSERT INTO messages (key, payload) VALUES (?, ?)", (key, raw)), write=True
        )


async def test_flags_are_set_and_read(backend_factory: BackendFactory) -> None:
    backend = await backend_factory()
    assert not await backend.has_flag("slack:C1:1700.1")
    await backend.set_flag("slack:C1:1700.1", 60)
    assert await backend.has_flag("slack:C1:1700.1")


async def test_a_flag_without_ttl_stays_until_cleared_and_clearing_says_whether_it_was_set(
    backend_factory: BackendFactory,
) -> None:
    backend = await backend_factory()
    await backend.set_flag("paused:slack:T1-C1", None)
    assert await backend.has_flag("paused:slack:T1-C1") and not await backend.has_flag("paused:slack:T1-C2")
    assert await backend.clear_flag("paused:slack:T1-C1")
    assert not await backend.has_flag("paused:slack:T1-C1")
    assert not await backend.clear_flag("paused:slack:T1-C1")


async def test_iter_threads_finds_stored_threads_by_namespace_and_pattern(backend_factory: BackendFactory) -> None:
    backend = await backend_factory()
    stored = {("slack", "user_U1_session_C1"), ("slack", "user_U2_session_C1"), ("discord", "user_U1_session_9")}
    for ns, tid in stored:
        await backend.store(tid, ns).add_messages([user("x")])
    assert {(r.namespace, r.thread_id) async for r in backend.iter_threads()} == stored
    slack_u1 = [r.thread_id async for r in backend.iter_threads("slack", "user_U1_*")]
    assert slack_u1 == ["user_U1_session_C1"]


async def test_ping_answers_true_when_reachable(backend_factory: BackendFactory) -> None:
    backend = await backend_factory()
    assert await backend.ping()
    assert await backend.store("t1").ping()
