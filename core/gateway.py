"""A delivered message -> its answer: commands, limits and the agent, for every platform alike.

The gateway decides WHAT to answer; core.delivery decides WHEN and makes it happen exactly once (the
inbox, the lease, the commit, the post). Nothing here writes to the store: `answer` returns the
messages the turn's commit stores. Every failure becomes a short, true reply: a model that failed
stored nothing, and the reply says so.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field, replace

from core.admin import AdminCommands
from core.agent import Agent, AgentResponse, ChatModel
from core.approvals import Approvals
from core.attachments import FileFetcher
from core.commands import Command, describe_duration, help_text, parse_command
from core.context import estimate_tokens, tools_tokens
from core.errors import GatewayError, ModelTimeoutError, StoreError
from core.file_input import FileInput, FileLimits, read_files
from core.messages import ChatMessage
from core.metrics import Metrics
from core.platform_context import THREAD_REF, ContextSource, Seed, lacks_context, note_truncation, seed_messages
from core.profile_rules import Place, Profiles, Resolved
from core.settings import Settings
from core.store.base import MemoryBackend
from core.threads import channel_thread_id, platform_thread_id, thread_id_for
from core.tools import Approver, PendingCall, Toolbox, ToolRunner
from core.turns import IncomingMessage, Reply
from core.usage.accounting import Refused, Settlement, UsageAccounting
from core.usage.budgets import DEFAULT_REPLY_RESERVE, BudgetLimits, refusal_text
from core.usage.prices import PriceTable, load_prices
from core.usage.report import admin_usage_text, usage_text

__all__ = ["Answer", "Gateway", "ProgressCallback"]

log = logging.getLogger(__name__)

ProgressCallback = Callable[[str], Awaitable[None]]
_SEED_LIMIT = 200  # platform messages seeded at most when MAX_MESSAGES=0 (unlimited)
_SEED_READ_SECONDS = 15.0  # the SDKs retry rate limits within this; past it the turn goes on unseeded


@dataclass(frozen=True, slots=True)
class Answer:
    """A turn's outcome: the reply to post and what the commit stores (`clear` empties the history first;
    `reset`, when the reset was sent: no platform context from before it is ever seeded). `max_messages` and
    `ttl_seconds` are the conversation's limits for the commit (its profile's; None: the store's own), in the
    settings' terms: 0 keeps every message, or never expires."""

    reply: Reply
    messages: list[ChatMessage] = field(default_factory=list)
    clear: bool = False
    model_seconds: float = 0.0
    reset: float | None = None
    max_messages: int | None = None
    ttl_seconds: int | None = None
    usage: Settlement | None = None  # settled by the caller after the commit (UsageAccounting.settle_soon)


class Gateway:
    """Shared by every adapter of a process; holds no per-conversation state."""

    def __init__(
        self,
        settings: Settings,
        backend: MemoryBackend,
        model: ChatModel,
        *,
        metrics: Metrics | None = None,
        tools: Toolbox | None = None,
        approvals: Approvals | None = None,
        profiles: Profiles | None = None,
    ) -> None:
        self._settings = settings
        self._backend = backend
        self.profiles = profiles or Profiles(settings)
        self.admin = AdminCommands(
            backend, settings.admin_ids, lease_seconds=settings.lock_timeout_seconds,
            keep_seconds=settings.dedupe_ttl_seconds,
        )  # fmt: skip
        self.metrics = metrics or Metrics()
        self.tools = tools
        self.approvals = approvals or Approvals(
            backend.approvals(), timeout_seconds=settings.approval_timeout_seconds, approvers=settings.approver_ids,
            metrics=self.metrics, keep_seconds=settings.dedupe_ttl_seconds,
        )  # fmt: skip
        runner = ToolRunner(
            tools, timeout_seconds=settings.tool_timeout_seconds, max_result_chars=settings.max_tool_result_chars,
            metrics=self.metrics,
        ) if tools is not None else None  # fmt: skip
        self.agent = Agent(
            model,
            name="chat-gateway",
            instructions=settings.system_prompt,
            max_context_tokens=settings.context_tokens,
            tools=runner,
            max_tool_steps=settings.max_tool_steps,
            model_timeout_seconds=settings.model_timeout_seconds,
        )
        self.usage = UsageAccounting(backend.usage(), self.metrics)
        self.prices: PriceTable | None = load_prices(settings.model_prices_file) if settings.model_prices_file else None

    @property
    def backend(self) -> MemoryBackend:
        return self._backend

    @property
    def settings(self) -> Settings:
        return self._settings

    def resolve(self, incoming: IncomingMessage) -> Resolved:
        """The settings of the message's place: its profile's, the defaults', the environment's."""
        return self.profiles.resolve(incoming)

    def admits(self, incoming: IncomingMessage, resolved: Resolved) -> bool:
        """Whether the place's profile lets the bot answer this sender at all (`respond: never`, allow, deny)."""
        return resolved.respond != "never" and resolved.permits(Place.of(incoming))

    def thread_id(self, incoming: IncomingMessage, resolved: Resolved | None = None) -> str:
        """The conversation this message belongs to, by its memory scope (MEMORY_SCOPE or its profile's)."""
        scope = (resolved or self.resolve(incoming)).memory_scope
        if scope == "channel":
            return channel_thread_id(incoming.channel_id)
        if scope == "thread":
            if incoming.thread_ref:
                return platform_thread_id(incoming.channel_id, incoming.thread_ref)
            return channel_thread_id(incoming.channel_id)
        return thread_id_for(incoming.user_id, incoming.channel_id)

    async def answer(
        self,
        incoming: IncomingMessage,
        history: Sequence[ChatMessage],
        *,
        hits: int = 0,
        on_text: ProgressCallback | None = None,
        approve: Approver | None = None,
        working: Callable[[], AbstractAsyncContextManager[None]] | None = None,
        files: FileFetcher | None = None,
        context: ContextSource | None = None,
    ) -> Answer:
        """The answer to `incoming` after `history`; `hits` is the sender's count in the rate window.

        Limits come first, commands included; only a message that passes them enters `working()` (the
        platform's "working on it" indicator), so a refused one costs the platform at most its one notice.
        `approve` is asked before each call of a tool that needs a person's approval (the delivery layer
        posts the prompt and waits for the click); without it, such calls are not run. `files` downloads
        the message's attachments (the platform adapter's); `context` reads the platform's history when
        the memory lacks it (CONTEXT_FROM_PLATFORM, core.platform_context).
        """
        resolved = self.resolve(incoming)  # the whole turn keeps this, whatever a reload brings meanwhile
        thread_id = self.thread_id(incoming, resolved)
        admin = self.admin.command(incoming) or (
            self.is_admin(incoming) and parse_command(incoming.text) == "admin usage"
        )
        if not admin and await self.admin.paused(incoming):
            log.info("channel paused by an admin: message ignored", extra={"outcome": "paused"})
            return _limited(Answer(Reply("", kind="silent", thread_id=thread_id)), resolved)
        limited = self.refusal(incoming, history, hits, resolved)
        if limited is not None:
            return _limited(Answer(limited), resolved)
        if resolved.max_messages and len(history) > resolved.max_messages:
            history = history[-resolved.max_messages :]  # with profiles the inbox reads whole histories
        async with working() if working is not None else contextlib.nullcontext():
            answer = await self._answer(
                incoming, history, thread_id, on_text, approve=approve, resolved=resolved, files=files, context=context
            )
        return _limited(answer, resolved)

    async def _answer(
        self,
        incoming: IncomingMessage,
        history: Sequence[ChatMessage],
        thread_id: str,
        on_text: ProgressCallback | None,
        *,
        approve: Approver | None,
        resolved: Resolved,
        files: FileFetcher | None = None,
        context: ContextSource | None = None,
    ) -> Answer:
        admin = self.admin.command(incoming)
        if admin is not None:
            text, clear = await self.admin.run(admin, incoming, thread_id, resolved.memory_scope)
            reply = Reply(text, kind="command", thread_id=thread_id)
            return Answer(reply, clear=clear, reset=_sent_at(incoming) if clear else None)
        command = parse_command(incoming.text) if not incoming.attachments else None
        if command == "admin usage" and not self.is_admin(incoming):
            command = None  # to anyone else it is a message like any other: no hint the command exists
        if command is not None:
            text, clear = await self._run_command(command, incoming, thread_id, history, resolved)
            reply = Reply(text, kind="command", thread_id=thread_id)
            return Answer(reply, clear=clear, reset=_sent_at(incoming) if command == "reset" else None)
        log.debug("message text: %s", incoming.text)
        read = await self._read_files(incoming, files)
        if read.notes and not read.read and not incoming.text.strip():  # nothing at all for the model
            return Answer(Reply(read.with_notes(""), kind="limit", thread_id=thread_id))
        metadata: dict[str, object] = {"from_bot": True} if incoming.from_bot else {}
        if read.references:
            metadata["attachments"] = read.references
        if incoming.thread_ref:
            metadata[THREAD_REF] = incoming.thread_ref
        text = "\n\n".join(part for part in (incoming.text, read.text) if part)
        prompt = ChatMessage(
            role="user", text=text, author_id=incoming.user_id, metadata=metadata, images=tuple(read.images)
        )
        seed = await self._seed(incoming, history, context)
        if seed.messages:
            history = [*history, *seed.messages]
        try:
            model_id = resolved.model if resolved.from_file("model") else self.agent.model.model_id
            opened = await self.usage.open(
                incoming, model_id, self.budget_limits(incoming, resolved),
                lambda: self._turn_estimate(history, prompt), exempt=self.is_admin(incoming),
            )  # fmt: skip
        except StoreError as exc:
            return Answer(Reply(exc.user_message, kind="error", thread_id=thread_id))
        if isinstance(opened, Refused):
            if incoming.from_bot:  # as with every limit: a notice would only be one more message for the bot
                return Answer(Reply("", kind="silent", thread_id=thread_id))
            return Answer(Reply(refusal_text(opened.scope), kind="limit", thread_id=thread_id))
        try:
            answer = await self._model_turn(
                incoming, history, prompt, read, seed=seed, account=opened, on_text=on_text, approve=approve,
                resolved=resolved,
            )  # fmt: skip
        except BaseException:
            self.usage.settle_soon(opened)  # cancelled (a lost lease, shutdown): give back what it did not use
            raise
        return replace(answer, usage=opened)

    async def _model_turn(
        self,
        incoming: IncomingMessage,
        history: Sequence[ChatMessage],
        prompt: ChatMessage,
        read: FileInput,
        *,
        seed: Seed,
        account: Settlement,
        on_text: ProgressCallback | None,
        approve: Approver | None,
        resolved: Resolved,
    ) -> Answer:
        thread_id = self.thread_id(incoming, resolved)
        seconds = self._settings.turn_timeout_seconds
        try:
            # Each model call has MODEL_TIMEOUT_SECONDS (in the agent); this bounds all calls and tool
            # rounds of the answer together, except the time spent waiting for a person's approval (bounded
            # by APPROVAL_TIMEOUT_SECONDS). Reads and writes have their own bounds.
            async with asyncio.timeout(seconds) as budget:
                hook = _outside(budget, approve) if approve is not None else None
                response = await self.agent.respond(
                    history, prompt, on_text=on_text, approve=hook, options=resolved.turn_options(), meter=account.meter
                )
        except TimeoutError:
            error = ModelTimeoutError(f"no complete answer within TURN_TIMEOUT_SECONDS={seconds}")
            return self._failed(incoming, thread_id, error)
        except GatewayError as exc:
            return self._failed(incoming, thread_id, exc)
        self.metrics.model_seconds.labels(incoming.platform).observe(response.model_seconds)
        text, messages = self._noted(response, history, seed, resolved.max_messages or None)
        reply = Reply(read.with_notes(text), kind="answer", thread_id=thread_id)
        if response.kept is not None:  # the model refused the older history: forget it for good
            messages = [*response.kept, *messages]
            return Answer(reply, messages=messages, clear=True, model_seconds=response.model_seconds)
        return Answer(reply, messages=[*seed.messages, *messages], model_seconds=response.model_seconds)

    async def _seed(
        self, incoming: IncomingMessage, history: Sequence[ChatMessage], context: ContextSource | None
    ) -> Seed:
        """The platform's history of this conversation when the memory lacks it; empty on any failure."""
        if context is None or not self._settings.context_from_platform or not lacks_context(incoming, history):
            return Seed([])
        limit = self._settings.store_max_messages or _SEED_LIMIT
        try:
            async with asyncio.timeout(_SEED_READ_SECONDS):
                found = await context.read(incoming, limit=limit + 1)  # one more: were any left out?
        except Exception as exc:  # a failed read is no context, never a failed turn
            log.warning("platform context not read, answering without it: %s: %s", type(exc).__name__, exc,
                        extra={"outcome": "no_seed"})  # fmt: skip
            return Seed([])
        seed = seed_messages(
            found, limit=limit, budget_tokens=self._settings.context_tokens, agent_name=self.agent.name,
            metadata={THREAD_REF: incoming.thread_ref} if incoming.thread_ref else None,
        )  # fmt: skip
        log.info("platform context seeded", extra={"messages": len(seed.messages), "read": len(found)})
        return seed

    def _noted(
        self, response: AgentResponse, history: Sequence[ChatMessage], seed: Seed, cap: int | None
    ) -> tuple[str, list[ChatMessage]]:
        """The reply and the turn's messages, noting the first cut of the history (core.platform_context);
        `cap` is the conversation's max_messages (its profile's), None: no cap."""
        trimmed = cap is not None and len(history) + len(response.messages) > cap
        cut = seed.cut or response.cut or trimmed or response.kept is not None
        notice = self._settings.truncation_notice and response.kept is None  # DROPPED_NOTE says it already
        return note_truncation(response.text, response.messages, history, cut=cut, notice=notice)

    def budget_limits(self, incoming: IncomingMessage, resolved: Resolved | None = None) -> BudgetLimits:
        """The daily token budgets that apply to `incoming`'s turn: its profile's, else the environment's."""
        r = resolved or self.resolve(incoming)
        return BudgetLimits(r.daily_token_budget_per_user, r.daily_token_budget_per_workspace)

    def is_admin(self, incoming: IncomingMessage) -> bool:
        """A person in ADMINS (exempt from budgets, may use the admin commands); never a bot."""
        return not incoming.from_bot and incoming.user_id in self._settings.admin_ids

    def _turn_estimate(self, history: Sequence[ChatMessage], prompt: ChatMessage) -> int:
        """What one model call of the turn may cost: the request (history as far as it fits) and the longest reply."""
        sent = min(sum(estimate_tokens(m) for m in history), self._settings.context_tokens)
        tools = self.agent.tools.specs() if self.agent.tools is not None else {}
        fixed = estimate_tokens(prompt) + len(self.agent.instructions) // 4
        fixed += tools_tokens([spec.to_openai() for spec in tools.values()])
        return sent + fixed + (self._settings.max_reply_tokens or DEFAULT_REPLY_RESERVE)

    async def _read_files(self, incoming: IncomingMessage, files: FileFetcher | None) -> FileInput:
        if not incoming.attachments:
            return FileInput()
        settings = self._settings
        limits = FileLimits(settings.max_attachment_bytes, settings.max_attachments, settings.max_attachment_chars)
        return await read_files(incoming.attachments, files, limits)

    def _failed(self, incoming: IncomingMessage, thread_id: str, exc: GatewayError) -> Answer:
        self.metrics.model_errors.labels(incoming.platform).inc()
        log.warning("turn failed: %s", exc, extra={"outcome": type(exc).__name__})
        return Answer(Reply(exc.user_message, kind="error", thread_id=thread_id))

    def refusal(
        self, incoming: IncomingMessage, history: Sequence[ChatMessage], hits: int, resolved: Resolved | None = None
    ) -> Reply | None:
        """Why `incoming` gets no model turn: over a limit, or a bot past MAX_BOT_TURNS in a row; None: answer it.

        A person is told once per rate window; a bot is never told anything (a notice would be one more
        message for it to answer, and the loop would go on).
        """
        resolved = resolved or self.resolve(incoming)
        thread_id = self.thread_id(incoming, resolved)
        cap = self._settings.max_bot_turns
        if incoming.from_bot and cap and _bot_streak(history) >= cap:
            log.info("bot turn cap reached: %d bot messages in a row get no answer until a person writes", cap,
                     extra={"outcome": "bot_cap"})  # fmt: skip
            return Reply("", kind="silent", thread_id=thread_id)
        limited = self._check_limits(incoming, thread_id, hits, resolved.rate_limit_per_minute)
        if limited is not None and incoming.from_bot:
            return Reply("", kind="silent", thread_id=thread_id)
        return limited

    def _check_limits(self, incoming: IncomingMessage, thread_id: str, hits: int, per_minute: int) -> Reply | None:
        limit = self._settings.max_input_chars
        if len(incoming.text) > limit:
            text = (
                f"Your message is {len(incoming.text):,} characters long; I accept at most {limit:,}. "
                "Please shorten it or split it up."
            )
            return Reply(text, kind="limit", thread_id=thread_id)
        if per_minute and hits > per_minute:
            self.metrics.rate_limited.labels(incoming.platform).inc()
            if hits > per_minute + 1:  # told once this window; another notice would only add to the flood
                return Reply("", kind="silent", thread_id=thread_id)
            text = f"You're sending messages faster than I can answer ({per_minute} a minute). Please wait a bit."
            return Reply(text, kind="limit", thread_id=thread_id)
        return None

    async def _run_command(
        self,
        command: Command,
        incoming: IncomingMessage,
        thread_id: str,
        history: Sequence[ChatMessage],
        resolved: Resolved,
    ) -> tuple[str, bool]:
        max_messages, ttl = resolved.max_messages or None, resolved.ttl_seconds or None
        what = self._conversation_name(incoming, resolved.memory_scope)
        count = len(history)
        messages = f"{count} message{'' if count == 1 else 's'}"
        if command == "reset":
            if count:
                return f"Done: I've forgotten the {messages} of {what}. We start fresh.", True
            text = f"There was nothing to forget in {what}."
            if resolved.memory_scope == "thread" and not incoming.thread_ref:
                text += " Here each thread has its own conversation: write `reset` in the thread to forget it."
            return text, True
        if command == "help":
            return help_text(max_messages, ttl), False
        if command == "usage":
            return await usage_text(self.usage.ledger, incoming, self.budget_limits(incoming), self.prices,
                                    exempt=self.is_admin(incoming)), False  # fmt: skip
        if command == "admin usage":
            return await admin_usage_text(self.usage.ledger, incoming.platform, self.prices), False
        cap = f" (I keep the last {max_messages})" if max_messages else ""
        if not ttl:
            expiry = "They never expire; `reset` forgets them."
        else:
            left = await self._backend.store(thread_id, incoming.platform).ttl_seconds_left() if count else None
            remaining = f" — {describe_duration(left)} from now" if left is not None else ""
            expiry = f"They are forgotten after {describe_duration(ttl)} without activity{remaining}."
        return f"I remember {messages} of {what}{cap}. {expiry}", False

    def _conversation_name(self, incoming: IncomingMessage, scope: str) -> str:
        """The conversation a command acts on, in the user's words (the memory scope decides which it is)."""
        if scope == "channel":
            return "this channel's shared conversation"
        if scope == "thread":
            return "this thread's conversation" if incoming.thread_ref else "this channel's conversation"
        return "your conversation with me in this channel"


def _limited(answer: Answer, resolved: Resolved) -> Answer:
    """`answer` with its conversation's limits for the commit (its profile's, or the environment's)."""
    return replace(answer, max_messages=resolved.max_messages, ttl_seconds=resolved.ttl_seconds)


def _sent_at(incoming: IncomingMessage) -> float:
    """When the platform says `incoming` was sent (adapters set metadata `sent_at`), else now."""
    try:
        return float(incoming.metadata["sent_at"])
    except (KeyError, ValueError):
        return time.time()


def _bot_streak(history: Sequence[ChatMessage]) -> int:
    """How many of the newest user messages in a row bots wrote (a person's message ends the streak)."""
    streak = 0
    for message in reversed(history):
        if message.role != "user":
            continue
        if not message.metadata.get("from_bot"):
            break
        streak += 1
    return streak


def _outside(budget: asyncio.Timeout, approve: Approver) -> Approver:
    """`approve` with the turn's deadline stopped while any approval of the turn is awaited."""
    waiting = 0
    left = 0.0

    async def wrapped(call: PendingCall) -> bool | str:
        nonlocal waiting, left
        loop = asyncio.get_running_loop()
        if waiting == 0:
            when = budget.when()
            left = when - loop.time() if when is not None else 0.0
            budget.reschedule(None)
        waiting += 1
        try:
            return await approve(call)
        finally:
            waiting -= 1
            if waiting == 0:
                budget.reschedule(loop.time() + max(left, 0.0))

    return wrapped
