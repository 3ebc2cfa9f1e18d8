"""ChatMessage: exact JSON round trips and the OpenAI form."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from core.messages import ChatMessage


@pytest.mark.parametrize(
    "text", ["plain", "ünïcödé 中文 עברית", "emoji 👩🏽‍💻🔥", "multi\nline\r\n", "x" * 100_000, ""]
)
def test_json_round_trip_is_exact(text: str) -> None:
    message = ChatMessage(role="user", text=text, author_id="U1", metadata={"ts": "1.2", "nested": {"a": [1]}})
    assert ChatMessage.from_json(message.to_json()) == message


def test_created_at_is_utc_even_when_given_naive() -> None:
    message = ChatMessage(role="user", text="x", created_at=datetime(2026, 1, 1, 12, 0))
    assert message.created_at.tzinfo == UTC


def test_unknown_roles_are_rejected() -> None:
    with pytest.raises(ValidationError):
        ChatMessage(role="wizard", text="x")  # type: ignore[arg-type]


def test_openai_form_has_role_and_content() -> None:
    assert ChatMessage(role="assistant", text="hi").to_openai() == {"role": "assistant", "content": "hi"}


def test_every_message_gets_its_own_id() -> None:
    assert ChatMessage(role="user", text="a").message_id != ChatMessage(role="user", text="a").message_id
