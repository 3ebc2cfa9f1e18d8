"""Slack's assistant surfaces: suggested prompts when a thread opens, its title, its status line.

Plain bolt event listeners rather than bolt's `AsyncAssistant` middleware: that middleware would take the
user's messages in assistant threads away from the `message` listener, and those must stay on the one
path every message takes (incoming -> inbox -> turn; stored before acknowledged). So an assistant thread's
messages are DM thread messages like any other; this module only adds what the assistant view shows:
- `assistant_thread_started`: SLACK_SUGGESTED_PROMPTS (`assistant.threads.setSuggestedPrompts`);
- the first message of a DM thread names it (`assistant.threads.setTitle`), once (a backend flag says so);
- the status line ("is thinking…", the tool being run) is the `WorkingIndicator`'s.
All of it is best effort: a refusal (an app without the assistant view, a missing scope) is logged and
nothing else changes; a turn never fails for it.
"""

from __future__ import annotations

__all__ = ["AssistantThreads", "TitleOnce", "thread_title"]

import asyncio
import logging
import re
from collections.abc import Sequence
from typing import Any

from slack_bolt.app.async_app import AsyncApp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bots.slack.access import SlackAccess
from bots.slack.incoming import PLATFORM, SlackMessage
from bots.slack.writer import TRANSPORT_ERRORS, error_code
from core.commands import parse_command
from core.errors import GatewayError
from core.settings import SuggestedPrompt
from core.store.base import Flags

log = logging.getLogger(__name__)

_TITLE_CHARS = 80
# The listener runs before bolt acknowledges the event (process_before_response): stay well inside Slack's 3 s.
_CALL_SECONDS = 2.0


def thread_title(question: str) -> str:
    """A thread's title from its first question: the first line, whitespace folded, cut at a word."""
    line = next((part for part in question.splitlines() if part.strip()), "")
    text = re.sub(r"\s+", " ", line).strip()
    if len(text) <= _TITLE_CHARS:
        return text
    cut = text[: _TITLE_CHARS - 1]
    return (cut.rsplit(" ", 1)[0] if " " in cut else cut).rstrip(" ,;:.") + "…"


async def _best_effort(call: Any, what: str) -> bool:
    try:
        async with asyncio.timeout(_CALL_SECONDS):
            await call
    except SlackApiError as exc:
        code = error_code(exc)
        log.info("slack %s refused: %s", what, code, extra={"platform": PLATFORM, "slack_error": code})
        return False
    except TRANSPORT_ERRORS as exc:
        log.warning("slack %s failed: %s", what, type(exc).__name__, extra={"platform": PLATFORM})
        return False
    return True


class AssistantThreads:
    """The listeners of the assistant view's own events."""

    def __init__(self, *, client: AsyncWebClient, prompts: Sequence[SuggestedPrompt], access: SlackAccess) -> None:
        self._client = client
        self._prompts = [{"title": p.title, "message": p.message} for p in prompts]
        self._access = access

    def register(self, app: AsyncApp) -> None:
        app.event("assistant_thread_started")(self.on_thread_started)
        # Subscribed so the manifest matches bolt's assistant apps; the gateway keeps no per-thread context.
        app.event("assistant_thread_context_changed")(self.on_context_changed)

    async def on_thread_started(self, event: dict[str, Any]) -> None:
        thread: dict[str, Any] = event.get("assistant_thread") or {}
        channel, thread_ts, user = thread.get("channel_id"), thread.get("thread_ts"), thread.get("user_id")
        if not (channel and thread_ts and self._prompts):
            return
        if user and not await self._access.allows(channel=str(channel), user=str(user), is_dm=True):
            return  # SLACK_DM_POLICY: nothing to suggest to someone who will not be answered
        call = self._client.assistant_threads_setSuggestedPrompts(
            channel_id=str(channel), thread_ts=str(thread_ts), prompts=self._prompts
        )
        if await _best_effort(call, "suggested prompts"):
            log.info("slack assistant thread started", extra={"platform": PLATFORM, "channel": channel})

    async def on_context_changed(self, event: dict[str, Any]) -> None:
        log.debug("slack assistant thread context changed", extra={"platform": PLATFORM})


class TitleOnce:
    """Names a DM thread after its first question: one `setTitle` per thread, remembered in the backend."""

    def __init__(self, client: AsyncWebClient, flags: Flags, *, ttl_seconds: int | None) -> None:
        self._client = client
        self._flags = flags
        self._ttl_seconds = ttl_seconds

    async def title(self, message: SlackMessage) -> None:
        thread_ts = message.reply_thread_ts
        title = thread_title(message.incoming.text)
        if not message.is_dm or thread_ts is None or not title or parse_command(message.incoming.text) is not None:
            return
        flag = f"{PLATFORM}:titled:{message.team_id}:{message.channel}:{thread_ts}"
        try:
            if await self._flags.has_flag(flag):
                return
            # Flagged first: a thread whose title Slack refused (no assistant view) is not asked again.
            await self._flags.set_flag(flag, self._ttl_seconds)
        except GatewayError as exc:
            log.warning("slack thread title skipped: %s", exc, extra={"platform": PLATFORM})
            return
        call = self._client.assistant_threads_setTitle(channel_id=message.channel, thread_ts=thread_ts, title=title)
        await _best_effort(call, "thread title")
