"""`chat-gateway threads show|clear ID`: every namespace searched, ambiguity refused, the whole conversation
cleared (history, inbox, records, rate, recovery index, Slack thread flag), never under a running turn."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from redis.asyncio import Redis

from bots.slack.incoming import thread_flag
from core.llm import OfflineChatModel
from core.settings import Settings
from core.store import RedisConnection, SqliteConnection, open_backend
from core.store.base import ThreadRef
from core.turns import IncomingMessage
from tests.conftest import make_settings
from tests.support.delivery import start_runtime, stop_runtime

SETTING_PREFIXES = ("REDIS_", "OPENAI_", "SLACK_", "DISCORD_", "LOG_", "MAX_", "KEY_PREFIX", "DATA_DIR", "HEALTH_")
THREAD = "channel_T1-C1_thread_1700.5"  # MEMORY_SCOPE=thread: Slack thread 1700.5 in channel C1 of team T1
FLAG = thread_flag("T1", "C1", "1700.5")


@dataclass
class World:
    env: dict[str, str]
    settings: Settings
    cwd: Path

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        clean = {k: v for k, v in os.environ.items() if not k.startswith(SETTING_PREFIXES)}
        return subprocess.run(
            [sys.executable, "-c", "from bots.cli import main; main()", "threads", *args],
            cwd=self.cwd, env={**clean, **self.env}, capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip

    async def converse(self, platform: str, text: str, thread_id_ref: str = "1700.5") -> None:
        runtime = await start_runtime(self.settings, OfflineChatModel(), platform=platform)
        try:
            message = IncomingMessage(platform, f"E-{platform}-{text}", "U1", "T1-C1", text, thread_ref=thread_id_ref)
            await runtime.ask(message)
        finally:
            await stop_runtime(runtime)

    async def found(self) -> list[ThreadRef]:
        backend = open_backend(self.settings)
        try:
            return await backend.find_conversations(THREAD)
        finally:
            await backend.aclose()


@pytest.fixture(params=["redis", "sqlite"])
async def world(
    request: pytest.FixtureRequest, redis_url: str, key_prefix: str, tmp_path: Path
) -> AsyncIterator[World]:
    env = {"KEY_PREFIX": key_prefix, "MEMORY_SCOPE": "thread", "DATA_DIR": str(tmp_path / "data")}
    if request.param == "redis":
        env["REDIS_URL"] = redis_url
    settings = make_settings(
        redis_url=env.get("REDIS_URL"), key_prefix=key_prefix, memory_scope="thread", data_dir=tmp_path / "data"
    )
    yield World(env, settings, tmp_path)


async def test_show_and_clear_without_a_namespace_find_the_conversation_and_clear_all_of_it(
    world: World, redis_client: Redis, key_prefix: str
) -> None:
    await world.converse("slack", "remember the blue door")
    backend = open_backend(world.settings)
    await backend.set_flag(FLAG, None)
    await backend.aclose()

    shown = world.cli("show", THREAD)
    assert shown.returncode == 0, shown.stderr
    assert "user: remember the blue door" in shown.stdout and "assistant: [offline model]" in shown.stdout

    cleared = world.cli("clear", THREAD)
    assert cleared.returncode == 0, cleared.stderr
    out = cleared.stdout
    assert f"cleared {THREAD} in namespace slack" in out and "2 messages" in out
    for suffix in ("messages", "turns", "seen"):
        assert f"{key_prefix}:slack:{{{THREAD}}}:{suffix}" in out
    assert f"{key_prefix}:flag:{FLAG}" in out and f"{key_prefix}:slack:inboxes" in out
    assert "kept a reset watermark" in out

    assert await world.found() == []
    backend = open_backend(world.settings)
    try:
        assert not await backend.has_flag(FLAG)
        assert await backend.store(THREAD, "slack").list_messages() == []
    finally:
        await backend.aclose()
    if isinstance(backend, RedisConnection):
        left = [key async for key in redis_client.scan_iter(match=f"{key_prefix}:*")]
        # Only the reset watermark (as a reset keeps it) and the token counters (tokens spent are the day's
        # account, not the conversation's) stay.
        watermark = f"{key_prefix}:slack:{{{THREAD}}}:reset".encode()
        assert watermark in left and all(
            key == watermark or key.startswith(f"{key_prefix}:usage:".encode()) for key in left
        )


async def test_an_id_in_two_namespaces_is_refused_without_a_namespace(world: World) -> None:
    await world.converse("slack", "from slack")
    await world.converse("discord", "from discord")
    for verb in ("show", "clear"):
        refused = world.cli(verb, THREAD)
        assert refused.returncode == 2
        assert "discord, slack" in refused.stderr and "--namespace" in refused.stderr
    assert {ref.namespace for ref in await world.found()} == {"slack", "discord"}
    chosen = world.cli("clear", THREAD, "--namespace", "discord")
    assert chosen.returncode == 0 and "in namespace discord" in chosen.stdout
    assert [ref.namespace for ref in await world.found()] == ["slack"]


async def test_clear_refuses_while_a_turn_holds_the_lease_unless_forced(world: World) -> None:
    backend = open_backend(world.settings)
    try:
        inbox = backend.inbox(lease_seconds=30, keep_seconds=3600)
        payload = IncomingMessage("slack", "E1", "U1", "T1-C1", "busy", thread_ref="1700.5").to_json()
        intake = await inbox.receive("slack", THREAD, "E1", payload, token="t1", take=True)
        assert intake.claim is not None  # a turn holds the lease now
        await inbox.schedule("slack", THREAD, 0)
        refused = world.cli("clear", THREAD)
        assert refused.returncode == 1 and "--force" in refused.stderr and "lease" in refused.stderr
        assert await world.found() == [ThreadRef("slack", THREAD)]
        forced = world.cli("clear", THREAD, "--force")
        assert forced.returncode == 0, forced.stderr
        assert "1 message waiting in the inbox" in forced.stdout
        assert await world.found() == []
        assert await inbox.due("slack", 10) == []
    finally:
        await backend.aclose()


async def test_show_and_clear_say_when_there_is_nothing(world: World) -> None:
    for args in (("show", THREAD), ("clear", THREAD), ("clear", THREAD, "--namespace", "slack")):
        result = world.cli(*args)
        assert result.returncode == 1 and "nothing stored" in result.stderr and "cleared" not in result.stdout


def test_sqlite_and_redis_backends_offer_the_same_operations() -> None:
    for backend in (RedisConnection, SqliteConnection):
        assert callable(backend.find_conversations) and callable(backend.clear_conversation)
    assert asyncio.iscoroutinefunction(SqliteConnection.clear_conversation)
