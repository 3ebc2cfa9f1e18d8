"""Token usage end to end: read from the model's replies (streamed or not) or estimated, counted per user,
channel and workspace by UTC day, shown by `usage` and `admin usage`, and capped by daily budgets."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from core.llm import OpenAIChatModel
from core.messages import ChatMessage, ToolCall
from core.model import ModelReply, ModelUsage
from core.store.usage import Subject, SubjectUsage
from core.turns import IncomingMessage
from core.usage.budgets import day_of
from core.usage.meter import TokenCount, UsageMeter
from tests.conftest import make_settings, openai_client
from tests.core.conftest import RuntimeFactory
from tests.fakes.openai_server import Delay, FakeOpenAI, RecordedRequest, Status
from tests.support.delivery import Runtime, start_runtime, stop_runtime

_counter = iter(range(1_000_000))
U1, C1, T1 = Subject("user", "test", "U1"), Subject("channel", "test", "C1"), Subject("workspace", "test", "T1")
REFUSED = "You've used your daily token budget; it resets at 00:00 UTC (in "


def model(fake: FakeOpenAI) -> OpenAIChatModel:
    return OpenAIChatModel("fake", async_client=openai_client(fake))


def msg(text: str, *, user: str = "U1", channel: str = "C1", team: str = "T1", **kw: Any) -> IncomingMessage:
    return IncomingMessage(
        platform="test", event_id=f"Ev{next(_counter)}", user_id=user, channel_id=channel, text=text,
        metadata={"team_id": team}, **kw,
    )  # fmt: skip


def words(request: RecordedRequest) -> int:
    """What the fake reports as the prompt's tokens: its words."""
    return sum(len(str(m.get("content") or "").split()) for m in request.messages)


@pytest.fixture
def runtime_defaults() -> dict[str, Any]:
    return {"rate_limit_per_minute": 0}  # many turns of one user: budgets, not the rate limit, are tested here


async def usage_of(rt: Runtime, *subjects: Subject) -> list[SubjectUsage]:
    await rt.gateway.usage.flush()
    return await rt.gateway.backend.usage().usage([day_of()], list(subjects))


def counted(rt: Runtime, kind: str, source: str) -> float:
    value = rt.gateway.metrics.registry.get_sample_value(
        "chat_gateway_tokens_total", {"platform": "test", "model": "fake", "kind": kind, "source": source}
    )
    return value or 0.0


# -- usage from the model ------------------------------------------------------


async def test_a_non_streamed_reply_carries_the_servers_usage(fake_openai: FakeOpenAI) -> None:
    reply = await model(fake_openai).reply([ChatMessage(role="user", text="one two three")])
    assert reply.usage is not None
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (3, 4)  # "echo: one two three"
    assert "stream_options" not in (fake_openai.requests[-1].body or {})


async def test_a_streamed_reply_asks_for_usage_and_gets_it_from_the_last_chunk(fake_openai: FakeOpenAI) -> None:
    pieces: list[str] = []

    async def on_delta(text: str) -> None:
        pieces.append(text)

    reply = await model(fake_openai).reply([ChatMessage(role="user", text="one two")], on_delta=on_delta)
    assert (fake_openai.requests[-1].body or {})["stream_options"] == {"include_usage": True}
    assert reply.text == "".join(pieces) == "echo: one two"
    assert reply.usage is not None and (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (2, 3)


async def test_a_server_that_reports_no_usage_leaves_it_unset(fake_openai: FakeOpenAI) -> None:
    fake_openai.report_usage = False

    async def on_delta(text: str) -> None:
        del text

    chat = model(fake_openai)
    assert (await chat.reply([ChatMessage(role="user", text="hi")])).usage is None
    assert (await chat.reply([ChatMessage(role="user", text="hi")], on_delta=on_delta)).usage is None


# -- counting ------------------------------------------------------------------


async def test_a_turn_counts_the_reported_tokens_for_its_user_channel_and_workspace(
    runtime_factory: RuntimeFactory, fake_openai: FakeOpenAI
) -> None:
    rt = await runtime_factory()
    await rt.ask(msg("hello there"))
    await rt.ask(msg("and again"))
    prompts = [words(r) for r in fake_openai.requests]
    expected = TokenCount(sum(prompts), 3 + 3)  # "echo: hello there", "echo: and again"
    user, channel, workspace = await usage_of(rt, U1, C1, T1)
    assert user.tokens == channel.tokens == workspace.tokens == expected
    assert user.models == {"fake": expected} and user.turns == 2
    assert user.charged == workspace.charged == expected.total and channel.charged == 0
    assert counted(rt, "prompt", "reported") == expected.prompt
    assert counted(rt, "completion", "reported") == expected.completion
    assert counted(rt, "prompt", "estimated") == 0


async def test_without_usage_from_the_server_the_tokens_are_estimated_and_marked(
    runtime_factory: RuntimeFactory, fake_openai: FakeOpenAI
) -> None:
    fake_openai.report_usage = False
    rt = await runtime_factory()
    await rt.ask(msg("hello there"))
    [user] = await usage_of(rt, U1)
    assert user.tokens.prompt > 0 and user.tokens.completion > 0
    assert user.tokens.estimated == user.tokens.total
    assert counted(rt, "prompt", "estimated") == user.tokens.prompt and counted(rt, "prompt", "reported") == 0
    usage = await rt.ask(msg("usage"))
    assert f"~{user.tokens.total:,} of them estimated" in usage


async def test_counts_from_two_runtimes_on_one_redis_add_up(
    redis_url: str, key_prefix: str, tmp_path: Path, fake_openai: FakeOpenAI
) -> None:
    settings = make_settings(redis_url=redis_url, key_prefix=key_prefix, data_dir=tmp_path, rate_limit_per_minute=0)
    first, second = [await start_runtime(settings, model(fake_openai)) for _ in range(2)]
    try:
        await asyncio.gather(first.ask(msg("from one", channel="C1")), second.ask(msg("from two", channel="C2")))
        await first.ask(msg("one more", channel="C1"))
        await second.gateway.usage.flush()
        prompts = sum(words(r) for r in fake_openai.requests)
        [user, workspace] = await usage_of(first, U1, T1)
        assert user.tokens == workspace.tokens == TokenCount(prompts, 3 * 3) and user.turns == 3
        assert counted(first, "completion", "reported") == 6 and counted(second, "completion", "reported") == 3
    finally:
        for runtime in (first, second):
            await stop_runtime(runtime)


# -- the usage commands --------------------------------------------------------


async def test_usage_shows_the_callers_tokens_today_this_month_and_the_budget_left(
    runtime_factory: RuntimeFactory, fake_openai: FakeOpenAI
) -> None:
    rt = await runtime_factory(daily_token_budget_per_user=10_000, daily_token_budget_per_workspace=50_000)
    await rt.ask(msg("hello there"))
    await rt.ask(msg("someone else", user="U2"))
    total = words(fake_openai.requests[0]) + 3
    text = await rt.ask(msg("/usage"))
    lines = text.splitlines()
    assert lines[0] == f"Today (UTC) you used {total} tokens ({total - 3} prompt, 3 completion)."
    assert lines[1] == f"This month: {total} tokens ({total - 3} prompt, 3 completion)."
    both = total + words(fake_openai.requests[1]) + 3
    assert lines[2].startswith(
        f"Your daily budget: {10_000 - total:,} of 10,000 tokens left; "
        f"this workspace's: {50_000 - both:,} of 50,000 tokens left. Budgets reset at 00:00 UTC (in "
    )
    assert len(fake_openai.requests) == 2  # a command, not a model turn


async def test_usage_without_budgets_says_so(runtime_factory: RuntimeFactory) -> None:
    rt = await runtime_factory()
    text = await rt.ask(msg("usage"))
    assert text.splitlines() == [
        "Today (UTC) you used 0 tokens (0 prompt, 0 completion).",
        "This month: 0 tokens (0 prompt, 0 completion).",
        "There is no daily token budget here.",
    ]


async def test_admin_usage_lists_the_top_users_for_admins_only(
    runtime_factory: RuntimeFactory, fake_openai: FakeOpenAI
) -> None:
    rt = await runtime_factory(admins="U9")
    await rt.ask(msg(" ".join(["word"] * 80), user="U2"))
    await rt.ask(msg("hi", user="U1"))
    await rt.gateway.usage.flush()
    # Anyone else gets the normal answer path: the model answers it, no hint of the command.
    assert await rt.ask(msg("admin usage", user="U1")) == "echo: admin usage"
    assert len(fake_openai.requests) == 3
    text = await rt.ask(msg("admin usage", user="U9"))
    lines = text.splitlines()
    assert lines[0] == "Top users today (UTC):"
    assert [line.split(":")[0] for line in lines[1:]] == ["1. U2", "2. U1"]
    assert "2 turns" in lines[2]  # U1's "hi" and its "admin usage" turn
    assert len(fake_openai.requests) == 3


# -- budgets -------------------------------------------------------------------


async def test_a_budget_hit_mid_conversation_refuses_without_a_model_call_and_stores_nothing(
    runtime_factory: RuntimeFactory, fake_openai: FakeOpenAI
) -> None:
    # The fake counts words: the first turn costs 14 (the system prompt's 11 among them), the second 19.
    rt = await runtime_factory(daily_token_budget_per_user=20)
    assert await rt.ask(msg("hello")) == "echo: hello"
    assert await rt.ask(msg("still there?")) == "echo: still there?"
    refused = await rt.ask(msg("and now?"))
    assert refused.startswith(REFUSED) and refused.endswith((" hours).", " hour).", " minutes).", " minute)."))
    assert len(fake_openai.requests) == 2
    stored = await rt.gateway.backend.store("user_U1_session_C1", "test").list_messages()
    assert [m.text for m in stored] == ["hello", "echo: hello", "still there?", "echo: still there?"]
    assert (
        rt.gateway.metrics.registry.get_sample_value(
            "chat_gateway_budget_refusals_total", {"platform": "test", "scope": "user"}
        )
        == 1
    )
    # Another user still has a budget of their own.
    assert await rt.ask(msg("me too", user="U2")) == "echo: me too"


async def test_a_workspace_budget_covers_all_its_users(
    runtime_factory: RuntimeFactory, fake_openai: FakeOpenAI
) -> None:
    rt = await runtime_factory(daily_token_budget_per_workspace=10)
    assert await rt.ask(msg("hello", user="U1")) == "echo: hello"
    refused = await rt.ask(msg("hello", user="U2"))
    assert refused.startswith("This workspace has used its daily token budget; it resets at 00:00 UTC (in ")
    assert await rt.ask(msg("hello", user="U2", team="T2")) == "echo: hello"  # another workspace
    assert len(fake_openai.requests) == 2


async def test_concurrent_turns_at_the_edge_overspend_by_at_most_one_estimate(
    runtime_factory: RuntimeFactory, fake_openai: FakeOpenAI
) -> None:
    turns = 24
    rt = await runtime_factory(max_reply_tokens=20)
    estimate = rt.gateway.turn_estimate([], ChatMessage(role="user", text="question 10"))
    limit = estimate * 5 // 2
    await stop_runtime(rt)
    rt = await runtime_factory(max_reply_tokens=20, daily_token_budget_per_user=limit)
    fake_openai.script(*[Delay(0.3)] * turns)  # every reservation is made before any turn settles
    # One user in many channels: conversations of their own, so the turns run at once.
    replies = await asyncio.gather(*(rt.ask(msg(f"question {n + 10}", channel=f"C{n}")) for n in range(turns)))
    refused = [r for r in replies if r.startswith(REFUSED)]
    answered = [r for r in replies if r.startswith("echo: question")]
    assert len(refused) + len(answered) == turns and refused and answered
    [user] = await usage_of(rt, U1)
    real = user.tokens.total
    per_turn = real / len(answered)
    assert per_turn <= estimate  # the bound below is in estimates: the fake's counts stay under them
    assert real <= limit + estimate, (real, limit, estimate)
    assert turns * per_turn > limit + estimate  # without the reservations every turn would have run
    assert user.charged == real  # every reservation settled to the real figure


async def test_a_failed_turn_gives_its_reservation_back(
    runtime_factory: RuntimeFactory, fake_openai: FakeOpenAI
) -> None:
    rt = await runtime_factory(daily_token_budget_per_user=100_000)
    fake_openai.script(Status(500))
    failed = await rt.ask(msg("hello"))
    assert "try again" in failed.lower()
    [user] = await usage_of(rt, U1)
    assert user.charged == 0 and user.tokens == TokenCount() and user.turns == 0
    await rt.ask(msg("hello"))
    [user] = await usage_of(rt, U1)
    assert user.charged == user.tokens.total > 0


async def test_admins_are_exempt_from_budgets(runtime_factory: RuntimeFactory, fake_openai: FakeOpenAI) -> None:
    rt = await runtime_factory(daily_token_budget_per_user=1, daily_token_budget_per_workspace=1, admins="U9")
    for n in range(3):
        assert await rt.ask(msg(f"admin {n}", user="U9")) == f"echo: admin {n}"
    assert (await rt.ask(msg("me", user="U1"))).startswith("This workspace has used")
    assert len(fake_openai.requests) == 3
    usage = await rt.ask(msg("usage", user="U9"))
    assert usage.splitlines()[-1] == "As an admin you have no token budget."
    [admin] = await usage_of(rt, Subject("user", "test", "U9"))
    assert admin.turns == 3  # exempt, but counted


async def test_a_bot_over_budget_gets_no_notice(runtime_factory: RuntimeFactory, fake_openai: FakeOpenAI) -> None:
    rt = await runtime_factory(daily_token_budget_per_user=1)
    await rt.ask(msg("hello", user="B1", from_bot=True))
    incoming = msg("again", user="B1", from_bot=True)
    await rt.delivery.receive(incoming)
    await rt.replies.wait_count(1)
    outcome_texts = rt.replies.texts.get(incoming.dedupe_key)
    assert outcome_texts is None and len(fake_openai.requests) == 1


def test_a_turns_calls_add_up_and_a_call_without_usage_is_estimated() -> None:
    meter = UsageMeter("m")
    sent = [ChatMessage(role="user", text="x" * 40)]
    meter.add(
        ModelReply("", tool_calls=(ToolCall(id="c1", name="lookup", arguments="{}"),), usage=ModelUsage(30, 7)), sent
    )
    meter.add(ModelReply("y" * 8), sent)  # the server reported nothing for this round
    assert meter.calls == 2 and meter.reported == TokenCount(30, 7)
    assert meter.guessed == TokenCount(14, 6)  # 40 chars / 4 + 4 framing; 8 chars / 4 + 4
    assert meter.count == TokenCount(44, 13, 20)
