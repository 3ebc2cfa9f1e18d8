"""Reading stored data back: message entries and message-key names, shared by both backends."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from pydantic import ValidationError

from core.messages import ChatMessage
from core.store.base import ThreadRef

__all__ = ["decode_messages", "parse_message_key"]

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


def parse_message_key(key: str, key_prefix: str) -> ThreadRef | None:
    head, brace, rest = key.partition("{")
    thread_id, _, tail = rest.partition("}")
    if not brace or tail != ":messages" or not head.startswith(f"{key_prefix}:"):
        return None
    namespace = head[len(key_prefix) + 1 : -1] or None
    return ThreadRef(namespace=namespace, thread_id=thread_id)
