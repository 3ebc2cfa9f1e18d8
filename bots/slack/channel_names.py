"""Slack channel names for profiles that match channels by name: Slack events carry only the ID.

Asked of conversations.info (the channels:read / groups:read scopes) only while some profile matches
on `channel`, and remembered per channel for `ttl_seconds`, so a busy channel costs one lookup an hour.
The lookup is bounded (`timeout_seconds`, well inside Slack's 3 s to acknowledge): a slow one leaves
the message without a name (profiles then match its ID only); a refused one (no channels:read, a
channel the bot cannot see) is remembered as nameless for `failed_ttl_seconds`, so it is not asked on
every message. Concurrent messages of one channel share one lookup.
"""

from __future__ import annotations

__all__ = ["ChannelNames"]

import asyncio
import logging
import time
from collections.abc import Callable

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bots.slack.writer import TRANSPORT_ERRORS, error_code

log = logging.getLogger(__name__)

_MAX_REMEMBERED = 10_000


class ChannelNames:
    def __init__(
        self,
        client: AsyncWebClient,
        *,
        ttl_seconds: float = 3600.0,
        failed_ttl_seconds: float = 300.0,
        timeout_seconds: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client
        self._ttl = ttl_seconds
        self._failed_ttl = failed_ttl_seconds
        self._timeout = timeout_seconds
        self._clock = clock
        self._known: dict[str, tuple[str, float]] = {}  # channel -> (name, or "" when refused; when asked)
        self._asking: dict[str, asyncio.Task[str | None]] = {}

    async def name(self, channel: str) -> str | None:
        known = self._known.get(channel)
        if known is not None and self._clock() - known[1] < (self._ttl if known[0] else self._failed_ttl):
            return known[0] or None
        task = self._asking.get(channel)
        if task is None:
            task = self._asking[channel] = asyncio.create_task(self._ask(channel), name="slack-channel-name")
            task.add_done_callback(lambda _: self._asking.pop(channel, None))
        try:
            async with asyncio.timeout(self._timeout):
                return await asyncio.shield(task)  # a slow answer still lands in the cache for the next one
        except TimeoutError:
            log.warning("slack channel name not known in time; profiles match its ID only", extra={"platform": "slack"})
            return None

    async def _ask(self, channel: str) -> str | None:
        try:
            info = await self._client.conversations_info(channel=channel)
        except SlackApiError as exc:
            log.warning("slack channel name not read: %s", error_code(exc), extra={"platform": "slack"})
            name = ""
        except TRANSPORT_ERRORS as exc:  # not remembered: the next message asks again
            log.warning("slack channel name not read: %s", type(exc).__name__, extra={"platform": "slack"})
            return None
        else:
            name = str((info.get("channel") or {}).get("name") or "")
        if len(self._known) >= _MAX_REMEMBERED:
            self._known.pop(next(iter(self._known)))
        self._known[channel] = (name, self._clock())
        return name or None
