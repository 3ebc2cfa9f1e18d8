"""A recording `ReplyWriter` and the runtime a test drives messages through (gateway, inbox, delivery)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

from core.approvals import Approvals
from core.delivery import Delivery
from core.gateway import Gateway
from core.metrics import Metrics
from core.model import ChatModel
from core.profile_rules import Profiles
from core.settings import Settings
from core.store import open_backend
from core.store.approvals import ApprovalRecord
from core.tools import Toolbox
from core.turns import IncomingMessage

__all__ = ["PromptingWriter", "RecordingWriter", "Replies", "Runtime", "start_runtime", "stop_runtime"]


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


class PromptingWriter(RecordingWriter):
    """A writer that also posts approval prompts (`Replies.prompts`) and closes them (`Replies.closed`)."""

    async def post_approval(self, record: ApprovalRecord) -> str:
        ref = f"prompt-{len(self._replies.prompts)}"
        self._replies.prompts.append(record)
        self._replies.changed()
        return ref

    async def close_approval(self, record: ApprovalRecord) -> None:
        self._replies.closed.append(record)
        self._replies.changed()


@dataclass
class Replies:
    """The writer factory of the `test` platform: every final text by message key, in posting order."""

    texts: dict[str, list[str]] = field(default_factory=dict)
    notices: dict[str, list[str]] = field(default_factory=dict)
    order: list[str] = field(default_factory=list)
    writers: list[RecordingWriter] = field(default_factory=list)
    fail_posts: int = 0
    prompting: bool = False  # writers post approval prompts (PromptingWriter)
    prompts: list[ApprovalRecord] = field(default_factory=list)
    closed: list[ApprovalRecord] = field(default_factory=list)
    _changed: asyncio.Condition = field(default_factory=asyncio.Condition)

    def __call__(self, incoming: IncomingMessage) -> RecordingWriter:
        writer = (PromptingWriter if self.prompting else RecordingWriter)(incoming, self)
        self.writers.append(writer)
        return writer

    def finished(self, key: str, text: str, *, notice: bool = False) -> None:
        (self.notices if notice else self.texts).setdefault(key, []).append(text)
        self.order.append(key)
        self.changed()

    async def wait_prompts(self, count: int, *, timeout: float = 10) -> ApprovalRecord:
        """The `count`th approval prompt posted."""
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(lambda: len(self.prompts) >= count)
        return self.prompts[count - 1]

    async def wait_closed(self, count: int, *, timeout: float = 10) -> ApprovalRecord:
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(lambda: len(self.closed) >= count)
        return self.closed[count - 1]

    def changed(self) -> None:
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
    prompting: bool = False,
    approval_poll_seconds: float = 0.5,
) -> Runtime:
    """A gateway, its inbox and a running delivery runner serving `platform` into a `Replies`.

    `prompting`: its writers post approval prompts; `approval_poll_seconds`: how often a waiting approval
    reads its record (a click at another runtime).
    """
    backend = open_backend(settings)
    metrics = Metrics()
    approvals = Approvals(
        backend.approvals(), timeout_seconds=settings.approval_timeout_seconds, approvers=settings.approver_ids,
        keep_seconds=settings.dedupe_ttl_seconds, poll_seconds=approval_poll_seconds, metrics=metrics,
    )  # fmt: skip
    gateway = Gateway(
        settings, backend, model, tools=tools, approvals=approvals, metrics=metrics,
        profiles=Profiles.from_settings(settings),
    )  # fmt: skip
    inbox = backend.inbox(lease_seconds=settings.lock_timeout_seconds, keep_seconds=settings.dedupe_ttl_seconds)
    delivery = Delivery(gateway, inbox, max_turns=settings.max_concurrent_turns,
                        progress_interval_seconds=progress_interval_seconds)  # fmt: skip
    replies = Replies(prompting=prompting)
    delivery.serve(platform, replies)
    return Runtime(gateway, delivery, replies, asyncio.create_task(delivery.run()))


async def stop_runtime(runtime: Runtime, grace_seconds: float = 5) -> None:
    await runtime.delivery.drain(grace_seconds)
    runtime.task.cancel()
    await asyncio.gather(runtime.task, return_exceptions=True)
    await runtime.gateway.backend.aclose()
