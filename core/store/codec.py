"""Reading stored data back: message entries and message-key names, shared by both backends."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from pydantic import ValidationError

from core.messages import ChatMessage

__all__ = ["decode_messages"]

log = logging.getLogger(__name__)


def decode_messages(raw: Sequence[bytes | str], key: str) -> list[ChatMessage]:
    messages: list[ChatMessage] = []
    for index, entry in enumerate(raw):
        try:
            messages.append(ChatMessage.from_json(entry))
        except (ValidationError, ValueError) as exc:
            log.warning(
                "skipped entry %d of %s: not a stored chat message (%s)",
                index,
                key,
                type(exc).__name__,
                extra={"key": key},
            )
    return messages
