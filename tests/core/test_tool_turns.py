"""Turns with tool calls, through the delivery runner and the fake OpenAI server (which refuses what OpenAI
refuses): results to the model, rounds, concurrency, failures as results, approval, history and trimming."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from core.agent_turn import DROPPED_NOTE
from core.llm import OpenAIChatModel
from core.messages import ChatMessage
from core.tools import PendingCall, PythonTools, Toolbox, requires_approval
from core.tools.runner import DENIED, NO_APPROVALS
from core.turns import IncomingMessage
from tests.conftest import make_settings, openai_client
from tests.fakes.openai_server import FakeOpenAI, Reply, ToolCalls
from tests.support.delivery import Runtime, start_runtime, stop_runtime

_counter = iter(range(1_000_000))
THREAD = "user_U1_session_C1"
RuntimeFactory = Callable[..., Awaitable[Runtime]]


def msg(text: str, **kw: Any) -> IncomingMessage:
    return IncomingMessage(platform="test", event_id=f"Ev{next(_counter)}", user_id="U1", channel_id="C1", text=text,
                           **kw)  # fmt: skip


def weather(city: str) -> str:
    """Today's weather in a city."""
    return f"{city}: 21 C, sunny"


async def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


def broken() -> str:
    """Always raises."""
    raise RuntimeError("kaboom")


def big(size: int) -> str:
    """A long result."""
    return "y" * size


async def hang() -> str:
    """Never answers."""
    await asyncio.Event().wait()
    return "unreachable"


TOOLS = {"weather": weather, "add": add, "broken": broken, "big": big, "hang": hang}


@pytest.fixture(params=["redis", "sqlite"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def make_runtime(
    redis_url: str, key_prefix: str, tmp_path: Path, fake_openai: FakeOpenAI
) -> AsyncIterator[RuntimeFactory]:
    started: list[Runtime] = []

    async def make(tools: Toolbox | None = None, *, backend: str = "redis", **overrides: Any) -> Runtime:
        settings = make_settings(
            redis_url=redis_url if backend == "redis" else None, data_dir=tmp_path / "data", key_prefix=key_prefix,
            rate_limit_per_minute=0, **overrides,
        )  # fmt: skip
        toolbox = tools if tools is not None else Toolbox([PythonTools(TOOLS)])
        model = OpenAIChatModel("fake", async_client=openai_client(fake_openai))
        runtime = await start_runtime(settings, model, tools=toolbox)
        started.append(runtime)
        return runtime

    yield make
    for runtime in started:
        await stop_runtime(runtime)


async def stored(rt: Runtime) -> list[ChatMessage]:
    return await rt.gateway.backend.store(THREAD, "test").list_messages()


def tool_messages(fake: FakeOpenAI, index: int = -1) -> list[dict[str, Any]]:
    return [m for m in fake.requests[index].messages if m["role"] == "tool"]


async def test_a_tool_call_is_run_and_its_result_answered(
    make_runtime: RuntimeFactory, fake_openai: FakeOpenAI
) -> None:
    rt = await make_runtime()
    fake_openai.script(ToolCalls(("weather", {"city": "Oslo"})), Reply("Sunny in Oslo."))
    assert await rt.ask(msg("weather in Oslo?")) == "Sunny in Oslo."
    first, second = fake_openai.requests
    offered = {tool["function"]["name"]: tool["function"] for tool in first.body["tools"]}  # type: ignore[index]
    assert offered["weather"]["description"] == "Today's weather in a city."
    assert offered["weather"]["parameters"]["required"] == ["city"]
    call = second.messages[-2]
    assert call["role"] == "assistant" and call["tool_calls"][0]["function"]["name"] == "weather"
    assert second.messages[-1] == {"role": "tool", "tool_call_id": call["tool_calls"][0]["id"],
                                   "content": "Oslo: 21 C, sunny"}  # fmt: skip


async def test_the_tool_exchange_is_stored_and_sent_again_on_the_next_turn(
    make_runtime: RuntimeFactory, fake_openai: FakeOpenAI, backend: str
) -> None:
    rt = await make_runtime(backend=backend)
    fake_openai.script(ToolCalls(("add", {"a": 2, "b": 3})), Reply("5"))
    await rt.ask(msg("2+3?"))
    history = await stored(rt)
    assert [m.role for m in history] == ["user", "assistant", "tool", "assistant"]
    assert history[1].tool_calls[0].name == "add" and history[2].tool_call_id == history[1].tool_calls[0].id
    assert await rt.ask(msg("and again?")) == "echo: and again?"  # the fake refuses a broken exchange
    roles = [m["role"] for m in fake_openai.requests[-1].messages]
    assert roles == ["system", "user", "assistant", "tool", "assistant", "user"]


async def test_several_rounds_run_in_order_until_the_model_answers(
    make_runtime: RuntimeFactory, fake_openai: FakeOpenAI
) -> None:
    rt = await make_runtime()
    fake_openai.script(ToolCalls(("add", {"a": 1, "b": 2})), ToolCalls(("add", {"a": 3, "b": 4})), Reply("3 then 7"))
    assert await rt.ask(msg("sums")) == "3 then 7"
    assert len(fake_openai.requests) == 3
    assert [m["content"] for m in tool_messages(fake_openai)] == ["3", "7"]
    assert [m.role for m in await stored(rt)] == ["user", "assistant", "tool", "assistant", "tool", "assistant"]


async def test_the_calls_of_one_round_run_concurrently(make_runtime: RuntimeFactory, fake_openai: FakeOpenAI) -> None:
    barrier = asyncio.Barrier(3)

    async def meet(who: str) -> str:
        """Waits until all three callers are here: it only returns if the calls run at the same time."""
        await barrier.wait()
        return f"{who} met"

    rt = await make_runtime(Toolbox([PythonTools({"meet": meet})]), tool_timeout_seconds=5)
    fake_openai.script(ToolCalls(("meet", {"who": "a"}), ("meet", {"who": "b"}), ("meet", {"who": "c"})), Reply("ok"))
    assert await rt.ask(msg("meet")) == "ok"
    assert [m["content"] for m in tool_messages(fake_openai)] == ["a met", "b met", "c met"]


@pytest.mark.parametrize(
    "call,expected",
    [
        (("broken", {}), "Error: RuntimeError: kaboom"),
        (("hang", {}), "Error: the tool did not finish within 0.2 seconds."),
        (("nope", {}), "Error: there is no tool named 'nope'."),
        (("add", "not json"), "Error: the arguments are not a JSON object"),
        (("add", {"a": "x", "b": 1}), "Tool error: invalid arguments: a: Input should be a valid integer"),
    ],
)
async def test_a_failing_call_is_the_models_result_and_the_turn_goes_on(
    make_runtime: RuntimeFactory, fake_openai: FakeOpenAI, call: tuple[str, Any], expected: str
) -> None:
    rt = await make_runtime(tool_timeout_seconds=0.2)
    fake_openai.script(ToolCalls(call), Reply("sorry, that failed"))
    assert await rt.ask(msg("try it")) == "sorry, that failed"
    assert tool_messages(fake_openai)[0]["content"].startswith(expected)
    outcome = rt.gateway.metrics.render().decode()
    assert "chat_gateway_tool_calls_total{" in outcome


async def test_an_oversized_result_is_cut_with_a_note(make_runtime: RuntimeFactory, fake_openai: FakeOpenAI) -> None:
    rt = await make_runtime(max_tool_result_chars=100)
    fake_openai.script(ToolCalls(("big", {"size": 5000})), Reply("long"))
    await rt.ask(msg("big"))
    content = tool_messages(fake_openai)[0]["content"]
    assert content.startswith("y" * 100 + "\n[truncated: the result had 5,000 characters; only the first 100")
    assert 'chat_gateway_tool_calls_total{outcome="truncated",tool="big"} 1.0' in rt.gateway.metrics.render().decode()


@pytest.mark.parametrize("last", [Reply("final"), ToolCalls(("add", {"a": 9, "b": 9}))])
async def test_after_max_tool_steps_the_model_must_answer_without_tools(
    make_runtime: RuntimeFactory, fake_openai: FakeOpenAI, last: Reply | ToolCalls
) -> None:
    rt = await make_runtime(max_tool_steps=2)
    fake_openai.script(ToolCalls(("add", {"a": 1, "b": 1})), ToolCalls(("add", {"a": 2, "b": 2})), last)
    reply = await rt.ask(msg("loop forever"))
    # A model that still asks for tools (servers that ignore tool_choice) gets no third round.
    assert reply == "final" if isinstance(last, Reply) else "stopped after 2 rounds of tool calls" in reply
    assert len(fake_openai.requests) == 3 and fake_openai.requests[-1].body["tool_choice"] == "none"  # type: ignore[index]
    assert [m.role for m in await stored(rt)][-1] == "assistant"
    assert await rt.ask(msg("next")) == "echo: next"  # the stored exchange is whole


async def test_a_tool_that_needs_approval_is_not_run_without_an_approver(
    make_runtime: RuntimeFactory, fake_openai: FakeOpenAI
) -> None:
    ran: list[str] = []

    def wipe(target: str) -> str:
        """Delete everything."""
        ran.append(target)
        return "wiped"

    rt = await make_runtime(Toolbox([PythonTools({"wipe": requires_approval(wipe)})]))
    fake_openai.script(ToolCalls(("wipe", {"target": "/"})), Reply("I could not."))
    assert await rt.ask(msg("wipe it")) == "I could not."
    assert ran == [] and tool_messages(fake_openai)[0]["content"] == NO_APPROVALS


@pytest.mark.parametrize("approved", [True, False])
async def test_the_approve_hook_decides_and_sees_what_would_run(
    make_runtime: RuntimeFactory, fake_openai: FakeOpenAI, approved: bool
) -> None:
    ran: list[str] = []

    def wipe(target: str) -> str:
        """Delete everything."""
        ran.append(target)
        return "wiped"

    rt = await make_runtime(Toolbox([PythonTools({"wipe": requires_approval(wipe), "weather": weather})]))
    asked: list[PendingCall] = []

    async def approve(call: PendingCall) -> bool:
        asked.append(call)
        return approved

    fake_openai.script(ToolCalls(("wipe", {"target": "/tmp"}), ("weather", {"city": "Rome"})), Reply("done"))
    answer = await rt.gateway.answer(msg("wipe"), [], approve=approve)
    assert answer.reply.text == "done"
    assert [(c.tool, c.server, dict(c.arguments)) for c in asked] == [("wipe", "python", {"target": "/tmp"})]
    results = [m.text for m in answer.messages if m.role == "tool"]
    assert results == (["wiped", "Rome: 21 C, sunny"] if approved else [DENIED, "Rome: 21 C, sunny"])
    assert ran == (["/tmp"] if approved else [])


@pytest.mark.parametrize("streamed", [True, False])
async def test_tool_calls_work_streamed_and_not(
    make_runtime: RuntimeFactory, fake_openai: FakeOpenAI, streamed: bool
) -> None:
    rt = await make_runtime()
    long_city = "Llanfairpwllgwyngyllgogerychwyrndrobwllllantysiliogogogoch"  # arguments arrive in many deltas
    fake_openai.script(ToolCalls(("weather", {"city": long_city}), text="Let me look."), Reply("Wet."))
    shown: list[str] = []

    async def on_text(text: str) -> None:
        shown.append(text)

    answer = await rt.gateway.answer(msg("weather?"), [], on_text=on_text if streamed else None)
    assert answer.reply.text == "Wet."
    assert fake_openai.requests[0].body.get("stream", False) is streamed  # type: ignore[union-attr]
    call = answer.messages[1]
    assert call.text == "Let me look." and json.loads(call.tool_calls[0].arguments) == {"city": long_city}
    assert answer.messages[2].text == f"{long_city}: 21 C, sunny"
    if streamed:
        assert "Let me look.\n\n_weather…_" in shown and shown[-1] == "Wet."


@pytest.mark.parametrize("max_messages,sent", [(2, ["system", "assistant", "user"]), (3, None)])
async def test_trimming_never_sends_half_a_tool_exchange(
    make_runtime: RuntimeFactory, fake_openai: FakeOpenAI, backend: str, max_messages: int, sent: list[str] | None
) -> None:
    rt = await make_runtime(backend=backend, max_messages=max_messages)
    fake_openai.script(ToolCalls(("add", {"a": 1, "b": 1})), Reply("2"))
    await rt.ask(msg("1+1"))
    assert len(await stored(rt)) == max_messages  # the store cut the exchange; the request must not
    assert await rt.ask(msg("next")) == "echo: next"
    roles = [m["role"] for m in fake_openai.requests[-1].messages]
    assert roles == (sent or ["system", "assistant", "tool", "assistant", "user"])


async def test_a_request_too_long_for_the_model_drops_old_history_once_and_says_so(
    make_runtime: RuntimeFactory, fake_openai: FakeOpenAI
) -> None:
    rt = await make_runtime(max_context_tokens=100_000, max_messages=100)
    for i in range(6):
        fake_openai.script(Reply(" ".join(["word"] * 20)))
        await rt.ask(msg(f"turn {i}"))
    fake_openai.context_window = 60  # words: the six stored turns no longer fit
    reply = await rt.ask(msg("still there?"))
    assert reply == f"echo: still there?\n\n{DROPPED_NOTE}"
    refused, retried = fake_openai.requests[-2:]
    assert len(retried.messages) < len(refused.messages)
    history = [m.text for m in await stored(rt)]
    assert history[-2:] == ["still there?", "echo: still there?"] and len(history) < 14  # forgotten for good
    assert await rt.ask(msg("next")) == "echo: next"  # no refusal, no note any more


async def test_the_whole_turn_is_bounded_by_turn_timeout(make_runtime: RuntimeFactory, fake_openai: FakeOpenAI) -> None:
    rt = await make_runtime(turn_timeout_seconds=0.5, tool_timeout_seconds=30)
    fake_openai.script(ToolCalls(("hang", {})))
    assert "took too long" in await rt.ask(msg("hang"))
    assert await stored(rt) == []
    assert await rt.ask(msg("next")) == "echo: next"
