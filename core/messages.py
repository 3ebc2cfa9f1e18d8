"""The chat message every part of chat-gateway passes around, and its two wire forms.

JSON (`to_json` / `from_json`) is what the store keeps; `to_openai` is what the model is sent. Images
(`images`) reach only `to_openai`: the stored form keeps their references (metadata "attachments") and
never their bytes. A tool
exchange is an assistant message with `tool_calls` followed by one `tool` message per call, each
naming its call's `tool_call_id`: the shape OpenAI accepts, and the only one we store.
"""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from typing import Any, Literal
from uuid import uuid4

from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = ["ChatMessage", "ImagePart", "Role", "ToolCall"]

Role = Literal["system", "user", "assistant", "tool"]
_TOOL_FIELDS = frozenset({"tool_calls", "tool_call_id"})


def _new_id() -> str:
    return uuid4().hex


def _now() -> datetime:
    return datetime.now(UTC)


class ToolCall(BaseModel):
    """One call the model asked for; `arguments` is the JSON text exactly as the model wrote it."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    id: str
    name: str
    arguments: str = "{}"

    def to_openai(self) -> dict[str, Any]:
        return {"id": self.id, "type": "function", "function": {"name": self.name, "arguments": self.arguments}}


class ImagePart(BaseModel):
    """An image sent with a user message, for this turn's model calls only (never stored)."""

    model_config = ConfigDict(frozen=True)

    mimetype: str
    data: bytes

    def to_openai(self) -> dict[str, Any]:
        url = f"data:{self.mimetype};base64,{base64.b64encode(self.data).decode('ascii')}"
        return {"type": "image_url", "image_url": {"url": url}}


class ChatMessage(BaseModel):
    """One message of a conversation. Immutable: a stored message is never edited in place."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    role: Role
    text: str
    author_id: str | None = None
    message_id: str = Field(default_factory=_new_id)
    created_at: datetime = Field(default_factory=_now)
    metadata: dict[str, Any] = Field(default_factory=dict)
    tool_calls: tuple[ToolCall, ...] = ()  # assistant: the calls it asked for
    tool_call_id: str | None = None  # tool: the call this message answers
    images: tuple[ImagePart, ...] = Field(default=(), exclude=True)  # user: this turn's images, never stored

    @field_validator("created_at")
    @classmethod
    def _as_utc(cls, value: datetime) -> datetime:
        # Naive timestamps from old data or callers are taken as UTC so comparisons never mix kinds.
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)

    def to_json(self) -> str:
        # Messages without tools are stored as before tools existed: older readers and sizes stay as they were.
        plain = not self.tool_calls and self.tool_call_id is None
        return self.model_dump_json(exclude=set(_TOOL_FIELDS) if plain else None)

    @classmethod
    def from_json(cls, data: str | bytes) -> ChatMessage:
        """Raises `pydantic.ValidationError` for anything that is not a stored message."""
        return cls.model_validate_json(data)

    def to_openai(self) -> dict[str, Any]:
        """The Chat Completions form. A tool message without a call ID (older data) goes as user text."""
        if self.role == "tool":
            if self.tool_call_id is None:
                return {"role": "user", "content": self.text}
            return {"role": "tool", "tool_call_id": self.tool_call_id, "content": self.text}
        if self.role == "assistant" and self.tool_calls:
            return {
                "role": "assistant",
                "content": self.text or None,
                "tool_calls": [call.to_openai() for call in self.tool_calls],
            }
        if self.images:
            parts = [{"type": "text", "text": self.text}, *(image.to_openai() for image in self.images)]
            return {"role": self.role, "content": parts}
        return {"role": self.role, "content": self.text}

    def without_images(self) -> ChatMessage:
        return self.model_copy(update={"images": ()}) if self.images else self
