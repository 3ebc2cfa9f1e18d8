"""Conversation IDs: `user_<user id>_session_<channel id>` and the other memory scopes.

IDs made of `[A-Za-z0-9.-]` appear as they are. Every other character, `_` included, is written as
`%HH` per UTF-8 byte, so an escaped part never holds `_`: the separators stay unambiguous, two
different pairs never share an ID, and `{`/`}` never break the Redis Cluster hash tag around it.
"""

from __future__ import annotations

import re
from urllib.parse import unquote

__all__ = ["channel_thread_id", "escape_part", "parse_thread_id", "platform_thread_id", "thread_id_for"]

_PLAIN = re.compile(r"[A-Za-z0-9.\-]")
_USER_SESSION = re.compile(r"^user_([A-Za-z0-9.%\-]+)_session_([A-Za-z0-9.%\-]+)$")


def escape_part(value: str) -> str:
    """Escape one ID part; a `ValueError` for an empty one."""
    if not value:
        raise ValueError("IDs in a thread ID must not be empty")
    return "".join(ch if _PLAIN.fullmatch(ch) else "".join(f"%{b:02X}" for b in ch.encode()) for ch in value)


def thread_id_for(user_id: str, channel_id: str) -> str:
    """The per-user, per-channel conversation: `user_<user>_session_<channel>`."""
    return f"user_{escape_part(user_id)}_session_{escape_part(channel_id)}"


def channel_thread_id(channel_id: str) -> str:
    """One memory shared by everyone in a channel: `channel_<channel>`."""
    return f"channel_{escape_part(channel_id)}"


def platform_thread_id(channel_id: str, thread_ref: str) -> str:
    """One memory per platform thread (a Slack thread_ts, a Discord thread): `channel_<c>_thread_<t>`."""
    return f"channel_{escape_part(channel_id)}_thread_{escape_part(thread_ref)}"


def parse_thread_id(thread_id: str) -> tuple[str, str]:
    """Invert `thread_id_for`: `(user_id, channel_id)`; a `ValueError` for any other form."""
    match = _USER_SESSION.fullmatch(thread_id)
    if match is None:
        raise ValueError(f"not a user_<user>_session_<channel> thread ID: {thread_id!r}")
    user_id, channel_id = (unquote(part, errors="strict") for part in match.groups())
    if thread_id_for(user_id, channel_id) != thread_id:
        raise ValueError(f"not a canonical thread ID (escaped differently): {thread_id!r}")
    return user_id, channel_id
