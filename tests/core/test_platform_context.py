"""Seeding rules (core.platform_context) and the truncation notice through the gateway and delivery runner."""

from __future__ import annotations

from typing import Any

import pytest

from core.agent_turn import TRUNCATED_NOTE
from core.delivery import FAILURE_NOTICE
from core.errors import ModelTimeoutError
from core.platform_context import AuthorKind, PlatformMessage, seed_messages
from core.turns import IncomingMessage
from tests.core.conftest import RuntimeFactory
from tests.fakes.openai_server import FakeOpenAI

_counter = iter(range(1_000_000))


def said(text: str, kind: AuthorKind = "person", name: str = "Bob", at: float = 0.0) -> PlatformMessage:
    return PlatformMessage(f"m{next(_counter)}", "U2", name, text, at, kind)


def texts(found: list[PlatformMessage], **kw: Any) -> list[tuple[str, str]]:
    seed = seed_messages(found, limit=kw.pop("limit", 50), budget_tokens=kw.pop("budget_tokens", None), **kw)
    return [(m.role, m.text) for m in seed.messages]


def test_the_bots_own_messages_are_its_turns_but_not_its_failure_notices_nor_a_leading_one() -> None:
    found = [
        said("Done: I've forgotten the 4 messages of this thread.", "self"),  # the reply to a reset
        said("what is 2+2?"),
        said(ModelTimeoutError.user_message, "self"),
        said(FAILURE_NOTICE, "self"),
        said("4", "self"),
    ]
    assert texts(found, notices=[FAILURE_NOTICE]) == [("user", "Bob: what is 2+2?"), ("assistant", "4")]


def test_commands_and_empty_messages_are_not_conversation() -> None:
    assert texts([said("reset"), said("  "), said("!help"), said("hello")]) == [("user", "Bob: hello")]


def test_the_newest_messages_within_the_limit_and_the_budget_are_kept_and_the_cut_is_said() -> None:
    found = [said(f"message {i}") for i in range(5)]
    assert seed_messages(found[:3], limit=3, budget_tokens=None).cut is False
    seed = seed_messages(found, limit=3, budget_tokens=None)
    assert [m.text for m in seed.messages] == ["Bob: message 2", "Bob: message 3", "Bob: message 4"] and seed.cut
    tight = seed_messages(found[:3], limit=3, budget_tokens=20)
    assert [m.text for m in tight.messages] == ["Bob: message 1", "Bob: message 2"] and tight.cut
    assert all(m.metadata["seeded"] for m in seed.messages)


def msg(text: str) -> IncomingMessage:
    return IncomingMessage(platform="test", event_id=f"Ev{next(_counter)}", user_id="U1", channel_id="C1", text=text)


async def test_the_first_trim_to_max_messages_is_told_once(runtime_factory: RuntimeFactory) -> None:
    rt = await runtime_factory(max_messages=4)
    replies = [await rt.ask(msg(text)) for text in ("one", "two", "three", "four")]
    assert replies == ["echo: one", "echo: two", f"echo: three\n\n{TRUNCATED_NOTE}", "echo: four"]
    await rt.ask(msg("reset"))  # a new conversation: its first cut is told again
    replies = [await rt.ask(msg(text)) for text in ("five", "six", "seven")]
    assert replies == ["echo: five", "echo: six", f"echo: seven\n\n{TRUNCATED_NOTE}"]


@pytest.mark.parametrize("notice", [True, False])
async def test_the_first_cut_for_max_context_tokens_is_told_once_unless_turned_off(
    runtime_factory: RuntimeFactory, fake_openai: FakeOpenAI, notice: bool
) -> None:
    rt = await runtime_factory(max_context_tokens=80, system_prompt="S", truncation_notice=notice)
    replies = [await rt.ask(msg(f"message number {i} " + "x" * 40)) for i in range(4)]
    assert len(fake_openai.requests[-1].messages) < 2 + 2 * 3  # some history went
    noted = [r.endswith(TRUNCATED_NOTE) for r in replies]
    assert noted == ([False, False, True, False] if notice else [False] * 4)
