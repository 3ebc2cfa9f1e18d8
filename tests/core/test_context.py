"""What fits a request: known context windows, the reply-limit field, and trimming that keeps tool exchanges whole."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.context import (
    context_window,
    default_context_tokens,
    fit_history,
    history_budget_after_refusal,
    reply_tokens_parameter,
    well_formed,
)
from core.messages import ChatMessage, ToolCall
from tests.conftest import make_settings


def user(text: str) -> ChatMessage:
    return ChatMessage(role="user", text=text)


def exchange(*ids: str, text: str = "") -> list[ChatMessage]:
    calls = tuple(ToolCall(id=i, name="t", arguments="{}") for i in ids)
    return [ChatMessage(role="assistant", text=text, tool_calls=calls),
            *(ChatMessage(role="tool", text=f"r{i}", tool_call_id=i) for i in ids)]  # fmt: skip


@pytest.mark.parametrize(
    "model,window",
    [("gpt-4o-mini", 128_000), ("gpt-4o", 128_000), ("gpt-4.1-mini", 1_047_576), ("gpt-4", 8_192),
     ("o1-mini", 128_000), ("o3", 200_000), ("gpt-5-mini", 272_000), ("openai/gpt-4o", 128_000), ("llama3", None)],
)  # fmt: skip
def test_context_windows_of_known_models_by_longest_prefix(model: str, window: int | None) -> None:
    assert context_window(model) == window


def test_max_context_tokens_defaults_to_the_window_less_the_reply_else_16000() -> None:
    assert default_context_tokens("gpt-4o-mini", 1024) == 128_000 - 1024
    assert default_context_tokens("mistral:7b", 1024) == 16000
    assert make_settings(openai_model="gpt-4").context_tokens == 8192 - 1024
    assert make_settings(openai_model="gpt-4", max_context_tokens=500).context_tokens == 500


@pytest.mark.parametrize("model", ["o1", "o3-mini", "o4-mini", "gpt-5", "gpt-5-nano"])
def test_reasoning_models_take_max_completion_tokens(model: str) -> None:
    assert reply_tokens_parameter(model) == "max_completion_tokens"
    assert reply_tokens_parameter("gpt-4o") == "max_tokens"


def test_a_result_whose_call_was_cut_is_dropped() -> None:
    history = [*exchange("a")[1:], ChatMessage(role="assistant", text="answer"), user("next")]
    assert [m.text for m in well_formed(history)] == ["answer", "next"]


def test_a_call_missing_a_result_loses_its_calls_but_keeps_its_text() -> None:
    history = [user("q"), *exchange("a", "b", text="Let me check.")[:2], user("next")]
    kept = well_formed(history)
    assert [(m.role, m.text, m.tool_calls) for m in kept] == [("user", "q", ()), ("assistant", "Let me check.", ()),
                                                              ("user", "next", ())]  # fmt: skip


def test_fitting_keeps_a_whole_exchange_or_none_of_it() -> None:
    history = [user("old " * 40), *exchange("a", "b"), ChatMessage(role="assistant", text="done")]
    budget = sum(len(m.text) // 4 + 5 for m in history[2:])  # room for the last result and the answer only
    assert [m.role for m in fit_history(history, budget)] == ["assistant"]
    assert [m.role for m in fit_history(history, 10_000)] == ["user", "assistant", "tool", "tool", "assistant"]


@given(st.lists(st.sampled_from(["u", "x1", "x2", "ans"]), max_size=12), st.integers(0, 12))
def test_any_cut_of_any_history_is_well_formed(shape: list[str], cut: int) -> None:
    history: list[ChatMessage] = []
    for n, kind in enumerate(shape):
        if kind == "u":
            history.append(user("u"))
        elif kind == "ans":
            history.append(ChatMessage(role="assistant", text="a"))
        else:
            history += exchange(*(f"c{n}_{i}" for i in range(int(kind[1]))))
    kept = well_formed(history[cut:])
    answered: set[str] = set()
    for index, message in enumerate(kept):
        if message.role == "assistant" and message.tool_calls:
            following = {m.tool_call_id for m in kept[index + 1 : index + 1 + len(message.tool_calls)]}
            assert following == {c.id for c in message.tool_calls}
            answered |= following
        if message.role == "tool":
            assert message.tool_call_id in answered


def test_the_history_kept_after_a_refusal_follows_the_sizes_the_refusal_names() -> None:
    history = [ChatMessage(role="user", text="x" * 4000) for _ in range(10)]  # about 10,000 tokens by estimate
    sent = [ChatMessage(role="system", text="be brief"), *history, ChatMessage(role="user", text="and now?")]
    refusal = "This model's maximum context length is 2048 tokens. However, you requested 8192 tokens (...)"
    kept = history_budget_after_refusal(refusal, sent, history)
    assert 0 < kept <= 10_050 * 2048 // 8192 * 0.75  # a quarter of the asked size, with a margin
    assert history_budget_after_refusal("prompt is too long", sent, history) == sum(1004 for _ in history) // 4
