"""The one delivery path: inbox -> lease -> answer -> commit -> post -> delivered, for every platform.

Adapters hand a message to `receive` (it is durable when that returns: only then may the platform be
acknowledged) and give `serve` a factory of `ReplyWriter`s (and a `FileFetcher` for the files of their
messages, which are downloaded only once the turn runs); everything else is here: turns in flight
per process (MAX_CONCURRENT_TURNS; the rest wait in the inbox), the lease kept while a turn runs,
progress off the critical path, the fenced commit, the post, the failure notice, resuming what dead
processes left, and the shutdown drain. A message is answered once: its reply is stored with its
"answered" state before it is posted, and a resumed message that was answered only posts (or finishes
posting) the stored reply.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, replace
from typing import Literal, Protocol
from uuid import uuid4

from core.attachments import FileFetcher
from core.errors import GatewayError, StoreError, StoreUnavailableError
from core.gateway import Answer, Gateway
from core.lease_keeper import LeaseKeeper, LeaseLostError
from core.logs import turn_context
from core.platform_context import PlatformHistory, PlatformMessage
from core.progress import ProgressPump
from core.store.inbox import Claim, Inbox, Intake, Lease, TurnRecord
from core.turns import IncomingMessage, Reply

__all__ = ["FAILURE_NOTICE", "Delivery", "OutcomeHook", "ReplyWriter", "TurnOutcome", "WriterFactory"]

log = logging.getLogger(__name__)

FAILURE_NOTICE = "Sorry, I could not post my reply here. The operator has been told."
_COMMIT_RETRY_SECONDS = 0.2
_COUNT_WAIT_SECONDS = 5.0
_RATE_WINDOW_SECONDS = 60
Received = Literal["taken", "queued", "duplicate", "ignored"]


class ReplyWriter(Protocol):
    """One reply on one platform. `posted` names the platform messages it wrote, first one first."""

    posted: list[str]

    def resume(self, posted: Sequence[str]) -> None:
        """Continue a reply an earlier owner began: `posted` are its messages (the first one is reused)."""
        ...

    async def progress(self, text: str) -> None:
        """Show the text so far. Best effort: never raises."""
        ...

    async def finish(self, text: str) -> None:
        """Make the reply read exactly `text`, each part posted once. Raises the platform's error."""
        ...

    async def notice(self, text: str) -> None:
        """Tell the user something went wrong. Best effort: never raises."""
        ...

    def working(self) -> AbstractAsyncContextManager[None]:
        """Show that the bot works on the message (typing, a reaction) while the block runs."""
        ...


WriterFactory = Callable[[IncomingMessage], ReplyWriter]
_Key = tuple[str | None, str]


@dataclass(frozen=True, slots=True)
class TurnOutcome:
    """How one message ended here (metrics, tests): `posted` names the platform messages of its reply."""

    event_id: str
    result: Literal["answered", "ignored", "duplicate", "failed"]
    reply: Reply | None = None
    posted: tuple[str, ...] = ()


OutcomeHook = Callable[[TurnOutcome], object]


class Delivery:
    """The process's runner, shared by its adapters; `run()` resumes what waits, `drain()` ends it all."""

    def __init__(
        self,
        gateway: Gateway,
        inbox: Inbox,
        *,
        max_turns: int = 64,
        progress_interval_seconds: float = 1.0,
        sweep_seconds: float | None = None,
        on_outcome: OutcomeHook | None = None,
    ) -> None:
        self._gateway = gateway
        self._inbox = inbox
        self._metrics = gateway.metrics
        self._free = max_turns
        self._interval = progress_interval_seconds
        self._sweep_seconds = sweep_seconds or min(5.0, inbox.lease_seconds / 3)
        self._writers: dict[str, WriterFactory] = {}
        self._files: dict[str, FileFetcher] = {}
        self._histories: dict[str, PlatformHistory] = {}
        self._running: dict[_Key, asyncio.Task[None]] = {}
        # Queued here for want of a slot, oldest first: a slot that frees goes to them, not to a newcomer.
        self._waiting: dict[_Key, None] = {}
        self._behind: set[_Key] = set()  # queued behind this process's own turn there: waiting once it ends
        self._accepting = True
        self._wake = asyncio.Event()
        # A sweep stopped for want of a free slot: the next slot that frees wakes it. Otherwise a turn that
        # ends wakes nothing: messages queued here are handed over without the index (the sweep is for
        # conversations other processes left, and for what a failed step put back there).
        self._starved = False
        self._on_outcome = on_outcome

    @property
    def inbox(self) -> Inbox:
        return self._inbox

    @property
    def in_flight(self) -> int:
        return len(self._running)

    def serve(
        self,
        platform: str,
        writers: WriterFactory,
        *,
        files: FileFetcher | None = None,
        history: PlatformHistory | None = None,
    ) -> None:
        """Answer `platform`'s messages, this process's and those that others left, through `writers`;
        `files` downloads their attachments; `history` reads the platform's context for a memory that
        lacks it (CONTEXT_FROM_PLATFORM)."""
        self._writers[platform] = writers
        if files is not None:
            self._files[platform] = files
        if history is not None:
            self._histories[platform] = history
        self._wake.set()

    async def receive(self, incoming: IncomingMessage) -> Received:
        """Make `incoming` durable and start its turn if this process has room.

        Raises:
            StoreError: the message could not be stored: do not acknowledge it, let the platform retry.
        """
        if not incoming.text.strip() and not incoming.attachments:
            return "ignored"
        resolved = self._gateway.resolve(incoming)
        if not self._gateway.admits(incoming, resolved):  # `respond: never`, or a sender its allow/deny refuses
            log.info("message ignored by profile %s", resolved.profile or "-", extra={
                "platform": incoming.platform, "event_id": incoming.dedupe_key, "outcome": "profile"})  # fmt: skip
            self._report(TurnOutcome(incoming.event_id, "ignored"))
            return "ignored"
        namespace, thread_id = incoming.platform, self._gateway.thread_id(incoming, resolved)
        key = (namespace, thread_id)
        take = self._accepting and self._free > 0 and key not in self._running and not self._waiting
        if take:
            self._free -= 1  # before any await: two arrivals can never both take the last slot
        try:
            intake = await self._store(incoming, key, take, resolved.rate_limit_per_minute)
        except BaseException:
            if take:
                self._free += 1
            raise
        if intake.claim is None or key in self._running:
            if take:
                self._free += 1
            return await self._not_started(incoming, key, intake, take)
        self._start(key, intake.claim)
        return "taken"

    async def _store(self, incoming: IncomingMessage, key: _Key, take: bool, rate_limit: int) -> Intake:
        namespace, thread_id = key
        stored = self._inbox.receive(
            namespace, thread_id, incoming.dedupe_key, incoming.to_json(), token=uuid4().hex, take=take,
            user_id=incoming.user_id, rate_window=int(time.time() // _RATE_WINDOW_SECONDS), rate_limit=rate_limit,
        )  # fmt: skip
        if take:
            # Due only once the lease would have run out (a safety net should this process die), so it may
            # go beside the append: one round trip on the way to the first post.
            retry_at = time.time() + self._inbox.lease_seconds
            intake, _ = await asyncio.gather(stored, self._inbox.schedule(namespace, thread_id, retry_at))
            return intake
        # Due at once, so only after the append: a sweep that found the entry before the message would
        # drop the entry and leave the message unseen.
        intake = await stored
        if intake.outcome != "duplicate":
            await self._inbox.schedule(namespace, thread_id, time.time())
        return intake

    async def _not_started(self, incoming: IncomingMessage, key: _Key, intake: Intake, take: bool) -> Received:
        namespace, thread_id = key
        if intake.outcome == "duplicate":
            self._metrics.duplicates.labels(namespace).inc()
            self._report(TurnOutcome(incoming.event_id, "duplicate"))
            if intake.state != "delivered" and key not in self._running:
                # Maybe its own earlier attempt, given up on here (a stall) but run by the store later:
                # then its lease is ours and no turn holds it. Look now, not once that lease runs out.
                with contextlib.suppress(StoreError):
                    await self._inbox.schedule(namespace, thread_id, time.time())
                self._wake.set()
        elif not take and self._accepting:
            # Queued here: taken by this process's own turn there (FINISH hands it over) or by a slot that
            # frees, not by a sweep.
            if key in self._running:
                self._behind.add(key)
            else:
                self._waiting[key] = None
            self._hand_over()
        return "queued" if intake.outcome == "taken" else intake.outcome

    async def run(self) -> None:
        """Resume conversations whose messages wait (left by a dead process, or queued here) until cancelled."""
        while self._accepting:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._sweep_seconds):
                    await self._wake.wait()
            self._wake.clear()
            self._hand_over()
            for namespace in list(self._writers):
                try:
                    if await self._sweep(namespace):
                        self._wake.set()  # a full batch, and it moved on: more may be due, look again at once
                except GatewayError as exc:
                    log.warning("inbox sweep failed: %s", exc, extra={"platform": namespace})

    async def _sweep(self, namespace: str) -> bool:
        """Take, reschedule or drop the conversations due in the index; True when more may be due."""
        if self._free <= 0 or not self._accepting:
            self._starved = self._accepting
            return False
        self._starved = False
        limit = max(self._free * 2, 16)
        rows = await self._inbox.due(namespace, limit=limit)
        moved = 0
        for thread_id, score in rows:
            key = (namespace, thread_id)
            if key in self._running or key in self._waiting:
                continue  # this process's: its own turn or a slot that frees takes the message
            if self._free <= 0 or not self._accepting:
                self._starved = self._accepting
                return False
            moved += 1
            self._free -= 1
            try:
                found = await self._inbox.resume(namespace, thread_id)
            except BaseException:
                self._free += 1
                raise
            if isinstance(found, Claim) and key not in self._running:
                log.info("resuming a waiting message", extra={"platform": namespace, "thread_id": thread_id})
                self._start(key, found)
                continue
            self._free += 1
            if isinstance(found, float):
                await self._inbox.schedule(namespace, thread_id, time.time() + found)
            elif found is None:
                await self._inbox.unschedule(namespace, thread_id, score)
        return len(rows) >= limit and moved > 0

    def _hand_over(self) -> None:
        """Give the free slots to the conversations queued here, oldest first."""
        while self._waiting and self._free > 0 and self._accepting:
            key = next(iter(self._waiting))
            del self._waiting[key]
            if key in self._running:
                self._behind.add(key)
                continue
            self._free -= 1
            self._running[key] = asyncio.create_task(self._drive(key, None), name=f"turn-{key[1]}")

    async def _take(self, key: _Key) -> Claim | None:
        """The waiting message of a conversation queued here, unless someone holds (or answered) it."""
        namespace, thread_id = key
        try:
            found = await self._inbox.resume(namespace, thread_id)
            if isinstance(found, float):
                await self._inbox.schedule(namespace, thread_id, time.time() + found)
        except GatewayError as exc:  # it stays in the index: the sweep takes it later
            log.warning("queued message not taken: %s", exc, extra={"platform": namespace, "thread_id": thread_id})
            return None
        return found if isinstance(found, Claim) else None

    async def drain(self, grace_seconds: float) -> None:
        """Stop taking messages, let turns finish for `grace_seconds`, then hand the rest to the next process."""
        self._accepting = False
        self._wake.set()
        tasks = set(self._running.values())
        if not tasks:
            await self._gateway.usage.flush()
            return
        _, pending = await asyncio.wait(tasks, timeout=grace_seconds)
        if pending:
            log.warning("shutdown grace of %ss ran out: releasing %d turns to the next process", grace_seconds,
                        len(pending))  # fmt: skip
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        await self._gateway.usage.flush()

    def _start(self, key: _Key, claim: Claim) -> None:
        self._running[key] = asyncio.create_task(self._drive(key, claim), name=f"turn-{key[1]}")

    async def _drive(self, key: _Key, claim: Claim | None) -> None:
        """The conversation's turns, one message after the other, while this process holds its lease.
        Without `claim`, the conversation was queued here: its message is taken first."""
        current = claim
        try:
            if current is None:
                current = await self._take(key)
            while current is not None:
                lease = current.lease
                try:
                    current = await self._turn(current)
                except asyncio.CancelledError:
                    await asyncio.shield(self._release(lease))
                    raise
                except LeaseLostError as exc:
                    log.warning("%s; the new owner answers it", exc, extra={"message_key": lease.message_key})
                    current = None
                except Exception:
                    log.exception(
                        "turn crashed; the message waits in the inbox", extra={"message_key": lease.message_key}
                    )
                    await asyncio.shield(self._release(lease))
                    current = None
        finally:
            del self._running[key]
            if key in self._behind:  # a message came while this ended: it may have missed the hand-over
                self._behind.discard(key)
                self._waiting[key] = None
            self._free += 1
            self._hand_over()
            if self._starved or not self._accepting:
                self._wake.set()

    async def _release(self, lease: Lease) -> None:
        try:
            async with asyncio.timeout(5):
                await self._inbox.release(lease)
                await self._inbox.schedule(lease.namespace, lease.thread_id, time.time())
            self._wake.set()  # due now: the next sweep (here or elsewhere) takes it
            log.info("lease released for the next process", extra={"message_key": lease.message_key})
        except (StoreError, TimeoutError) as exc:  # it then expires on its own
            log.warning("lease not released (it expires by itself): %s", exc, extra={"message_key": lease.message_key})

    async def _turn(self, claim: Claim) -> Claim | None:
        incoming = IncomingMessage.from_json(claim.payload)
        lease = claim.lease
        fields = {"platform": incoming.platform, "event_id": lease.message_key, "thread_id": lease.thread_id}
        with turn_context(**fields):
            started = time.perf_counter()
            writer = self._writers[incoming.platform](incoming)
            if claim.record.posted:
                writer.resume(claim.record.posted)
            async with LeaseKeeper(self._inbox, lease) as keeper:
                record, kind, counting = await self._answered(claim, incoming, writer, keeper)
                if record is None:
                    return None
                posted = await self._post(writer, record, lease)
                if counting is not None:  # counted by the time it is delivered: the next turn sees the count
                    await asyncio.wait([counting], timeout=_COUNT_WAIT_SECONDS)
            nxt = await self._finish(lease, record.delivered(writer.posted))
            self._record(incoming.platform, kind, time.perf_counter() - started, claim.resumed)
            reply = Reply(record.reply or "", kind=kind, thread_id=lease.thread_id)  # type: ignore[arg-type]
            result: Literal["answered", "failed"] = "answered" if posted else "failed"
            self._report(TurnOutcome(incoming.event_id, result, reply, tuple(writer.posted)))
            return nxt

    async def _answered(
        self, claim: Claim, incoming: IncomingMessage, writer: ReplyWriter, keeper: LeaseKeeper
    ) -> tuple[TurnRecord | None, str, asyncio.Task[None] | None]:
        """The stored answer (answering and committing it first unless a previous owner did), and the task
        counting its tokens (started after the commit, so it runs beside the post)."""
        record = claim.record
        if record.state != "received":
            return record, record.reply_kind or "answer", None
        answer = await keeper.guard(self._answer(claim, incoming, writer))
        record = replace(record.answered(answer.reply.text, answer.reply.kind), posted=tuple(writer.posted))
        counting: asyncio.Task[None] | None = None
        try:
            committed = await self._commit(keeper, answer, record)
        except StoreUnavailableError:
            raise
        except StoreError as exc:  # refused outright (out of memory, wrong type): nothing was saved, say so
            log.error("commit refused by the store: %s", exc, extra={"outcome": "store_error"})  # noqa: TRY400
            self._metrics.store_errors.labels(incoming.platform).inc()
            return replace(record, reply=exc.user_message, reply_kind="error"), "error", None  # counted unawaited
        finally:  # the tokens were spent whatever the commit did; counted beside the post, not before it
            counting = self._gateway.usage.settle_soon(answer.usage)
        if not committed:
            log.warning("commit refused: another process holds the lease now", extra={"outcome": "fenced"})
            return None, "fenced", counting
        return record, answer.reply.kind, counting

    async def _answer(self, claim: Claim, incoming: IncomingMessage, writer: ReplyWriter) -> Answer:
        answered = asyncio.Event()
        pump = ProgressPump(self._progress(writer, claim, answered), self._interval)
        try:
            approve = self._gateway.approvals.hook(claim.lease, incoming.user_id, writer)

            def working() -> AbstractAsyncContextManager[None]:
                return _answered_within(writer.working(), answered)

            answer = await self._gateway.answer(
                incoming, claim.history, hits=claim.record.hits, on_text=pump.update, approve=approve,
                working=working, files=self._files.get(incoming.platform), context=self._context(claim),
            )  # fmt: skip
            answered.set()
            return answer
        finally:
            await pump.close()

    def _context(self, claim: Claim) -> _Context | None:
        platform = claim.lease.namespace
        history = self._histories.get(platform) if platform is not None else None
        return _Context(history, self._inbox, claim.lease) if history is not None else None

    def _progress(self, writer: ReplyWriter, claim: Claim, answered: asyncio.Event) -> Callable[[str], Awaitable[None]]:
        noted = False

        async def send(text: str) -> None:
            nonlocal noted
            await writer.progress(text)
            # Noted, a resumed turn edits this message instead of posting anew. Once the answer is in, the
            # commit that follows records the post itself: a note then would only delay it by a round trip
            # (the final post waits for this send), and leave the same window open for no gain.
            if writer.posted and not noted and not answered.is_set():
                noted = True
                record = replace(claim.record, posted=tuple(writer.posted[:1]))
                with contextlib.suppress(StoreError):
                    await self._inbox.note_posted(claim.lease, record)

        return send

    async def _commit(self, keeper: LeaseKeeper, answer: Answer, record: TurnRecord) -> bool:
        """Store the turn, retrying while the outcome is unknown; never cancelled halfway.

        Raises:
            LeaseLostError: the lease ran out before the store answered.
            StoreError: the store refused the write: nothing was saved.
        """
        while True:
            try:
                write = self._inbox.commit(
                    keeper.lease, answer.messages, record, clear=answer.clear, reset=answer.reset,
                    max_messages=answer.max_messages, ttl_seconds=answer.ttl_seconds,
                )  # fmt: skip
                return await asyncio.shield(write)
            except StoreUnavailableError as exc:
                if keeper.expired:
                    raise LeaseLostError(f"no store answer to the commit of {keeper.lease.message_key}") from exc
                log.warning("commit not confirmed, trying again: %s", exc)
                await asyncio.sleep(_COMMIT_RETRY_SECONDS)  # back-off before the retry

    async def _post(self, writer: ReplyWriter, record: TurnRecord, lease: Lease) -> bool:
        if record.reply_kind == "silent" or not record.reply:
            return True
        try:
            await writer.finish(record.reply)
        except Exception as exc:
            # The platform's own words (its error code) say what to fix; the traceback goes to DEBUG.
            log.error("reply not posted: %s: %s", type(exc).__name__, exc, extra={"message_key": lease.message_key})  # noqa: TRY400
            log.debug("reply not posted", exc_info=True)
            await writer.notice(FAILURE_NOTICE)
            return False
        return True

    def _report(self, outcome: TurnOutcome) -> None:
        if self._on_outcome is not None:
            self._on_outcome(outcome)

    async def _finish(self, lease: Lease, record: TurnRecord) -> Claim | None:
        take_next = self._accepting
        try:
            nxt = await self._inbox.finish(lease, record, take_next=take_next)
        except StoreError as exc:  # posted but not marked: a resumed turn finds the post and does not repeat it
            log.warning("delivery not recorded: %s", exc, extra={"message_key": lease.message_key})
            return None
        if not take_next:
            with contextlib.suppress(StoreError):
                await self._inbox.schedule(lease.namespace, lease.thread_id, time.time())
        return nxt

    def _record(self, platform: str, kind: str, seconds: float, resumed: bool) -> None:
        self._metrics.turns.labels(platform, kind).inc()
        self._metrics.turn_seconds.labels(platform).observe(seconds)
        log.info("turn %s", kind, extra={"outcome": kind, "resumed": resumed, "total_ms": round(seconds * 1000, 2)})


@dataclass(frozen=True, slots=True)
class _Context:
    """The platform's history of a turn's conversation, never older than its last reset."""

    history: PlatformHistory
    inbox: Inbox
    lease: Lease

    async def read(self, incoming: IncomingMessage, *, limit: int) -> list[PlatformMessage]:
        after = await self.inbox.reset_watermark(self.lease.namespace, self.lease.thread_id)
        found = await self.history.read(incoming, after=after, limit=limit)
        return [
            m for m in found
            if (after is None or m.sent_at > after)  # whatever the port did with `after`
            and not (m.kind == "self" and m.text.strip() == FAILURE_NOTICE)
        ]  # fmt: skip


@contextlib.asynccontextmanager
async def _answered_within(
    indicator: AbstractAsyncContextManager[None], answered: asyncio.Event
) -> AsyncIterator[None]:
    """The platform's indicator around the answer, with `answered` set as soon as the answer is in: taking
    the indicator down is a platform call, and a progress note sent meanwhile would hold up the post."""
    async with indicator:
        try:
            yield
        finally:
            answered.set()
