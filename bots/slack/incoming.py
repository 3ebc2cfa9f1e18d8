"""Slack payloads -> `SlackMessage`: whether to answer, what the core sees, and where the reply goes.

Rules kept here (issue #5):
- answered: `app_mention`, `message` in a DM, and `message` in a channel thread the bot takes part
  in (the adapter checks that last one in the backend, see `needs_participation`); with a profile
  saying `respond: always` for the channel, every message there (the listener asks the core);
- ignored: the bot's own messages, other bots' unless SLACK_ALLOW_BOTS, and every subtype but plain
  user messages (`message_changed`, `message_deleted`, `channel_join`, ...);
- the bot's own `<@BOT>` is stripped; other mentions stay as Slack writes them (`<@U123>`), which
  the model reads and can write back; `&lt;` `&gt;` `&amp;` are unescaped.

Conversation keys: the core's `channel_id` is `<team>-<channel>` (for example `T1-C1`, so thread IDs
read `user_U1_session_T1-C1`). The team is the workspace the app answers in (the envelope's
`team_id`), so one token serving several workspaces (an org-wide install) never mixes them. The
turn key `<team>:<channel>:<ts>` names the user's message itself: its `app_mention` and `message`
deliveries, and Slack's retries of either, are one turn.
"""

from __future__ import annotations

__all__ = [
    "PLATFORM",
    "SlackMessage",
    "clean_text",
    "conversation_id",
    "message_from_command",
    "message_from_event",
    "slack_message",
    "thread_flag",
    "thread_flags",
]

import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import unquote

from bots.slack.files import attachments_of
from core.turns import IncomingMessage

PLATFORM = "slack"
_USER_SUBTYPES = frozenset({None, "file_share", "thread_broadcast", "me_message"})
_EVENT_TYPES = frozenset({"app_mention", "message"})
_COMMANDS = {"/reset": "reset", "/usage": "usage"}


@dataclass(frozen=True, slots=True)
class SlackMessage:
    """One message to answer: what the gateway gets and where on Slack the reply goes."""

    incoming: IncomingMessage
    team_id: str
    channel: str
    ts: str  # the user's message: reactions go on it
    reply_thread_ts: str | None  # None: the top level of a DM
    user_team_id: str  # the sender's workspace (differs from team_id in shared channels)
    is_dm: bool
    needs_participation: bool  # a thread message without a mention: answer only where the bot takes part
    top_level: bool = False  # a channel message outside any thread, without a mention: only `respond: always`

    @property
    def user(self) -> str:
        return self.incoming.user_id

    @property
    def participation_flag(self) -> str | None:
        """The backend flag saying the bot takes part in this message's channel thread."""
        if self.is_dm or self.reply_thread_ts is None:
            return None
        return thread_flag(self.team_id, self.channel, self.reply_thread_ts)


def conversation_id(team_id: str | None, channel: str) -> str:
    """The `channel_id` the core keys memory on: the channel inside its workspace."""
    return f"{team_id}-{channel}" if team_id else channel


def thread_flag(team_id: str, channel: str, thread_ts: str) -> str:
    return f"{PLATFORM}:thread:{team_id}:{channel}:{thread_ts}"


_THREAD_SCOPE_ID = re.compile(r"^channel_([A-Za-z0-9.%\-]+)_thread_([A-Za-z0-9.%\-]+)$")


def thread_flags(thread_id: str) -> list[str]:
    """The participation flag a conversation of MEMORY_SCOPE=thread stands beside (clearing it goes too);
    none for the other scopes, whose conversations share their Slack threads with other users."""
    match = _THREAD_SCOPE_ID.fullmatch(thread_id)
    if match is None:
        return []
    conversation, thread_ts = (unquote(part) for part in match.groups())
    team, dash, channel = conversation.partition("-")  # conversation_id(): "<team>-<channel>", or the channel
    return [thread_flag(team, channel, thread_ts) if dash else thread_flag("", conversation, thread_ts)]


def clean_text(text: str, bot_user_id: str | None) -> str:
    if bot_user_id:
        text = re.sub(rf"[ \t]?<@{re.escape(bot_user_id)}(?:\|[^>]*)?>", "", text)
    # Slack escapes exactly these three in message text; "&amp;" last, so "&amp;lt;" stays "&lt;".
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&").strip()


def _is_ignored(event: Mapping[str, Any], bot_user_id: str | None, bot_id: str | None, allow_bots: bool) -> bool:
    subtype = event.get("subtype")
    from_bot = bool(event.get("bot_id")) or subtype == "bot_message"
    own = (bot_user_id is not None and event.get("user") == bot_user_id) or (
        bot_id is not None and event.get("bot_id") == bot_id
    )
    if own or (from_bot and not allow_bots):
        return True
    return subtype not in _USER_SUBTYPES and subtype != "bot_message"


def message_from_event(
    body: Mapping[str, Any], *, bot_user_id: str | None, bot_id: str | None, allow_bots: bool
) -> SlackMessage | None:
    """The message to answer in an Events API body, or None when the rules above say to ignore it."""
    event: Mapping[str, Any] = body.get("event") or {}
    if event.get("type") not in _EVENT_TYPES or _is_ignored(event, bot_user_id, bot_id, allow_bots):
        return None
    user = event.get("user") or event.get("bot_id")
    channel, ts = event.get("channel"), event.get("ts")
    team = body.get("team_id") or event.get("team") or ""
    if not (user and channel and ts):
        return None
    is_dm = event.get("channel_type") == "im"
    thread_ts = event.get("thread_ts")
    is_mention = event.get("type") == "app_mention"
    reply_thread_ts = thread_ts if is_dm else (thread_ts or ts)
    incoming = IncomingMessage(
        platform=PLATFORM,
        event_id=str(body.get("event_id") or f"{team}:{channel}:{ts}"),
        user_id=str(user),
        channel_id=conversation_id(team, str(channel)),
        text=clean_text(str(event.get("text") or ""), bot_user_id),
        thread_ref=thread_ts or (None if is_dm else ts),
        turn_key=f"{team}:{channel}:{ts}",
        from_bot=bool(event.get("bot_id")) or event.get("subtype") == "bot_message",
        attachments=attachments_of(event),
        # Everything a writer needs, in whichever process answers: the inbox keeps it with the message.
        metadata={
            "team_id": team, "channel": str(channel), "ts": str(ts), "reply_thread_ts": reply_thread_ts or "",
            "user_team_id": str(event.get("team") or team), "is_dm": "1" if is_dm else "",
            "mention": "1" if is_mention else "",
            # Inside a platform thread that began before this message: its context is on Slack (history.py).
            "thread_ts": str(thread_ts or ""), "joins_thread": "1" if thread_ts and thread_ts != ts else "",
            "sent_at": str(ts),  # Slack's ts is the epoch time it was sent: the reset watermark compares with it
        },
    )  # fmt: skip
    message = slack_message(incoming)
    # A channel message outside any thread: answered only where a profile says `respond: always`.
    return replace(message, top_level=not is_dm and not is_mention and not thread_ts)


def slack_message(incoming: IncomingMessage) -> SlackMessage:
    """The Slack view of a stored message (its metadata says where the reply goes)."""
    meta = incoming.metadata
    is_dm = bool(meta.get("is_dm"))
    return SlackMessage(
        incoming=incoming,
        team_id=meta.get("team_id", ""),
        channel=meta.get("channel", ""),
        ts=meta.get("ts", ""),
        reply_thread_ts=meta.get("reply_thread_ts") or None,
        user_team_id=meta.get("user_team_id") or meta.get("team_id", ""),
        is_dm=is_dm,
        needs_participation=not is_dm and not meta.get("mention"),
    )


def message_from_command(body: Mapping[str, Any]) -> IncomingMessage | None:
    """A slash command as the gateway command it stands for (`/reset` -> `reset`), else None."""
    command = _COMMANDS.get(str(body.get("command") or ""))
    user, channel = body.get("user_id"), body.get("channel_id")
    if command is None or not user or not channel:
        return None
    team = str(body.get("team_id") or "")
    return IncomingMessage(
        platform=PLATFORM,
        event_id=f"command:{body.get('trigger_id') or body.get('response_url') or ''}",
        user_id=str(user),
        channel_id=conversation_id(team, str(channel)),
        text=command,
        # Slash commands answer through their response_url (ephemeral, valid for 30 minutes).
        metadata={
            "team_id": team,
            "channel": str(channel),
            "response_url": str(body.get("response_url") or ""),
            "is_dm": "1" if str(channel).startswith("D") else "",
        },
    )
