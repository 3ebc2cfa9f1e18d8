"""Embedded-store behaviour: survives a restart, expires on its clock, needs no server."""

from __future__ import annotations

from pathlib import Path

from core.messages import ChatMessage
from core.settings import Settings
from core.store import SqliteConnection, open_backend


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


async def test_history_survives_reopening_the_file(tmp_path: Path) -> None:
    first = SqliteConnection(tmp_path / "m.sqlite3")
    await first.store("t1").add_messages([ChatMessage(role="user", text="still here?")])
    await first.aclose()
    second = SqliteConnection(tmp_path / "m.sqlite3")
    assert [m.text for m in await second.store("t1").list_messages()] == ["still here?"]
    await second.aclose()


async def test_a_thread_untouched_for_its_ttl_is_gone(tmp_path: Path) -> None:
    clock = FakeClock()
    backend = SqliteConnection(tmp_path / "m.sqlite3", ttl_seconds=60, clock=clock)
    store = backend.store("t1")
    await store.add_messages([ChatMessage(role="user", text="a")])
    clock.now += 59
    await store.add_messages([ChatMessage(role="user", text="b")])  # sliding: refreshed here
    clock.now += 59
    assert [m.text for m in await store.list_messages()] == ["a", "b"]
    clock.now += 2
    assert await store.list_messages() == []
    assert [r async for r in backend.iter_threads()] == []
    await store.add_messages([ChatMessage(role="user", text="new start")])
    assert [m.text for m in await store.list_messages()] == ["new start"]
    await backend.aclose()


async def test_settings_without_redis_url_choose_the_embedded_store(tmp_path: Path) -> None:
    backend = open_backend(Settings(_env_file=None, data_dir=tmp_path / "data"))  # type: ignore[call-arg]
    assert isinstance(backend, SqliteConnection)
    await backend.store("t1").add_messages([ChatMessage(role="user", text="x")])
    assert (tmp_path / "data").is_dir()
    await backend.aclose()
