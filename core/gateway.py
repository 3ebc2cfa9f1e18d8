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
from core.agent import Agent, ChatModel
from core.approvals import Approvals, outside_deadline
from core.attachments import FileFetcher
from core.command_replies import CommandReplies
from core.commands import parse_command
from core.errors import GatewayError, ModelTimeoutError, StoreError
from core.file_input import FileInput, FileLimits, read_files
from core.limits import Limits
from core.messages import ChatMessage
from core.metrics import Metrics
from core.platform_context import THREAD_REF, ContextSource, Seed
from core.profile_rules import Place, Profiles, Resolved
from core.seeding import Seeding
from core.settings import Settings
from core.store.base import MemoryBackend
from core.threads import channel_thread_id, platform_thread_id, thread_id_for
from core.tools import Approver, Toolbox, ToolRunner
from core.turns import IncomingMessage, Reply
from core.usage.accounting import Refused, Settlement, UsageAccounting
from core.usage.budgets import BudgetLimits, refusal_text, turn_estimate
from core.usage.prices import PriceTable, load_prices

__all__ = ["Answer", "Gateway", "ProgressCallback"]

log = logging.getLogger(__name__)

ProgressCallback = Callable[[str], Awaitable[None]]


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
        self.commands = CommandReplies(backend, self.usage.ledger, self.prices)
        self.limits = Limits(
            max_input_chars=settings.max_input_chars, max_bot_turns=settings.max_bot_turns, metrics=self.metrics
        )
        self.seeding = Seeding(
            enabled=settings.context_from_platform, notice=settings.truncation_notice,
            context_tokens=settings.context_tokens, agent_name=self.agent.name,
        )  # fmt: skip

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
        limited = self.limits.refusal(
            incoming, history, hits, per_minute=resolved.rate_limit_per_minute, thread_id=thread_id
        )
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
            text, clear = await self.commands.reply(
                command, incoming, thread_id, history, resolved, budgets=self.budget_limits(incoming, resolved),
                exempt=self.is_admin(incoming),
            )  # fmt: skip
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
        seed = await self.seeding.seed(incoming, history, context, max_messages=resolved.max_messages or None)
        if seed.messages:
            history = [*history, *seed.messages]
        try:
            model_id = resolved.model if resolved.from_file("model") else self.agent.model.model_id
            opened = await self.usage.open(
                incoming, model_id, self.budget_limits(incoming, resolved),
                lambda: self.turn_estimate(history, prompt), exempt=self.is_admin(incoming),
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
                hook = outside_deadline(budget, approve) if approve is not None else None
                response = await self.agent.respond(
                    history, prompt, on_text=on_text, approve=hook, options=resolved.turn_options(), meter=account.meter
                )
        except TimeoutError:
            error = ModelTimeoutError(f"no complete answer within TURN_TIMEOUT_SECONDS={seconds}")
            return self._failed(incoming, thread_id, error)
        except GatewayError as exc:
            return self._failed(incoming, thread_id, exc)
        self.metrics.model_seconds.labels(incoming.platform).observe(response.model_seconds)
        text, messages = self.seeding.noted(response, history, seed, resolved.max_messages or None)
        reply = Reply(read.with_notes(text), kind="answer", thread_id=thread_id)
        if response.kept is not None:  # the model refused the older history: forget it for good
            messages = [*response.kept, *messages]
            return Answer(reply, messages=messages, clear=True, model_seconds=response.model_seconds)
        return Answer(reply, messages=[*seed.messages, *messages], model_seconds=response.model_seconds)

    def budget_limits(self, incoming: IncomingMessage, resolved: Resolved | None = None) -> BudgetLimits:
        """The daily token budgets that apply to `incoming`'s turn: its profile's, else the environment's."""
        r = resolved or self.resolve(incoming)
        return BudgetLimits(r.daily_token_budget_per_user, r.daily_token_budget_per_workspace)

    def is_admin(self, incoming: IncomingMessage) -> bool:
        """A person in ADMINS (exempt from budgets, may use the admin commands); never a bot."""
        return not incoming.from_bot and incoming.user_id in self._settings.admin_ids

    def turn_estimate(self, history: Sequence[ChatMessage], prompt: ChatMessage) -> int:
        """What one model call of the turn may cost (core.usage.budgets.turn_estimate): what a turn reserves."""
        tools = self.agent.tools.specs() if self.agent.tools is not None else {}
        return turn_estimate(
            history, prompt, instructions=self.agent.instructions, tool_defs=[t.to_openai() for t in tools.values()],
            context_tokens=self._settings.context_tokens, reply_tokens=self._settings.max_reply_tokens,
        )  # fmt: skip

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


def _limited(answer: Answer, resolved: Resolved) -> Answer:
    """`answer` with its conversation's limits for the commit (its profile's, or the environment's)."""
    return replace(answer, max_messages=resolved.max_messages, ttl_seconds=resolved.ttl_seconds)


def _sent_at(incoming: IncomingMessage) -> float:
    """When the platform says `incoming` was sent (adapters set metadata `sent_at`), else now."""
    try:
        return float(incoming.metadata["sent_at"])
    except (KeyError, ValueError):
        return time.time()
