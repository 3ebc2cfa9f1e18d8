"""Showing a user that the bot is working on their message, and taking it away when the turn ends.

In a DM thread (the shape of Slack's assistant threads) the thread's status line
(`assistant.threads.setStatus`: "is thinking…", then the tool being run, `show_status`); elsewhere,
or where Slack refuses a status (the app is no assistant), an :eyes: reaction on the message.
Best effort: a refusal or a lost request is logged and the turn goes on.
The deliveries of one message (`app_mention` and `message`, Slack's retries) share one indicator
in this process: the first to arrive shows it, the last to finish takes it away.
"""

from __future__ import annotations

__all__ = ["WorkingIndicator"]

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bots.slack.incoming import SlackMessage
from bots.slack.writer import THINKING, TRANSPORT_ERRORS, error_code

log = logging.getLogger(__name__)

_STATUS_SECONDS = 2.0
_Remover = Callable[[], Awaitable[bool]]


class WorkingIndicator:
    """Shared by every turn of one adapter."""

    def __init__(self, client: AsyncWebClient, *, reaction: str = "eyes", status: str = THINKING) -> None:
        self._client = client
        self._reaction = reaction
        self._status = status
        self._holders: Counter[str] = Counter()
        self._removers: dict[str, _Remover] = {}
        self._status_lines: dict[str, tuple[str, str]] = {}  # message key -> (channel, thread_ts) with a status

    @asynccontextmanager
    async def shown(self, message: SlackMessage) -> AsyncIterator[None]:
        """Show the indicator on `message` while the block runs."""
        key = message.incoming.dedupe_key
        self._holders[key] += 1
        try:
            if self._holders[key] == 1:
                remover = await self._show(message)
                if remover is not None:
                    self._removers[key] = remover
            yield
        finally:
            self._holders[key] -= 1
            if self._holders[key] <= 0:
                del self._holders[key]
                self._status_lines.pop(key, None)
                remover = self._removers.pop(key, None)
                if remover is not None:
                    await remover()

    async def _show(self, message: SlackMessage) -> _Remover | None:
        channel, thread_ts = message.channel, message.reply_thread_ts
        if message.is_dm and thread_ts is not None:
            status = self._client.assistant_threads_setStatus
            if await self._call(status(channel_id=channel, thread_ts=thread_ts, status=self._status)):
                self._status_lines[message.incoming.dedupe_key] = (channel, thread_ts)
                return lambda: self._call(status(channel_id=channel, thread_ts=thread_ts, status=""))
        # already_reacted: an earlier owner of the message put it there, a process that died and will never take
        # it away. This process answers the message now, so it takes it away when done.
        reactions = (self._client.reactions_add, self._client.reactions_remove)
        added = reactions[0](channel=channel, timestamp=message.ts, name=self._reaction)
        if await self._call(added, taken_over="already_reacted"):
            return lambda: self._call(reactions[1](channel=channel, timestamp=message.ts, name=self._reaction))
        return None

    async def show_status(self, message: SlackMessage, status: str) -> None:
        """Change the status line of `message`'s turn (where it has one: the reaction has no words)."""
        where = self._status_lines.get(message.incoming.dedupe_key)
        if where is None:
            return
        with contextlib.suppress(TimeoutError):  # progress waits for this call: never long
            async with asyncio.timeout(_STATUS_SECONDS):
                await self._call(
                    self._client.assistant_threads_setStatus(channel_id=where[0], thread_ts=where[1], status=status)
                )

    async def _call(self, request: Awaitable[Any], *, taken_over: str | None = None) -> bool:
        try:
            await request
        except SlackApiError as exc:
            if error_code(exc) == taken_over:
                return True
            log.info(
                "slack indicator refused: %s",
                error_code(exc),
                extra={"platform": "slack", "slack_error": error_code(exc)},
            )
            return False
        except TRANSPORT_ERRORS as exc:
            log.warning("slack indicator failed: %s", type(exc).__name__, extra={"platform": "slack"})
            return False
        return True
