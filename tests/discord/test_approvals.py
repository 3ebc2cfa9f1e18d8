"""Approval prompts on Discord: buttons (persistent dynamic items), who may click, double and replayed clicks,
deny, and a click after the process restarted, handled by the new one."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from core.approvals import Approvals
from core.gateway import Gateway
from core.llm import OpenAIChatModel
from core.settings import Settings
from core.store import open_backend
from core.tools import PythonTools, Toolbox, requires_approval
from core.tools.runner import DENIED
from tests.conftest import openai_client
from tests.discord.conftest import BotFactory, Process, RecordingDelivery, SettingsFactory, stop_process
from tests.fakes.discord_api import FakeDiscord, InteractionResponse, SentMessage
from tests.fakes.discord_ids import ALICE_ID, BOB_ID
from tests.fakes.openai_server import FakeOpenAI, Reply, ToolCalls

ToolProcessFactory = Callable[..., Process]


@pytest.fixture
def ran() -> list[str]:
    return []


@pytest.fixture
async def tool_process(fake_openai: FakeOpenAI, ran: list[str]) -> AsyncIterator[ToolProcessFactory]:
    """Processes whose gateway has a `wipe` tool that needs approval."""
    made: list[tuple[Process, Any]] = []

    def wipe(target: str) -> str:
        """Delete everything at target."""
        ran.append(target)
        return f"wiped {target}"

    def make(settings: Settings, timeout_seconds: float = 600) -> Process:
        backend = open_backend(settings)
        approvals = Approvals(backend.approvals(), timeout_seconds=timeout_seconds, poll_seconds=0.05)
        model = OpenAIChatModel("m", async_client=openai_client(fake_openai))
        toolbox = Toolbox([PythonTools({"wipe": requires_approval(wipe)})])
        gateway = Gateway(settings, backend, model, tools=toolbox, approvals=approvals)
        inbox = backend.inbox(lease_seconds=settings.lock_timeout_seconds, keep_seconds=settings.dedupe_ttl_seconds)
        delivery = RecordingDelivery(gateway, inbox, max_turns=8, progress_interval_seconds=1.0)
        process = Process(gateway, delivery, asyncio.create_task(delivery.run(), name="delivery"))
        made.append((process, backend))
        return process

    yield make
    for process, backend in made:
        await stop_process(process, grace_seconds=0)
        await backend.aclose()


def buttons(message: SentMessage | dict[str, Any]) -> dict[str, str]:
    payload = message.payload if isinstance(message, SentMessage) else message
    rows = payload.get("components") or []
    return {b["label"]: b["custom_id"] for row in rows for b in row.get("components", [])}


async def prompt_of(fake: FakeDiscord) -> SentMessage:
    while True:
        sent = await fake.next_message()
        if buttons(sent):
            return sent


async def response(fake: FakeDiscord) -> InteractionResponse:
    return await fake.next_interaction_response()


def tool_results(fake_openai: FakeOpenAI) -> list[str]:
    return [m["content"] for m in fake_openai.requests[-1].messages if m["role"] == "tool"]


async def test_approve_after_a_refused_click_and_double_and_replayed_clicks(
    start_bot: BotFactory, settings_for: SettingsFactory, fake: FakeDiscord, tool_process: ToolProcessFactory,
    fake_openai: FakeOpenAI, ran: list[str],
) -> None:  # fmt: skip
    settings = settings_for(fake, rate_limit_per_minute=0)
    fake_openai.script(ToolCalls(("wipe", {"target": "/tmp @everyone"})), Reply("Wiped /tmp."))
    async with start_bot(settings=settings, process=tool_process(settings)) as bot:
        await bot.say("wipe /tmp")
        prompt = await prompt_of(fake)
        ids = buttons(prompt)
        assert set(ids) == {"Approve", "Deny"} and "Approval needed" in prompt.content
        assert "@everyone" not in prompt.content and not prompt.pinged_user_ids

        await fake.send_component_interaction(prompt.id, ids["Approve"], user_id=BOB_ID)  # not the requester
        refused = await response(fake)
        assert refused.type == 4 and refused.ephemeral and "Only the person who asked" in (refused.content or "")
        assert buttons(fake.messages[prompt.id]) and ran == []

        seen = copy.deepcopy(fake.messages[prompt.id])  # the prompt as Alice's client shows it, buttons and all
        click = await fake.send_component_interaction(prompt.id, ids["Approve"], user_id=ALICE_ID)
        decided = await response(fake)
        assert decided.type == 7 and f"Approved by <@{ALICE_ID}>" in (decided.content or "")
        reply = await bot.next_reply()
        assert reply.text == "Wiped /tmp." and ran == ["/tmp @everyone"]
        assert not buttons(fake.messages[prompt.id])

        await fake.send_component_interaction(prompt.id, ids["Approve"], user_id=ALICE_ID, as_seen=seen)  # again
        late = await response(fake)
        assert late.ephemeral and "already decided" in (late.content or "")
        # Discord replays the first interaction: refused at its response, it decides nothing either.
        await fake.send_component_interaction(prompt.id, ids["Approve"], user_id=ALICE_ID, interaction_id=click.id,
                                              token=click.token, as_seen=seen)  # fmt: skip
        await fake.send_component_interaction(prompt.id, ids["Deny"], user_id=ALICE_ID, as_seen=seen)
        assert (await response(fake)).ephemeral  # the replay got no response; this later click its note
        assert ran == ["/tmp @everyone"]


async def test_deny_edits_the_prompt_and_runs_nothing(
    start_bot: BotFactory, settings_for: SettingsFactory, fake: FakeDiscord, tool_process: ToolProcessFactory,
    fake_openai: FakeOpenAI, ran: list[str],
) -> None:  # fmt: skip
    settings = settings_for(fake, rate_limit_per_minute=0)
    fake_openai.script(ToolCalls(("wipe", {"target": "/"})), Reply("Nothing wiped."))
    async with start_bot(settings=settings, process=tool_process(settings)) as bot:
        await bot.say("wipe /")
        prompt = await prompt_of(fake)
        await fake.send_component_interaction(prompt.id, buttons(prompt)["Deny"], user_id=ALICE_ID)
        denied = await response(fake)
        assert denied.type == 7 and f"Denied by <@{ALICE_ID}>" in (denied.content or "")
        assert (await bot.next_reply()).text == "Nothing wiped."
    assert ran == [] and tool_results(fake_openai) == [DENIED]


async def test_a_click_after_a_restart_is_handled_by_the_new_process(
    start_bot: BotFactory, settings_for: SettingsFactory, fake: FakeDiscord, tool_process: ToolProcessFactory,
    fake_openai: FakeOpenAI, ran: list[str],
) -> None:  # fmt: skip
    settings = settings_for(fake, rate_limit_per_minute=0, lock_timeout_seconds=3)
    # The resumed turn asks the model again, which asks for the same call.
    fake_openai.script(ToolCalls(("wipe", {"target": "/var"})), ToolCalls(("wipe", {"target": "/var"})),
                       Reply("Wiped /var."))  # fmt: skip
    async with start_bot(settings=settings, process=tool_process(settings)) as bot:
        await bot.say("wipe /var")
        prompt = await prompt_of(fake)
        await bot.delivery.drain(0)  # the process stops: the turn's lease goes back with the message unanswered
    async with start_bot(settings=settings, process=tool_process(settings)) as bot:
        # A new client: its buttons are found by custom_id alone (no view of the old process survives).
        await fake.send_component_interaction(prompt.id, buttons(prompt)["Approve"], user_id=ALICE_ID)
        decided = await response(fake)
        assert decided.type == 7 and "Approved" in (decided.content or "")
        reply = await bot.next_reply()
        assert reply.text == "Wiped /var." and ran == ["/var"]
    assert sum(1 for m in fake.messages.values() if buttons(m)) == 0  # one prompt, closed; none posted again


async def test_expiry_closes_the_prompt_and_a_late_click_runs_nothing(
    start_bot: BotFactory, settings_for: SettingsFactory, fake: FakeDiscord, tool_process: ToolProcessFactory,
    fake_openai: FakeOpenAI, ran: list[str],
) -> None:  # fmt: skip
    settings = settings_for(fake, rate_limit_per_minute=0)
    fake_openai.script(ToolCalls(("wipe", {"target": "/"})), Reply("Nobody approved it."))
    async with start_bot(settings=settings, process=tool_process(settings, timeout_seconds=0.5)) as bot:
        await bot.say("wipe /")
        prompt = await prompt_of(fake)
        seen = copy.deepcopy(fake.messages[prompt.id])
        assert (await bot.next_reply()).text == "Nobody approved it."
        assert "Expired" in fake.messages[prompt.id]["content"] and not buttons(fake.messages[prompt.id])
        await fake.send_component_interaction(prompt.id, buttons(prompt)["Approve"], user_id=ALICE_ID, as_seen=seen)
        late = await response(fake)
        assert late.ephemeral and "already decided (expired)" in (late.content or "")
    assert ran == []
