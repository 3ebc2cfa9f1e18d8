"""The chat message every part of chat-gateway passes around, and its two wire forms.

JSON (`to_json` / `from_json`) is what the store keeps; `to_openai` is what the model is sent.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal
from uuid import uuid4

from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = ["ChatMessage", "Role"]

Role = Literal["system", "user", "assistant", "tool"]


def _new_id() -> str:
    return uuid4().hex


def _now() -> datetime:
    return datetime.now(UTC)


class ChatMessage(BaseModel):
    """One message of a conversation. Immutable: a stored message is never edited in place."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    role: Role
    text: str
    author_id: str | None = None
    message_id: str = Field(default_factory=_new_id)
    created_at: datetime = Field(default_factory=_now)
    metadata: dict[str, Any] = Field(default_factory=dict)

    @field_validator("created_at")
    @classmethod
    def _as_utc(cls, value: datetime) -> datetime:
        # Naive timestamps from old data or callers are taken as UTC so comparisons never mix kinds.
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)

    def to_json(self) -> str:
        return self.model_dump_json()

    @classmethod
    def from_json(cls, data: str | bytes) -> ChatMessage:
        """Raises `pydantic.ValidationError` for anything that is not a stored message."""
        return cls.model_validate_json(data)

    def to_openai(self) -> dict[str, str]:
        """The Chat Completions form; tool results go back as plain text we never send tool calls."""
        role = "user" if self.role == "tool" else self.role
        return {"role": role, "content": self.text}
