"""Profiles driving turns through the real delivery runner and the fake OpenAI server: what reaches the model,
who is answered, the commit's limits; and the admin commands (pause, resume, reset), on Redis and SQLite."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from core import admin
from core.llm import OpenAIChatModel
from core.store.keys import paused_flag
from core.tools import PythonTools, Toolbox
from core.turns import IncomingMessage
from tests.conftest import make_settings, openai_client
from tests.fakes.openai_server import FakeOpenAI
from tests.support.delivery import Runtime, start_runtime, stop_runtime

RuntimeFactory = Callable[..., Awaitable[Runtime]]
_counter = iter(range(1_000_000))

PROFILES = """
defaults:
  system_prompt: Default persona.
profiles:
  - name: support
    match: {channel: "support-*"}
    system_prompt: You are the support bot.
    model: support-model
    temperature: 0.2
    tools: [weather]
    deny: [U9]
  - name: quiet
    match: {channel: "silent"}
    respond: never
  - name: none
    match: {channel: "no-tools"}
    tools: []
  - name: short
    match: {channel: "short"}
    max_messages: 2
  - name: tiny
    match: {channel: "tiny"}
    daily_token_budget_per_user: 1
"""


def weather(city: str) -> str:
    """Today's weather in a city."""
    return f"{city}: sunny"


def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


def msg(text: str, *, user: str = "U1", channel: str = "support-1") -> IncomingMessage:
    return IncomingMessage(platform="test", event_id=f"Ev{next(_counter)}", user_id=user, channel_id=channel, text=text)


@pytest.fixture(params=["redis", "sqlite"])
async def make_runtime(
    request: pytest.FixtureRequest, redis_url: str, key_prefix: str, tmp_path: Path, fake_openai: FakeOpenAI
) -> AsyncIterator[RuntimeFactory]:
    started: list[Runtime] = []
    path = tmp_path / "profiles.yaml"
    path.write_text(PROFILES)

    async def make(**overrides: Any) -> Runtime:
        settings = make_settings(
            redis_url=redis_url if request.param == "redis" else None, data_dir=tmp_path / "data",
            key_prefix=key_prefix, profiles_file=path, rate_limit_per_minute=0, admins="ADM", **overrides,
        )  # fmt: skip
        model = OpenAIChatModel("env-model", async_client=openai_client(fake_openai))
        runtime = await start_runtime(settings, model, tools=Toolbox([PythonTools({"weather": weather, "add": add})]))
        started.append(runtime)
        return runtime

    yield make
    for runtime in started:
        await stop_runtime(runtime)


def offered(fake: FakeOpenAI, index: int = -1) -> set[str]:
    return {tool["function"]["name"] for tool in fake.requests[index].body.get("tools") or []}  # type: ignore[union-attr]


async def history(rt: Runtime, user: str, channel: str) -> list[str]:
    store = rt.gateway.backend.store(f"user_{user}_session_{channel}", "test")
    return [m.text for m in await store.list_messages()]


async def test_the_profiles_model_temperature_and_system_prompt_reach_the_model(
    make_runtime: RuntimeFactory, fake_openai: FakeOpenAI
) -> None:
    rt = await make_runtime()
    await rt.ask(msg("hi"))
    body = fake_openai.requests[-1].body
    assert body["model"] == "support-model" and body["temperature"] == 0.2  # type: ignore[index]
    assert fake_openai.requests[-1].messages[0] == {"role": "system", "content": "You are the support bot."}
    await rt.ask(msg("hi", channel="elsewhere"))  # no profile: the defaults' prompt, the client's own model
    body = fake_openai.requests[-1].body
    assert body["model"] == "env-model" and "temperature" not in body  # type: ignore[operator, index]
    assert fake_openai.requests[-1].messages[0] == {"role": "system", "content": "Default persona."}


async def test_a_tool_not_in_the_allow_list_is_not_offered_to_the_model(
    make_runtime: RuntimeFactory, fake_openai: FakeOpenAI
) -> None:
    rt = await make_runtime()
    await rt.ask(msg("weather?"))
    assert offered(fake_openai) == {"weather"}
    await rt.ask(msg("anything", channel="no-tools"))
    assert "tools" not in fake_openai.requests[-1].body  # `tools: []`: none at all
    await rt.ask(msg("anything", channel="elsewhere"))
    assert offered(fake_openai) == {"weather", "add"}


async def test_a_deny_listed_user_and_a_respond_never_channel_get_nothing_and_store_nothing(
    make_runtime: RuntimeFactory, fake_openai: FakeOpenAI
) -> None:
    rt = await make_runtime()
    assert await rt.delivery.receive(msg("let me in", user="U9")) == "ignored"
    assert await rt.delivery.receive(msg("hello", channel="silent")) == "ignored"
    await rt.ask(msg("after"))  # the runner is alive and answered only this one
    assert [r.messages[-1]["content"] for r in fake_openai.requests] == ["after"]
    assert await history(rt, "U9", "support-1") == [] and await history(rt, "U1", "silent") == []


async def test_max_messages_of_a_profile_trims_its_conversations_at_the_commit(make_runtime: RuntimeFactory) -> None:
    rt = await make_runtime(max_messages=50)
    for text in ("one", "two", "three"):
        await rt.ask(msg(text, channel="short"))
    assert await history(rt, "U1", "short") == ["three", "echo: three"]


async def test_admin_commands_from_a_non_admin_go_to_the_model_as_ordinary_text(
    make_runtime: RuntimeFactory, fake_openai: FakeOpenAI
) -> None:
    rt = await make_runtime()
    for text in ("admin pause", "admin reset <@U2>", "admin resume"):
        assert await rt.ask(msg(text, channel="elsewhere")) == f"echo: {text}"
    assert len(fake_openai.requests) == 3
    assert not await rt.gateway.backend.has_flag(paused_flag("test", "elsewhere"))


async def test_pause_keeps_the_bot_quiet_in_the_channel_until_resume_and_survives_a_restart(
    make_runtime: RuntimeFactory, fake_openai: FakeOpenAI
) -> None:
    rt = await make_runtime()
    paused = await rt.ask(msg("admin pause", user="ADM", channel="lobby"))
    assert paused.startswith("Paused") and fake_openai.requests == []
    await stop_runtime(rt)
    rt = await make_runtime()  # a new process: the pause is in the store
    ignored = msg("hello?", user="ADM", channel="lobby")
    await rt.delivery.receive(ignored)
    resumed = await rt.ask(msg("admin resume", user="ADM", channel="lobby"))  # after it: one conversation
    assert resumed.startswith("Resumed") and ignored.dedupe_key not in rt.replies.texts
    assert await rt.ask(msg("back?", user="ADM", channel="lobby")) == "echo: back?"
    assert [r.messages[-1]["content"] for r in fake_openai.requests] == ["back?"]
    assert "hello?" not in await history(rt, "ADM", "lobby")
    assert await rt.ask(msg("admin resume", user="ADM", channel="lobby")) == "I wasn't paused here."


async def test_a_pause_made_by_another_process_holds_here_once_what_this_one_remembers_is_old(
    make_runtime: RuntimeFactory, fake_openai: FakeOpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(admin, "PAUSE_CHECK_SECONDS", 0.2)
    here = await make_runtime()
    if here.gateway.settings.redis_url is None:
        pytest.skip("the embedded store serves one process")
    there = await make_runtime()
    assert await here.ask(msg("before", user="U2", channel="lobby")) == "echo: before"  # remembered: not paused
    assert (await there.ask(msg("admin pause", user="ADM", channel="lobby"))).startswith("Paused")
    await asyncio.sleep(0.25)  # the time under test: what `here` remembers grows older than PAUSE_CHECK_SECONDS
    ignored = msg("hello?", user="U2", channel="lobby")
    await here.delivery.receive(ignored)
    assert (await there.ask(msg("admin resume", user="ADM", channel="lobby"))).startswith("Resumed")
    await asyncio.sleep(0.25)  # and again, for the resume
    back = msg("back?", user="U2", channel="lobby")
    await here.delivery.receive(back)  # answered after `ignored`, by whichever process holds the conversation then
    waits = [asyncio.ensure_future(rt.replies.wait_for(back.dedupe_key)) for rt in (here, there)]
    done, pending = await asyncio.wait(waits, timeout=10, return_when=asyncio.FIRST_COMPLETED)
    for waiting in pending:
        waiting.cancel()
    assert [task.result() for task in done] == ["echo: back?"]
    assert ignored.dedupe_key not in here.replies.texts and ignored.dedupe_key not in there.replies.texts
    assert [r.messages[-1]["content"] for r in fake_openai.requests] == ["before", "back?"]


async def test_admin_reset_forgets_that_users_conversation_in_this_channel_only(
    make_runtime: RuntimeFactory,
) -> None:
    rt = await make_runtime()
    await rt.ask(msg("remember me", user="U2", channel="lobby"))
    await rt.ask(msg("me too", user="U2", channel="other"))
    done = await rt.ask(msg("admin reset <@U2>", user="ADM", channel="lobby"))
    assert done == "Done: I've forgotten the 2 messages of `U2`'s conversation in this channel."
    assert await history(rt, "U2", "lobby") == []
    assert await history(rt, "U2", "other") == ["me too", "echo: me too"]
    again = await rt.ask(msg("admin reset U2", user="ADM", channel="lobby"))
    assert again == "There was nothing to forget of `U2` in this channel."


async def test_a_profiles_daily_token_budget_refuses_a_turn_there_without_a_model_call(
    make_runtime: RuntimeFactory, fake_openai: FakeOpenAI
) -> None:
    rt = await make_runtime()
    assert await rt.ask(msg("first", channel="tiny")) == "echo: first"  # a budget is checked before the turn
    refused = await rt.ask(msg("second", channel="tiny"))
    assert refused.startswith("You've used your daily token budget") and len(fake_openai.requests) == 1
    assert await rt.ask(msg("hello", channel="elsewhere")) == "echo: hello"  # no budget there
