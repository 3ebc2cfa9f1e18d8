"""ChatMessage: exact JSON round trips and the OpenAI form."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from core.messages import ChatMessage, ToolCall


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


CALL = ToolCall(id="call_1", name="lookup", arguments='{"id": "42"}')


def test_a_tool_exchange_round_trips_through_json() -> None:
    call = ChatMessage(role="assistant", text="", tool_calls=(CALL,))
    result = ChatMessage(role="tool", text="found", tool_call_id="call_1", metadata={"tool": "lookup"})
    for message in (call, result):
        assert ChatMessage.from_json(message.to_json()) == message


def test_messages_without_tools_are_stored_as_before() -> None:
    assert "tool" not in ChatMessage(role="user", text="hi").to_json()


def test_openai_form_of_a_tool_exchange() -> None:
    assert ChatMessage(role="assistant", text="", tool_calls=(CALL,)).to_openai() == {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": '{"id": "42"}'}}
        ],
    }
    assert ChatMessage(role="tool", text="found", tool_call_id="call_1").to_openai() == {
        "role": "tool", "tool_call_id": "call_1", "content": "found",
    }  # fmt: skip


def test_a_tool_message_of_older_data_goes_as_user_text() -> None:
    assert ChatMessage(role="tool", text="old").to_openai() == {"role": "user", "content": "old"}
