"""Slack's side of context from the platform: the platform thread (`conversations.replies`) or the DM
(`conversations.history`) before the message being answered, with each author's display name.

Which conversation is read: a message inside a platform thread reads that thread; a top-level DM reads the
DM; a top-level channel mention starts a new platform thread, so there is nothing before it to read. Rate
limits are the client's retry handlers' (adapter.py); any other failure propagates and the core answers
unseeded. Display names are asked once per user (`users.info`) and kept for the process's life, bounded.
"""

from __future__ import annotations

__all__ = ["SlackHistory"]

import logging
from collections.abc import Mapping
from typing import Any

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bots.slack.incoming import PLATFORM, clean_text, slack_message
from core.platform_context import AuthorKind, PlatformMessage
from core.turns import IncomingMessage

log = logging.getLogger(__name__)

_PAGE = 200  # Slack's advice for conversations.* page sizes
_MAX_PAGES = 20  # a thread longer than 4,000 messages is read from its first 4,000 only
_NAMES_KEPT = 5000
_READABLE_SUBTYPES = frozenset({None, "file_share", "thread_broadcast", "me_message", "bot_message"})


class SlackHistory:
    """The `PlatformHistory` of Slack, on the adapter's client; `identify` tells it the bot's own IDs."""

    def __init__(self, client: AsyncWebClient, *, notices: frozenset[str] = frozenset()) -> None:
        self._client = client
        self._notices = notices
        self._names: dict[str, str] = {}
        self._bot_user_id: str | None = None
        self._bot_id: str | None = None

    def identify(self, bot_user_id: str | None, bot_id: str | None) -> None:
        self._bot_user_id, self._bot_id = bot_user_id, bot_id

    async def read(self, incoming: IncomingMessage, *, after: float | None, limit: int) -> list[PlatformMessage]:
        message = slack_message(incoming)
        if not message.channel or not message.ts:
            return []
        window: dict[str, Any] = {"channel": message.channel, "latest": message.ts}
        if after is not None:
            window["oldest"] = f"{after:.6f}"
        thread_ts = incoming.metadata.get("thread_ts")
        if thread_ts:
            raw = await self._replies(window, thread_ts, limit)
        elif message.is_dm:
            raw = await self._dm(window, limit)
        else:
            return []
        found = [await self._convert(m) for m in raw if m.get("subtype") in _READABLE_SUBTYPES]
        return [m for m in found if m is not None][-limit:]

    async def _replies(self, window: dict[str, Any], thread_ts: str, limit: int) -> list[Mapping[str, Any]]:
        """The thread, oldest first: Slack pages it from its start, so every page is read and the newest kept."""
        kept: list[Mapping[str, Any]] = []
        cursor: str | None = None
        for _ in range(_MAX_PAGES):
            page = await self._client.conversations_replies(ts=thread_ts, limit=_PAGE, cursor=cursor, **window)
            kept = [*kept, *page.get("messages", [])][-limit:]
            cursor = (page.get("response_metadata") or {}).get("next_cursor")
            if not cursor:
                break
        return kept

    async def _dm(self, window: dict[str, Any], limit: int) -> list[Mapping[str, Any]]:
        """The DM's top level, newest first from Slack, so one page of `limit` is enough."""
        page = await self._client.conversations_history(limit=min(limit, 999), **window)
        return list(reversed(page.get("messages", [])))

    async def _convert(self, raw: Mapping[str, Any]) -> PlatformMessage | None:
        user, bot_id = str(raw.get("user") or ""), raw.get("bot_id")
        kind: AuthorKind = "person"
        if (user and user == self._bot_user_id) or (bot_id and bot_id == self._bot_id):
            kind = "self"
        elif bot_id or raw.get("subtype") == "bot_message":
            kind = "bot"
        text = clean_text(str(raw.get("text") or ""), self._bot_user_id)
        if kind == "self" and text in self._notices:
            return None
        profile = raw.get("bot_profile") or {}
        name = str(profile.get("name") or raw.get("username") or "") if kind == "bot" else ""
        if not name and kind != "self":
            name = await self._name(user)
        return PlatformMessage(
            message_id=str(raw.get("ts")), author_id=user or str(bot_id or ""), author_name=name, text=text,
            sent_at=float(raw.get("ts") or 0), kind=kind,
        )  # fmt: skip

    async def _name(self, user: str) -> str:
        if not user:
            return "someone"
        if user not in self._names:
            try:
                info = (await self._client.users_info(user=user)).get("user") or {}
            except SlackApiError as exc:  # no name is no reason to lose the message
                log.info("slack display name not read: %s", exc.response.get("error"), extra={"platform": PLATFORM})
                return user
            profile = info.get("profile") or {}
            if len(self._names) >= _NAMES_KEPT:
                self._names.clear()
            self._names[user] = str(profile.get("display_name") or profile.get("real_name") or info.get("name") or user)
        return self._names[user]
