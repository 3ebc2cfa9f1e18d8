"""What crosses from an adapter into the core and back: an incoming message and the reply to post."""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from typing import Any, Literal

from core.attachments import Attachment

__all__ = ["IncomingMessage", "Reply", "ReplyKind"]

ReplyKind = Literal["answer", "command", "error", "limit", "silent"]


@dataclass(frozen=True, slots=True)
class IncomingMessage:
    """One user message, already stripped of the bot's mention.

    `event_id` is the platform's delivery ID; `turn_key`, when set, names the user message itself so
    two deliveries of it under different event IDs (Slack's `app_mention` and `message`) are one turn.
    `thread_ref` is the platform thread, used by the `thread` memory scope. `from_bot`: another bot wrote
    it (adapters pass those on only with *_ALLOW_BOTS); MAX_BOT_TURNS caps how many in a row are answered.
    `attachments` are references to the message's files, downloaded only when the turn runs.
    """

    platform: str
    event_id: str
    user_id: str
    channel_id: str
    text: str
    thread_ref: str | None = None
    turn_key: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    from_bot: bool = False
    attachments: tuple[Attachment, ...] = ()

    @property
    def dedupe_key(self) -> str:
        return self.turn_key or self.event_id

    @property
    def workspace_id(self) -> str | None:
        """The Slack team or Discord guild the message came from; None for a Discord DM."""
        return self.metadata.get("team_id") or self.metadata.get("guild_id") or None

    @property
    def is_dm(self) -> bool:
        """A direct message with the bot (adapters set metadata `is_dm` to "1")."""
        return self.metadata.get("is_dm") == "1"

    def to_json(self) -> str:
        """What the inbox keeps: enough for any process to answer and post, long after the event."""
        # Field by field, not dataclasses.asdict: that deep-copies recursively, a cost on every message.
        data = {f: getattr(self, f) for f in _FIELDS}
        data["metadata"] = dict(self.metadata)
        if self.attachments:
            data["attachments"] = [attachment.to_dict() for attachment in self.attachments]
        else:
            del data["attachments"]  # a message without files is stored as before files existed
        return json.dumps(data, separators=(",", ":"))

    @classmethod
    def from_json(cls, raw: str | bytes) -> IncomingMessage:
        data: dict[str, Any] = json.loads(raw)
        files = data.pop("attachments", None) or ()
        return cls(**data, attachments=tuple(Attachment.from_dict(item) for item in files))


_FIELDS = tuple(f.name for f in fields(IncomingMessage))


@dataclass(frozen=True, slots=True)
class Reply:
    """Text to post back; `kind` says whether it is the model's answer or the gateway speaking.
    A `silent` reply posts nothing (a repeat of a limit notice already given this window)."""

    text: str
    kind: ReplyKind = "answer"
    thread_id: str | None = None

    @property
    def is_error(self) -> bool:
        return self.kind == "error"
