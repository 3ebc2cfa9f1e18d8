"""Slack's assistant view through a running adapter: suggested prompts, the thread's title, its status line."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bots.slack.assistant import thread_title
from core.gateway import Gateway
from core.llm import OpenAIChatModel
from core.store import open_backend
from core.tools import PythonTools, Toolbox
from tests.conftest import make_settings, openai_client
from tests.fakes.openai_server import FakeOpenAI, Hang, Reply, ToolCalls
from tests.fakes.slack_api import assistant_thread_started, im_message
from tests.slack.conftest import WAIT, Mode, StartSlack

DEFAULT_TITLES = ["What can you do?", "Summarise a text", "Draft a message"]


async def test_a_new_assistant_thread_gets_the_default_suggested_prompts(start_slack: StartSlack, mode: Mode) -> None:
    rig = await start_slack(mode)
    started = assistant_thread_started(channel="D1")
    thread_ts = started["assistant_thread"]["thread_ts"]

    assert await rig.deliver(started) == 200  # acknowledged only once the listener returned

    prompts = rig.slack.suggested_prompts("D1", thread_ts)
    assert prompts is not None and [p["title"] for p in prompts] == DEFAULT_TITLES
    assert all(p["message"] for p in prompts)
    assert rig.slack.calls_to("chat.postMessage") == []  # opening the view is no message to answer


async def test_suggested_prompts_come_from_the_setting(start_slack: StartSlack) -> None:
    mine = [{"title": "Deploy status", "message": "What is the status of today's deploy?"}]
    rig = await start_slack(slack_suggested_prompts=json.dumps(mine))
    started = assistant_thread_started(channel="D1")

    await rig.deliver(started)

    assert rig.slack.suggested_prompts("D1", started["assistant_thread"]["thread_ts"]) == mine


@pytest.mark.parametrize("overrides", [{"slack_suggested_prompts": "[]"}, {"slack_dm_policy": "off"}])
async def test_no_prompts_when_the_setting_is_empty_or_dms_are_off(
    start_slack: StartSlack, overrides: dict[str, str]
) -> None:
    rig = await start_slack(**overrides)
    await rig.deliver(assistant_thread_started(channel="D1"))
    assert rig.slack.calls_to("assistant.threads.setSuggestedPrompts") == []


async def test_a_refused_prompt_call_still_acknowledges_the_event(start_slack: StartSlack) -> None:
    rig = await start_slack()
    rig.slack.fail_next("assistant.threads.setSuggestedPrompts", "not_allowed_token_type")
    assert await rig.deliver(assistant_thread_started(channel="D1")) == 200
    assert [c.status for c in rig.slack.calls_to("assistant.threads.setSuggestedPrompts")] == [200]  # one try


async def test_the_first_question_titles_the_thread_once(start_slack: StartSlack, fake_openai: FakeOpenAI) -> None:
    rig = await start_slack()
    thread_ts = assistant_thread_started(channel="D1")["assistant_thread"]["thread_ts"]
    first = im_message("How do I rotate the staging database password?\nWe use Vault.", thread_ts=thread_ts)
    fake_openai.script(Hang(Reply("Like this.")))

    await rig.deliver(first)
    await asyncio.wait_for(fake_openai.received.get(), WAIT)
    working = (rig.slack.assistant_title("D1", thread_ts), rig.slack.assistant_status("D1", thread_ts))
    fake_openai.release()
    assert (await rig.outcome()).result == "answered"
    await rig.deliver(im_message("And for production?", thread_ts=thread_ts))
    assert (await rig.outcome()).result == "answered"

    assert working == ("How do I rotate the staging database password?", "is thinking…")
    assert [c.args["title"] for c in rig.slack.calls_to("assistant.threads.setTitle")] == [working[0]]
    assert rig.reply_texts("D1", thread_ts) == ["Like this.", "echo: And for production?"]


async def test_the_embedded_store_titles_a_thread_once_too(start_slack: StartSlack, tmp_path: Path) -> None:
    rig = await start_slack(redis_url=None, data_dir=tmp_path)
    root = rig.slack.add_message("D1", "earlier", user="U1")
    for text in ("first question", "second question"):
        await rig.deliver(im_message(text, thread_ts=root.ts))
        assert (await rig.outcome()).result == "answered"
    assert [c.args["title"] for c in rig.slack.calls_to("assistant.threads.setTitle")] == ["first question"]


async def test_a_refused_title_never_fails_the_turn(start_slack: StartSlack) -> None:
    rig = await start_slack()
    root = rig.slack.add_message("D1", "earlier", user="U1")
    rig.slack.fail_next("assistant.threads.setTitle", "not_allowed")
    await rig.deliver(im_message("hello", thread_ts=root.ts))
    assert (await rig.outcome()).result == "answered"
    assert rig.reply_texts("D1", root.ts) == ["echo: hello"]


async def test_commands_and_messages_outside_dm_threads_set_no_title(start_slack: StartSlack) -> None:
    rig = await start_slack()
    root = rig.slack.add_message("D1", "earlier", user="U1")
    await rig.deliver(im_message("reset", thread_ts=root.ts))
    await rig.outcome()
    await rig.deliver(im_message("top level DM"))
    await rig.outcome()
    assert rig.slack.calls_to("assistant.threads.setTitle") == []


@pytest.fixture
async def tool_gateway(
    fake_openai: FakeOpenAI, redis_url: str, key_prefix: str
) -> AsyncIterator[tuple[Gateway, asyncio.Event]]:
    """A gateway whose `lookup` tool runs until the test lets it finish."""
    done = asyncio.Event()

    async def lookup(query: str) -> str:
        """Look something up."""
        await done.wait()
        return f"found {query}"

    settings = make_settings(redis_url=redis_url, key_prefix=key_prefix)
    backend = open_backend(settings)
    model = OpenAIChatModel("m", async_client=openai_client(fake_openai))
    try:
        yield Gateway(settings, backend, model, tools=Toolbox([PythonTools({"lookup": lookup})])), done
    finally:
        await backend.aclose()


async def test_the_status_line_names_the_tool_being_run(
    start_slack: StartSlack, fake_openai: FakeOpenAI, tool_gateway: tuple[Gateway, asyncio.Event]
) -> None:
    gateway, done = tool_gateway
    rig = await start_slack(gateway=gateway, progress_interval_seconds=0.01)
    root = rig.slack.add_message("D1", "earlier", user="U1")
    fake_openai.script(ToolCalls(("lookup", {"query": "the runbook"})), Reply("It says: restart."))

    await rig.deliver(im_message("what does the runbook say?", thread_ts=root.ts))
    statuses = [(await rig.slack.next_call("assistant.threads.setStatus", WAIT)).args["status"] for _ in range(2)]
    running = rig.slack.assistant_status("D1", root.ts)
    done.set()
    assert (await rig.outcome()).result == "answered"

    assert statuses == ["is thinking…", "is running lookup…"] and running == "is running lookup…"
    assert rig.reply_texts("D1", root.ts)[-1] == "It says: restart."
    assert not rig.slack.assistant_status("D1", root.ts)  # cleared when the turn ended


def test_a_title_is_the_first_line_cut_at_a_word() -> None:
    assert thread_title("\n  Hello   there \nsecond line") == "Hello there"
    long = thread_title("word " * 40)
    assert len(long) <= 80 and long.endswith("word…")
