"""A recording `ReplyWriter` and the runtime a test drives messages through (gateway, inbox, delivery)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

from core.delivery import Delivery
from core.gateway import Gateway
from core.model import ChatModel
from core.settings import Settings
from core.store import open_backend
from core.tools import Toolbox
from core.turns import IncomingMessage

__all__ = ["RecordingWriter", "Replies", "Runtime", "start_runtime", "stop_runtime"]


class RecordingWriter:
    """Posts into lists; `done` resolves with the final text (or the notice) once the reply is out."""

    def __init__(self, incoming: IncomingMessage, replies: Replies) -> None:
        self.incoming = incoming
        self._replies = replies
        self.posted: list[str] = []
        self.progress_texts: list[str] = []
        self.resumed_from: list[str] = []

    def resume(self, posted: Sequence[str]) -> None:
        self.resumed_from = list(posted)
        self.posted = list(posted[:1])

    async def progress(self, text: str) -> None:
        self.progress_texts.append(text)
        if not self.posted:
            self.posted.append(f"p-{self.incoming.dedupe_key}")

    async def finish(self, text: str) -> None:
        if self._replies.fail_posts:
            self._replies.fail_posts -= 1
            raise RuntimeError("the platform refused the post")
        if not self.posted:
            self.posted.append(f"r-{self.incoming.dedupe_key}")
        self._replies.finished(self.incoming.dedupe_key, text)

    async def notice(self, text: str) -> None:
        self._replies.finished(self.incoming.dedupe_key, text, notice=True)

    @contextlib.asynccontextmanager
    async def working(self) -> AsyncIterator[None]:
        yield


@dataclass
class Replies:
    """The writer factory of the `test` platform: every final text by message key, in posting order."""

    texts: dict[str, list[str]] = field(default_factory=dict)
    notices: dict[str, list[str]] = field(default_factory=dict)
    order: list[str] = field(default_factory=list)
    writers: list[RecordingWriter] = field(default_factory=list)
    fail_posts: int = 0
    _changed: asyncio.Condition = field(default_factory=asyncio.Condition)

    def __call__(self, incoming: IncomingMessage) -> RecordingWriter:
        writer = RecordingWriter(incoming, self)
        self.writers.append(writer)
        return writer

    def finished(self, key: str, text: str, *, notice: bool = False) -> None:
        (self.notices if notice else self.texts).setdefault(key, []).append(text)
        self.order.append(key)

        async def notify() -> None:
            async with self._changed:
                self._changed.notify_all()

        asyncio.get_running_loop().create_task(notify())  # ends at once

    async def wait_for(self, key: str, *, timeout: float = 10) -> str:
        """The (first) reply posted for message `key`."""
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(lambda: key in self.texts or key in self.notices)
        return (self.texts.get(key) or self.notices[key])[0]

    async def wait_count(self, count: int, *, timeout: float = 10) -> None:
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(lambda: len(self.order) >= count)


@dataclass
class Runtime:
    gateway: Gateway
    delivery: Delivery
    replies: Replies
    task: asyncio.Task[None]

    async def ask(self, incoming: IncomingMessage, *, timeout: float = 10) -> str:
        await self.delivery.receive(incoming)
        return await self.replies.wait_for(incoming.dedupe_key, timeout=timeout)


async def start_runtime(
    settings: Settings,
    model: ChatModel,
    *,
    platform: str = "test",
    progress_interval_seconds: float = 0.01,
    tools: Toolbox | None = None,
) -> Runtime:
    """A gateway, its inbox and a running delivery runner serving `platform` into a `Replies`."""
    backend = open_backend(settings)
    gateway = Gateway(settings, backend, model, tools=tools)
    inbox = backend.inbox(lease_seconds=settings.lock_timeout_seconds, keep_seconds=settings.dedupe_ttl_seconds)
    delivery = Delivery(gateway, inbox, max_turns=settings.max_concurrent_turns,
                        progress_interval_seconds=progress_interval_seconds)  # fmt: skip
    replies = Replies()
    delivery.serve(platform, replies)
    return Runtime(gateway, delivery, replies, asyncio.create_task(delivery.run()))


async def stop_runtime(runtime: Runtime, grace_seconds: float = 5) -> None:
    await runtime.delivery.drain(grace_seconds)
    runtime.task.cancel()
    await asyncio.gather(runtime.task, return_exceptions=True)
    await runtime.gateway.backend.aclose()
