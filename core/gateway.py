"""IncomingMessage -> Reply: the one path every platform's message takes through the core.

Order of a turn (ARCHITECTURE.md): claim the event once, choose the thread, check limits, hold the
thread's turn, run a command or the agent, release. A duplicate delivery returns None and nothing
else happens; every failure becomes a short reply and a log line, and the process stays up.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable

from core.agent import Agent, AgentResponse, AgentThread, ChatModel
from core.commands import Command, describe_duration, help_text, parse_command
from core.errors import GatewayError, ModelError, ModelTimeoutError, StoreError
from core.logs import turn_context
from core.messages import ChatMessage
from core.metrics import Metrics
from core.ordering import ThreadTurns, TurnTicket
from core.settings import Settings
from core.store.base import MemoryBackend
from core.threads import channel_thread_id, platform_thread_id, thread_id_for
from core.turns import IncomingMessage, Reply

__all__ = ["Gateway", "ProgressCallback"]

log = logging.getLogger(__name__)

ProgressCallback = Callable[[str], Awaitable[None]]
_RATE_WINDOW_SECONDS = 60
_SHUTTING_DOWN = "I'm restarting right now, so I didn't read that. Please send it again in a minute."


class Gateway:
    """Shared by every adapter of a process; holds no per-conversation state beyond turns in flight."""

    def __init__(
        self, settings: Settings, backend: MemoryBackend, model: ChatModel, *, metrics: Metrics | None = None
    ) -> None:
        self._settings = settings
        self._backend = backend
        self.agent = Agent(
            model,
            name="chat-gateway",
            instructions=settings.system_prompt,
            max_context_tokens=settings.max_context_tokens,
        )
        self._turns = ThreadTurns(
            backend,
            expire_seconds=settings.lock_timeout_seconds,
            wait_seconds=settings.lock_timeout_seconds + settings.model_timeout_seconds,
        )
        self.metrics = metrics or Metrics()
        self._accepting = True
        self._in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def backend(self) -> MemoryBackend:
        return self._backend

    def thread_id(self, incoming: IncomingMessage) -> str:
        """The conversation this message belongs to, by MEMORY_SCOPE."""
        scope = self._settings.memory_scope
        if scope == "channel":
            return channel_thread_id(incoming.channel_id)
        if scope == "thread":
            if incoming.thread_ref:
                return platform_thread_id(incoming.channel_id, incoming.thread_ref)
            return channel_thread_id(incoming.channel_id)
        return thread_id_for(incoming.user_id, incoming.channel_id)

    async def handle(self, incoming: IncomingMessage, on_progress: ProgressCallback | None = None) -> Reply | None:
        """Answer one message once. None: nothing to post (empty text or a repeated delivery).

        With `on_progress`, the model's reply is streamed: it is awaited with the text so far after
        each piece. The returned Reply always holds the exact, complete text to post.
        """
        if not incoming.text.strip():
            return None
        if not self._accepting:
            return Reply(_SHUTTING_DOWN, kind="busy")
        thread_id = self.thread_id(incoming)
        ticket = self._turns.reserve(incoming.platform, thread_id)  # before any await: arrival order
        with turn_context(platform=incoming.platform, event_id=incoming.event_id, thread_id=thread_id):
            async with self.in_flight():
                started = time.perf_counter()
                try:
                    reply = await self._handle(incoming, thread_id, ticket, on_progress)
                except GatewayError as exc:
                    self._count_failure(incoming.platform, exc)
                    log.warning("turn failed: %s", exc, extra={"outcome": type(exc).__name__})
                    reply = Reply(exc.user_message, kind="error", thread_id=thread_id)
                except Exception:
                    log.exception("turn crashed", extra={"outcome": "crash"})
                    reply = Reply(GatewayError.user_message, kind="error", thread_id=thread_id)
                finally:
                    ticket.done()
                self._record(incoming.platform, reply, time.perf_counter() - started)
                return reply

    @contextlib.asynccontextmanager
    async def in_flight(self) -> AsyncIterator[None]:
        """Count a piece of work that shutdown waits for; adapters wrap handling and posting in it."""
        self._in_flight += 1
        self._idle.clear()
        try:
            yield
        finally:
            self._in_flight -= 1
            if self._in_flight == 0:
                self._idle.set()

    async def drain(self, grace_seconds: float) -> bool:
        """Refuse new turns and wait for those in flight; False if some were still running at the deadline."""
        self._accepting = False
        try:
            async with asyncio.timeout(grace_seconds):
                await self._idle.wait()
        except TimeoutError:
            log.warning("shutdown grace of %ss ran out with %d turns in flight", grace_seconds, self._in_flight)
            return False
        return True

    def _count_failure(self, platform: str, exc: GatewayError) -> None:
        if isinstance(exc, StoreError):
            self.metrics.store_errors.labels(platform).inc()
        elif isinstance(exc, ModelError):
            self.metrics.model_errors.labels(platform).inc()

    def _record(self, platform: str, reply: Reply | None, seconds: float) -> None:
        outcome = "duplicate" if reply is None else reply.kind
        self.metrics.turns.labels(platform, outcome).inc()
        self.metrics.turn_seconds.labels(platform).observe(seconds)
        if reply is None:
            self.metrics.duplicates.labels(platform).inc()
        log.info("turn %s", outcome, extra={"outcome": outcome, "total_ms": round(seconds * 1000, 2)})

    async def _handle(
        self, incoming: IncomingMessage, thread_id: str, ticket: TurnTicket, on_progress: ProgressCallback | None
    ) -> Reply | None:
        namespace = incoming.platform
        if not await self._backend.claim_event(namespace, incoming.dedupe_key, self._settings.dedupe_ttl_seconds):
            return None
        log.debug("message text: %s", incoming.text)
        command = parse_command(incoming.text)
        limited = None if command else await self._check_limits(incoming, thread_id)
        if limited is not None:
            return limited
        async with ticket:
            thread = AgentThread(message_store=self._backend.store(thread_id, namespace))
            if command is not None:
                return Reply(await self._run_command(command, thread), kind="command", thread_id=thread_id)
            prompt = ChatMessage(role="user", text=incoming.text, author_id=incoming.user_id)
            response = await self._run_agent(prompt, thread, on_progress)
        self.metrics.model_seconds.labels(namespace).observe(response.model_seconds)
        self.metrics.threads_touched.labels(namespace).inc()
        return Reply(response.text, kind="answer", thread_id=thread_id)

    async def _check_limits(self, incoming: IncomingMessage, thread_id: str) -> Reply | None:
        limit = self._settings.max_input_chars
        if len(incoming.text) > limit:
            text = (
                f"Your message is {len(incoming.text):,} characters long; I accept at most {limit:,}. "
                "Please shorten it or split it up."
            )
            return Reply(text, kind="limit", thread_id=thread_id)
        per_minute = self._settings.rate_limit_per_minute
        if per_minute:
            window = int(time.time() // _RATE_WINDOW_SECONDS)
            counter = f"{incoming.platform}:{incoming.user_id}:{window}"
            if await self._backend.count_hit(counter, _RATE_WINDOW_SECONDS) > per_minute:
                self.metrics.rate_limited.labels(incoming.platform).inc()
                text = f"You're sending messages faster than I can answer ({per_minute} a minute). Please wait a bit."
                return Reply(text, kind="limit", thread_id=thread_id)
        return None

    async def _run_agent(
        self, prompt: ChatMessage, thread: AgentThread, on_progress: ProgressCallback | None
    ) -> AgentResponse:
        seconds = self._settings.model_timeout_seconds
        try:
            async with asyncio.timeout(seconds):
                if on_progress is None:
                    return await self.agent.run(prompt, thread=thread)
                return await self._stream(prompt, thread, on_progress)
        except TimeoutError:
            raise ModelTimeoutError(f"no complete answer within MODEL_TIMEOUT_SECONDS={seconds}") from None

    async def _stream(self, prompt: ChatMessage, thread: AgentThread, on_progress: ProgressCallback) -> AgentResponse:
        so_far = ""
        async for update in self.agent.run_stream(prompt, thread=thread):
            if update.response is not None:
                return update.response
            so_far += update.text
            await on_progress(so_far)
        raise GatewayError("the agent's stream ended without a final response")

    async def _run_command(self, command: Command, thread: AgentThread) -> str:
        store = thread.message_store
        assert store is not None  # the gateway always gives threads a store
        max_messages, ttl = self._settings.store_max_messages, self._settings.store_ttl_seconds
        if command == "reset":
            await store.clear()
            return "Done: I've forgotten our conversation here. We start fresh."
        if command == "help":
            return help_text(max_messages, ttl)
        count = len(await store.list_messages())
        cap = f" (I keep the last {max_messages})" if max_messages else ""
        if not ttl:
            expiry = "They never expire; `reset` forgets them."
        else:
            left = await store.ttl_seconds_left()
            remaining = f" — {describe_duration(left)} from now" if left is not None and count else ""
            expiry = f"They are forgotten after {describe_duration(ttl)} without activity{remaining}."
        return f"I remember {count} message{'' if count == 1 else 's'} of our conversation here{cap}. {expiry}"
