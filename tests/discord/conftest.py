"""Fixtures for the Discord adapter: the real adapter, discord.py and the core's Delivery against FakeDiscord,
real Redis and fake OpenAI.

The adapter finds the fake through DISCORD_API_URL alone (no `point_discord_at`), so every test also checks
that the adapter points discord.py at the configured API and puts the process-wide endpoints back.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import pytest
from discord.gateway import DiscordWebSocket
from discord.http import Route

from bots.discord_adapter import DiscordAdapter
from core.attachments import FileFetcher
from core.delivery import Delivery, ReplyWriter, WriterFactory
from core.gateway import Gateway
from core.llm import OpenAIChatModel
from core.settings import Settings
from core.store import open_backend
from core.store.approvals import ApprovalRecord
from core.turns import IncomingMessage
from tests.conftest import make_settings, openai_client
from tests.fakes.discord_api import DEFAULT_TOKEN, FakeDiscord
from tests.fakes.discord_ids import (
    ALICE_ID,
    APP_ID,
    BOB_ID,
    BOT_ID,
    CHANNEL_ID,
    DM_CHANNEL_ID,
    GUILD_ID,
    OTHER_BOT_ID,
    OTHER_CHANNEL_ID,
    THREAD_ID,
)
from tests.fakes.openai_server import FakeOpenAI

NO_PINGS = {"parse": [], "replied_user": False}  # AllowedMentions.none() on a reply, on the wire


def pings_nobody(allowed_mentions: dict[str, Any] | None) -> bool:
    """AllowedMentions.none() as sent: nothing parsed, no users or roles listed, the replied-to author spared.

    discord.py leaves `replied_user` out of messages that reply to nothing (follow-up parts, edits).
    """
    if allowed_mentions is None:  # no allowed_mentions at all: Discord would ping everything written
        return False
    listed = allowed_mentions.get("users") or allowed_mentions.get("roles")
    return allowed_mentions.get("parse") == [] and not listed and not allowed_mentions.get("replied_user", False)


WAIT_SECONDS = 5.0


def populate(fake: FakeDiscord) -> None:
    fake.add_user(ALICE_ID, "alice", global_name="Alice")
    fake.add_user(BOB_ID, "bob")
    fake.add_user(OTHER_BOT_ID, "other-bot", bot=True)
    fake.add_guild(GUILD_ID, "Test Guild")
    fake.add_member(GUILD_ID, ALICE_ID)
    fake.add_member(GUILD_ID, BOB_ID)
    fake.add_text_channel(CHANNEL_ID, GUILD_ID, "general")
    fake.add_text_channel(OTHER_CHANNEL_ID, GUILD_ID, "random")
    fake.add_thread(THREAD_ID, CHANNEL_ID, "a thread", owner_id=ALICE_ID)
    fake.add_dm_channel(DM_CHANNEL_ID, ALICE_ID)


@contextlib.asynccontextmanager
async def open_fake(**kwargs: Any) -> AsyncIterator[FakeDiscord]:
    async with FakeDiscord(bot_user_id=BOT_ID, application_id=APP_ID, **kwargs) as fake:
        populate(fake)
        yield fake


@pytest.fixture(autouse=True)
def discord_endpoints_restored() -> Iterator[None]:
    """Route.BASE and DEFAULT_GATEWAY are process-wide: an adapter that stopped must have put them back."""
    before = (Route.BASE, DiscordWebSocket.DEFAULT_GATEWAY)
    try:
        yield
        assert before == (Route.BASE, DiscordWebSocket.DEFAULT_GATEWAY), "the adapter left discord.py re-pointed"
    finally:
        Route.BASE, DiscordWebSocket.DEFAULT_GATEWAY = before


@pytest.fixture
async def fake() -> AsyncIterator[FakeDiscord]:
    async with open_fake() as fake:
        yield fake


@pytest.fixture
async def fake_openai() -> AsyncIterator[FakeOpenAI]:
    """Streams each reply as one delta, so the first post already holds the whole answer.

    Tests of progressive edits make their own word-by-word FakeOpenAI.
    """
    async with FakeOpenAI(chunk_size=1_000_000) as fake:
        yield fake


class RecordedWriter:
    """A writer that also queues what it finished (the final text, or the notice) once it is out."""

    def __init__(self, inner: ReplyWriter, incoming: IncomingMessage, replies: asyncio.Queue[Answered]) -> None:
        self._inner = inner
        self._incoming = incoming
        self._replies = replies

    @property
    def posted(self) -> list[str]:
        return self._inner.posted

    def resume(self, posted: Sequence[str]) -> None:
        self._inner.resume(posted)

    async def progress(self, text: str) -> None:
        await self._inner.progress(text)

    async def finish(self, text: str) -> None:
        await self._inner.finish(text)
        self._replies.put_nowait(Answered(self._incoming, text))

    async def notice(self, text: str) -> None:
        await self._inner.notice(text)
        self._replies.put_nowait(Answered(self._incoming, text, notice=True))

    def working(self) -> contextlib.AbstractAsyncContextManager[None]:
        return self._inner.working()

    async def post_approval(self, record: ApprovalRecord) -> str:
        return await self._inner.post_approval(record)  # type: ignore[attr-defined, no-any-return]

    async def close_approval(self, record: ApprovalRecord) -> None:
        await self._inner.close_approval(record)  # type: ignore[attr-defined]


@dataclass(frozen=True)
class Answered:
    incoming: IncomingMessage
    text: str
    notice: bool = False


class RecordingDelivery(Delivery):
    """The real Delivery, also queueing each intake's outcome and each reply once posted (after its commit):
    tests wait on turns, not on time."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.received: asyncio.Queue[tuple[IncomingMessage, str]] = asyncio.Queue()
        self.replies: asyncio.Queue[Answered] = asyncio.Queue()

    async def receive(self, incoming: IncomingMessage) -> Any:
        outcome = await super().receive(incoming)
        self.received.put_nowait((incoming, outcome))
        return outcome

    def serve(self, platform: str, writers: WriterFactory, *, files: FileFetcher | None = None) -> None:
        super().serve(platform, lambda incoming: RecordedWriter(writers(incoming), incoming, self.replies), files=files)

    async def next_received(self, timeout: float = WAIT_SECONDS) -> tuple[IncomingMessage, str]:
        return await asyncio.wait_for(self.received.get(), timeout)

    async def next_reply(self, timeout: float = WAIT_SECONDS) -> Answered:
        return await asyncio.wait_for(self.replies.get(), timeout)


@dataclass
class Process:
    """What one chat-gateway process holds: its gateway, its delivery and the delivery's runner."""

    gateway: Gateway
    delivery: RecordingDelivery
    runner: asyncio.Task[None]


@dataclass
class Bot:
    """A running adapter, its fake Discord and its process."""

    fake: FakeDiscord
    adapter: DiscordAdapter
    process: Process
    settings: Settings

    @property
    def gateway(self) -> Gateway:
        return self.process.gateway

    @property
    def delivery(self) -> RecordingDelivery:
        return self.process.delivery

    async def say(
        self, text: str, *, channel_id: int = CHANNEL_ID, author_id: int = ALICE_ID, mention: bool = True, **kw: Any
    ) -> int:
        """A user message, mentioning the bot unless told otherwise; returns its id."""
        if mention:
            text, kw["mentions"] = f"<@{BOT_ID}> {text}", [BOT_ID]
        return await self.fake.send_message_create(channel_id=channel_id, author_id=author_id, content=text, **kw)

    async def next_reply(self, timeout: float = WAIT_SECONDS) -> Answered:
        """The next reply posted (its turn is stored by then)."""
        return await self.delivery.next_reply(timeout)

    async def history(self, user_id: int = ALICE_ID, channel_id: int = CHANNEL_ID) -> list[str]:
        store = self.gateway.backend.store(f"user_{user_id}_session_{channel_id}", "discord")
        return [m.text for m in await store.list_messages()]


ProcessFactory = Callable[..., Awaitable[Process]]
BotFactory = Callable[..., contextlib.AbstractAsyncContextManager[Bot]]
SettingsFactory = Callable[..., Settings]


async def stop_process(process: Process, grace_seconds: float = 5) -> None:
    await process.delivery.drain(grace_seconds)
    process.runner.cancel()
    await asyncio.gather(process.runner, return_exceptions=True)


@pytest.fixture
async def process_factory(fake_openai: FakeOpenAI) -> AsyncIterator[ProcessFactory]:
    """A gateway and a Delivery on `settings`' store, its runner started as tests/core's start_runtime does."""
    started: list[tuple[Process, Callable[[], Awaitable[None]]]] = []

    async def make(settings: Settings, *, progress_interval_seconds: float = 1.0) -> Process:
        backend = open_backend(settings)
        gateway = Gateway(settings, backend, OpenAIChatModel("m", async_client=openai_client(fake_openai)))
        inbox = backend.inbox(lease_seconds=settings.lock_timeout_seconds, keep_seconds=settings.dedupe_ttl_seconds)
        delivery = RecordingDelivery(
            gateway, inbox, max_turns=settings.max_concurrent_turns, progress_interval_seconds=progress_interval_seconds
        )
        process = Process(gateway, delivery, asyncio.create_task(delivery.run(), name="delivery"))
        started.append((process, backend.aclose))
        return process

    yield make
    for process, close in started:
        await stop_process(process)
        await close()


@pytest.fixture
def settings_for(redis_url: str, key_prefix: str) -> SettingsFactory:
    def make(fake: FakeDiscord | None, **overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "discord_token": DEFAULT_TOKEN,
            "discord_api_url": fake.api_url if fake is not None else None,
            "redis_url": redis_url,
            "key_prefix": key_prefix,
            **overrides,
        }
        return make_settings(**values)

    return make


async def wait_until_serving(adapter: DiscordAdapter, fake: FakeDiscord, task: asyncio.Task[None]) -> None:
    """Until the client's on_ready; an adapter that fails first raises its error here."""
    ready = asyncio.ensure_future(fake.wait_ready(WAIT_SECONDS, count=fake.ready_count + 1))
    done, _ = await asyncio.wait({task, ready}, timeout=WAIT_SECONDS, return_when=asyncio.FIRST_COMPLETED)
    if task in done:
        ready.cancel()
        task.result()
        raise AssertionError("the adapter stopped before READY")
    await ready
    assert adapter.client is not None
    await asyncio.wait_for(adapter.client.wait_until_ready(), WAIT_SECONDS)


@contextlib.asynccontextmanager
async def serving(adapter: DiscordAdapter, fake: FakeDiscord, process: Process) -> AsyncIterator[DiscordAdapter]:
    task = asyncio.create_task(adapter.run(), name="discord-adapter")
    try:
        await wait_until_serving(adapter, fake, task)
        yield adapter
    finally:
        await stop_process(process)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await fake.wait_disconnected()


def discord_adapter(settings: Settings, process: Process) -> DiscordAdapter:
    return DiscordAdapter(
        settings=settings,
        gateway=process.gateway,
        delivery=process.delivery,
        guild_ready_timeout=0.1,  # discord.py's 2 s wait after the last GUILD_CREATE would dominate the run
        identify_delay_seconds=0.0,  # and so would its 5 s pause before every IDENTIFY after the first
    )


@pytest.fixture
def start_bot(fake: FakeDiscord, settings_for: SettingsFactory, process_factory: ProcessFactory) -> BotFactory:
    """`async with start_bot(**setting_overrides) as bot:`; `on=` another fake, `edit_interval_seconds=`.

    On the way out the process drains first (as the CLI does), then the adapter stops.
    """

    @contextlib.asynccontextmanager
    async def start(
        *, on: FakeDiscord | None = None, edit_interval_seconds: float = 1.0, settings: Settings | None = None,
        process: Process | None = None, **overrides: Any,
    ) -> AsyncIterator[Bot]:  # fmt: skip
        target = on or fake
        settings = settings or settings_for(target, **overrides)
        process = process or await process_factory(settings, progress_interval_seconds=edit_interval_seconds)
        adapter = discord_adapter(settings, process)
        async with serving(adapter, target, process):
            yield Bot(target, adapter, process, settings)

    return start


@pytest.fixture
async def bot(start_bot: BotFactory) -> AsyncIterator[Bot]:
    async with start_bot() as bot:
        yield bot
