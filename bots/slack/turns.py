"""Slack listeners and the turns they start: convert, hand to the gateway, post; never crash.

bolt acknowledges events before it calls a listener (process_before_response=False) and a listener
here only starts a task, so Slack's 3-second ack never waits for the model; `/reset` acks first too.
Idempotency, ordering, commands and limits are the gateway's: a `None` reply is a repeated delivery
and nothing is posted. A failure becomes a short message in the thread where Slack lets us post
one, and a log line with `platform=slack`.
"""

from __future__ import annotations

__all__ = ["OutcomeHook", "SlackTurns", "TurnOutcome"]

import asyncio
import logging
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Literal

from slack_bolt.app.async_app import AsyncApp
from slack_bolt.context.ack.async_ack import AsyncAck
from slack_bolt.context.async_context import AsyncBoltContext
from slack_bolt.context.respond.async_respond import AsyncRespond
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bots.slack.incoming import PLATFORM, SlackMessage, message_from_command, message_from_event
from bots.slack.indicator import WorkingIndicator
from bots.slack.text import neutralise
from bots.slack.writer import SlackReply, error_code
from core.errors import GatewayError
from core.gateway import Gateway
from core.logs import turn_context
from core.throttle import ProgressThrottle
from core.turns import IncomingMessage, Reply

log = logging.getLogger(__name__)

FAILURE_NOTICE = "Sorry, I could not post my reply here. The operator has been told."


@dataclass(frozen=True, slots=True)
class TurnOutcome:
    """How one delivery ended; `posted` holds the ts of the reply's messages."""

    event_id: str
    result: Literal["answered", "ignored", "duplicate", "failed"]
    reply: Reply | None = None
    posted: tuple[str, ...] = ()


OutcomeHook = Callable[[TurnOutcome], object]


class SlackTurns:
    """The listeners of one adapter and the turns in flight; `drain` ends them at shutdown."""

    def __init__(
        self,
        *,
        gateway: Gateway,
        client: AsyncWebClient,
        progress_client: AsyncWebClient,
        allow_bots: bool,
        thread_ttl_seconds: int | None,
        progress_interval_seconds: float,
        on_outcome: OutcomeHook | None = None,
    ) -> None:
        self._gateway = gateway
        self._client = client
        self._progress_client = progress_client
        self._allow_bots = allow_bots
        self._thread_ttl_seconds = thread_ttl_seconds
        self._interval = progress_interval_seconds
        self._on_outcome = on_outcome
        self._indicator = WorkingIndicator(client)
        self._tasks: set[asyncio.Task[None]] = set()

    def register(self, app: AsyncApp) -> None:
        app.event("app_mention")(self.on_event)
        app.event("message")(self.on_event)
        app.command("/reset")(self.on_command)

    async def on_event(self, body: dict[str, Any], context: AsyncBoltContext) -> None:
        message = message_from_event(
            body, bot_user_id=context.bot_user_id, bot_id=context.bot_id, allow_bots=self._allow_bots
        )
        if message is None:
            self._report(TurnOutcome(str(body.get("event_id", "")), "ignored"))
            return
        self._spawn(self._answer(message), message.incoming.event_id)

    async def on_command(self, ack: AsyncAck, body: dict[str, Any], respond: AsyncRespond) -> None:
        await ack()
        incoming = message_from_command(body)
        if incoming is None:
            self._report(TurnOutcome(str(body.get("trigger_id", "")), "ignored"))
            return
        self._spawn(self._command(incoming, respond), incoming.event_id)

    async def drain(self, timeout_seconds: float) -> None:
        """Let turns in flight finish for up to `timeout_seconds`, then cancel the rest."""
        if not self._tasks:
            return
        _, pending = await asyncio.wait(set(self._tasks), timeout=timeout_seconds)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        if pending:
            log.warning("slack turns cancelled at shutdown", extra={"platform": PLATFORM, "turns": len(pending)})

    def _spawn(self, turn: Coroutine[Any, Any, None], event_id: str) -> None:
        task = asyncio.create_task(turn, name=f"slack-turn-{event_id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _answer(self, message: SlackMessage) -> None:
        incoming = message.incoming
        with turn_context(platform=PLATFORM, event_id=incoming.event_id):
            if message.needs_participation and not await self._takes_part(message):
                self._report(TurnOutcome(incoming.event_id, "ignored"))
                return
            writer = SlackReply(
                self._client,
                progress_client=self._progress_client,
                channel=message.channel,
                thread_ts=message.reply_thread_ts,
                recipient_team_id=message.user_team_id,
                recipient_user_id=message.user,
            )
            reply: Reply | None = None
            result: Literal["answered", "duplicate", "failed"] = "failed"
            try:
                async with self._indicator.shown(message):
                    reply = await self._gateway.handle(incoming, ProgressThrottle(writer.progress, self._interval))
                    if reply is not None:
                        await writer.finish(reply.text)
                result = "answered" if reply is not None else "duplicate"
            except SlackApiError as exc:
                # A Slack refusal is explained by its code; a traceback would add nothing.
                log.error("slack reply failed: %s", error_code(exc), extra=self._fields(message, exc))  # noqa: TRY400
                await self._post_notice(message)
            except Exception:
                log.exception("slack turn crashed", extra=self._fields(message))
                await self._post_notice(message)
            if result == "answered":
                await self._remember_thread(message)
                log.info("slack reply posted", extra={**self._fields(message), "parts": len(writer.posted)})
            self._report(TurnOutcome(incoming.event_id, result, reply, tuple(writer.posted)))

    async def _command(self, incoming: IncomingMessage, respond: AsyncRespond) -> None:
        with turn_context(platform=PLATFORM, event_id=incoming.event_id):
            reply: Reply | None = None
            result: Literal["answered", "duplicate", "failed"] = "failed"
            try:
                reply = await self._gateway.handle(incoming)
                if reply is not None:
                    response = await respond(text=neutralise(reply.text), response_type="ephemeral")
                    if response.status_code != 200:
                        raise RuntimeError(f"response_url answered HTTP {response.status_code}")
                result = "answered" if reply is not None else "duplicate"
            except Exception:
                log.exception("slack command reply failed", extra={"platform": PLATFORM, "event_id": incoming.event_id})
            self._report(TurnOutcome(incoming.event_id, result, reply))

    async def _takes_part(self, message: SlackMessage) -> bool:
        flag = message.participation_flag
        try:
            return flag is not None and await self._gateway.backend.has_flag(flag)
        except GatewayError as exc:
            log.warning("slack thread lookup failed: %s", exc, extra=self._fields(message))
            return False

    async def _remember_thread(self, message: SlackMessage) -> None:
        flag = message.participation_flag
        if flag is None:
            return
        try:
            await self._gateway.backend.set_flag(flag, self._thread_ttl_seconds)
        except GatewayError as exc:
            log.warning("slack thread not remembered: %s", exc, extra=self._fields(message))

    async def _post_notice(self, message: SlackMessage) -> None:
        try:
            await self._client.chat_postMessage(
                channel=message.channel, thread_ts=message.reply_thread_ts, text=FAILURE_NOTICE
            )
        except SlackApiError as exc:
            log.warning("slack failure notice not posted: %s", error_code(exc), extra=self._fields(message, exc))

    def _report(self, outcome: TurnOutcome) -> None:
        if self._on_outcome is not None:
            self._on_outcome(outcome)

    @staticmethod
    def _fields(message: SlackMessage, exc: SlackApiError | None = None) -> dict[str, object]:
        fields: dict[str, object] = {"platform": PLATFORM, "event_id": message.incoming.event_id}
        fields.update(channel=message.channel, team_id=message.team_id)
        if exc is not None:
            fields["slack_error"] = error_code(exc)
        return fields
