"""Slack listeners: convert, make the message durable, and only then let bolt acknowledge it.

The app runs with `process_before_response=True`, so bolt acknowledges an event (HTTP 200, or the
Socket Mode envelope ack) only when its listener returns: a listener returns once the message is
in the inbox, and raises when it cannot be stored, which leaves it unacknowledged for Slack to retry.
The turn itself runs in the core's delivery runner, which posts through `writers`.
"""

from __future__ import annotations

__all__ = ["NOT_HERE", "NOT_STORED", "SlackListeners", "SlackWriters"]

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from typing import Any

from slack_bolt.app.async_app import AsyncApp
from slack_bolt.context.ack.async_ack import AsyncAck
from slack_bolt.context.async_context import AsyncBoltContext
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.webhook.async_client import AsyncWebhookClient

from bots.slack.access import SlackAccess
from bots.slack.approvals import ApprovalClicks
from bots.slack.assistant import AssistantThreads, TitleOnce
from bots.slack.incoming import PLATFORM, SlackMessage, message_from_command, message_from_event, slack_message
from bots.slack.indicator import WorkingIndicator
from bots.slack.text import neutralise
from bots.slack.writer import SlackReply
from core.delivery import Delivery, OutcomeHook, ReplyWriter, TurnOutcome
from core.errors import GatewayError
from core.profiles import Respond
from core.store.base import Flags
from core.turns import IncomingMessage

log = logging.getLogger(__name__)

# Slack retries an event it has no 200 for within 3 s: storing it must end well before.
_INTAKE_SECONDS = 2.5
NOT_HERE = "I'm not enabled in this channel."
NOT_STORED = (
    "My memory is unreachable right now, so I could not take your message yet. "
    "Slack will send it to me again; if I have not answered in a few minutes, please resend it."
)


class SlackWriters:
    """The `ReplyWriter` of each Slack message, built from what the inbox stored: any process can post it."""

    def __init__(
        self,
        *,
        client: AsyncWebClient,
        progress_client: AsyncWebClient,
        flags: Flags,
        thread_ttl_seconds: int | None,
        allow_user_mentions: bool = False,
    ) -> None:
        self._allow_mentions = allow_user_mentions
        self._client = client
        self._progress_client = progress_client
        self._flags = flags
        self._thread_ttl_seconds = thread_ttl_seconds
        self._indicator = WorkingIndicator(client)
        self._titles = TitleOnce(client, flags, ttl_seconds=thread_ttl_seconds)

    def __call__(self, incoming: IncomingMessage) -> ReplyWriter:
        response_url = incoming.metadata.get("response_url")
        if response_url:
            return CommandReply(response_url, allow_user_mentions=self._allow_mentions)
        message = slack_message(incoming)
        return SlackReply(
            self._client,
            progress_client=self._progress_client,
            channel=message.channel,
            thread_ts=message.reply_thread_ts,
            recipient_team_id=message.user_team_id,
            recipient_user_id=message.user,
            message_key=incoming.dedupe_key,
            working=lambda: self._working(message),
            on_posted=lambda: self._remember_thread(message),
            on_status=lambda status: self._indicator.show_status(message, status),
            allow_user_mentions=self._allow_mentions,
        )

    @contextlib.asynccontextmanager
    async def _working(self, message: SlackMessage) -> AsyncIterator[None]:
        async with self._indicator.shown(message):
            await self._titles.title(message)
            yield

    async def _remember_thread(self, message: SlackMessage) -> None:
        flag = message.participation_flag
        if flag is None:
            return
        try:
            await self._flags.set_flag(flag, self._thread_ttl_seconds)
        except GatewayError as exc:
            log.warning("slack thread not remembered: %s", exc, extra={"platform": PLATFORM})


class CommandReply:
    """A slash command's ephemeral answer through its response_url."""

    def __init__(self, response_url: str, *, allow_user_mentions: bool = False) -> None:
        self._url = response_url
        self._allow_mentions = allow_user_mentions
        self.posted: list[str] = []

    def resume(self, posted: Any) -> None:
        self.posted = list(posted)

    async def progress(self, text: str) -> None:
        """Commands do not stream."""

    async def finish(self, text: str) -> None:
        if self.posted:  # already answered by an earlier owner
            return
        response = await AsyncWebhookClient(self._url).send(
            text=neutralise(text, allow_user_mentions=self._allow_mentions), response_type="ephemeral"
        )
        if response.status_code != 200:
            raise RuntimeError(f"response_url answered HTTP {response.status_code}")
        self.posted.append("response_url")

    async def notice(self, text: str) -> None:
        try:
            await AsyncWebhookClient(self._url).send(text=text, response_type="ephemeral")
        except Exception:  # best effort: the failure is logged by the caller already
            log.warning("slack command notice not sent", extra={"platform": PLATFORM})

    def working(self) -> Any:
        return _Nothing()


class _Nothing:
    async def __aenter__(self) -> None:
        return None

    async def __aexit__(self, *exc: object) -> None:
        return None


class SlackListeners:
    def __init__(
        self,
        *,
        delivery: Delivery,
        writers: SlackWriters,
        flags: Flags,
        allow_bots: bool,
        access: SlackAccess,
        on_outcome: OutcomeHook | None = None,
        approvals: ApprovalClicks | None = None,
        assistant: AssistantThreads | None = None,
        respond: Callable[[IncomingMessage], Respond] | None = None,
        channel_name: Callable[[str], Awaitable[str | None]] | None = None,
    ) -> None:
        self._respond = respond or (lambda _: "mention")
        self._channel_name = channel_name
        self._approvals = approvals
        self._assistant = assistant
        self._access = access
        self._delivery = delivery
        self._writers = writers
        self._flags = flags
        self._allow_bots = allow_bots
        self._on_outcome = on_outcome

    def _ignored(self, event_id: str) -> None:
        if self._on_outcome is not None:
            self._on_outcome(TurnOutcome(event_id, "ignored"))

    def register(self, app: AsyncApp) -> None:
        app.event("app_mention")(self.on_event)
        app.event("message")(self.on_event)
        app.command("/reset")(self.on_command)
        app.command("/usage")(self.on_command)
        if self._approvals is not None:
            self._approvals.register(app)
        if self._assistant is not None:
            self._assistant.register(app)

    async def on_event(self, body: dict[str, Any], context: AsyncBoltContext, request: AsyncBoltRequest) -> None:
        message = message_from_event(
            body, bot_user_id=context.bot_user_id, bot_id=context.bot_id, allow_bots=self._allow_bots
        )
        if message is not None and not message.is_dm:
            message = await self._named(message)
        if (
            message is None
            or not await self._access.allows(channel=message.channel, user=message.user, is_dm=message.is_dm)
            or not await self._answers(message)
        ):
            self._ignored(str(body.get("event_id", "")))
            return
        await self._receive(message.incoming, first_try=not request.headers.get("x-slack-retry-num"))

    async def on_command(self, ack: AsyncAck, body: dict[str, Any]) -> None:
        incoming = message_from_command(body)
        if incoming is not None and not await self._access.allows(
            channel=incoming.metadata["channel"], user=incoming.user_id, is_dm=incoming.metadata["channel"][:1] == "D"
        ):
            await ack(text=NOT_HERE)
            self._ignored(str(body.get("trigger_id", "")))
            return
        if incoming is not None:
            await self._receive(incoming, first_try=True)
        else:
            self._ignored(str(body.get("trigger_id", "")))
        await ack()

    async def _receive(self, incoming: IncomingMessage, *, first_try: bool) -> None:
        """Raises (so bolt answers 500 and Slack retries) when the message could not be stored; the user
        is told once, on Slack's first delivery (its retries stay quiet)."""
        fields = {"platform": PLATFORM, "event_id": incoming.dedupe_key, "channel_id": incoming.channel_id}
        try:
            async with asyncio.timeout(_INTAKE_SECONDS):
                outcome = await self._delivery.receive(incoming)
        except (GatewayError, TimeoutError) as exc:
            log.error("slack message not stored, left for Slack to retry: %s", exc or "timeout", extra=fields)  # noqa: TRY400
            if first_try:
                await self._writers(incoming).notice(NOT_STORED)
            raise
        log.info("slack message %s", outcome, extra=fields)

    async def _named(self, message: SlackMessage) -> SlackMessage:
        """The message with its channel's name in metadata, where profiles match names (see channel_names)."""
        name = await self._channel_name(message.channel) if self._channel_name is not None else None
        if not name:
            return message
        incoming = message.incoming
        return replace(message, incoming=replace(incoming, metadata={**incoming.metadata, "channel_name": name}))

    async def _answers(self, message: SlackMessage) -> bool:
        """A message without a mention: answered in a channel whose profile says `respond: always`, else only
        in a thread the bot takes part in (`respond: never` and deny-lists are the core's, at intake)."""
        if not message.needs_participation:
            return True
        if self._respond(message.incoming) == "always":
            return True
        return not message.top_level and await self._takes_part(message)

    async def _takes_part(self, message: SlackMessage) -> bool:
        flag = message.participation_flag
        try:
            return flag is not None and await self._flags.has_flag(flag)
        except GatewayError as exc:
            log.warning("slack thread lookup failed: %s", exc, extra={"platform": PLATFORM})
            return False
