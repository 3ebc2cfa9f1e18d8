"""Approval prompts on Slack: Block Kit buttons, clicks through bolt's `app.action` (Socket Mode envelopes and
signed HTTP posts), who may decide, double clicks, and the click at another replica."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from typing import Any
from urllib.parse import urlencode

import pytest

from core.approvals import Approvals
from core.gateway import Gateway
from core.llm import OpenAIChatModel
from core.store import open_backend
from core.tools import PythonTools, Toolbox, requires_approval
from core.tools.runner import DENIED
from tests.conftest import make_settings, openai_client
from tests.fakes.openai_server import FakeOpenAI, Reply, ToolCalls
from tests.fakes.slack_api import Message, im_message, sign
from tests.slack.conftest import SIGNING_SECRET, WAIT, SlackRig, StartSlack

GatewayFactory = Callable[..., Gateway]


@pytest.fixture
async def ran() -> list[str]:
    return []


@pytest.fixture
async def tool_gateway(
    fake_openai: FakeOpenAI, redis_url: str, key_prefix: str, ran: list[str]
) -> AsyncIterator[GatewayFactory]:
    """Gateways (one per replica) on the shared Redis, with a `wipe` tool that needs approval."""
    backends: list[Any] = []

    def wipe(target: str) -> str:
        """Delete everything at target."""
        ran.append(target)
        return f"wiped {target}"

    def make(timeout_seconds: float = 600) -> Gateway:
        settings = make_settings(redis_url=redis_url, key_prefix=key_prefix, rate_limit_per_minute=0)
        backend = open_backend(settings)
        backends.append(backend)
        approvals = Approvals(backend.approvals(), timeout_seconds=timeout_seconds, poll_seconds=0.05)
        model = OpenAIChatModel("m", async_client=openai_client(fake_openai))
        toolbox = Toolbox([PythonTools({"wipe": requires_approval(wipe)})])
        return Gateway(settings, backend, model, tools=toolbox, approvals=approvals)

    yield make
    for backend in backends:
        await backend.aclose()


def has_buttons(message: Message) -> bool:
    return any(block.get("type") == "actions" for block in message.blocks)


async def prompt_in(rig: SlackRig, channel: str) -> Message:
    """The approval prompt, once posted (the bot's message with buttons)."""
    while True:
        call = await rig.slack.next_call("chat.postMessage", timeout=WAIT)
        if any(block.get("type") == "actions" for block in call.args.get("blocks") or []):
            break
    return next(m for m in rig.replies(channel) if has_buttons(m))


def action_ids(message: Message) -> dict[str, str]:
    buttons = next(b for b in message.blocks if b.get("type") == "actions")["elements"]
    return {button["text"]["text"]: button["action_id"] for button in buttons}


async def click(rig: SlackRig, message: Message, action_id: str, user: str) -> None:
    """`user` clicks the button `action_id` of `message`, the way the rig's mode receives it; acknowledged."""
    if rig.mode == "socket":
        envelope = await rig.slack.send_block_action(message.channel, message.ts, action_id, user=user)
        await rig.slack.wait_ack(envelope, timeout=WAIT)
        return
    payload = rig.slack.block_action_payload(message.channel, message.ts, action_id, user=user)
    body = urlencode({"payload": json.dumps(payload)})
    headers = {"Content-Type": "application/x-www-form-urlencoded", **sign(body, SIGNING_SECRET)}
    assert await rig.post(body.encode(), headers) == 200


async def ephemeral_to(rig: SlackRig, user: str) -> str:
    call = await rig.slack.next_call("chat.postEphemeral", timeout=WAIT)
    assert call.args["user"] == user
    return str(call.args["text"])


async def test_approve_by_the_requester_after_another_users_click_was_refused(
    start_slack: StartSlack, tool_gateway: GatewayFactory, fake_openai: FakeOpenAI, ran: list[str], mode: Any
) -> None:
    rig = await start_slack(mode, gateway=tool_gateway())
    fake_openai.script(ToolCalls(("wipe", {"target": "/tmp <!channel> <@U3>"})), Reply("Wiped /tmp."))
    await rig.deliver(im_message("wipe /tmp", channel="D1", user="U1"))
    prompt = await prompt_in(rig, "D1")
    buttons = action_ids(prompt)
    shown = prompt.visible_text
    assert "Approval needed" in shown and "wipe" in shown and "/tmp" in shown
    assert "<!channel>" not in shown and "<@U3>" not in shown  # no mention in the arguments can notify
    assert set(buttons) == {"Approve", "Deny"}

    await click(rig, prompt, buttons["Approve"], user="U2")  # not the requester, not an approver
    assert "Only the person who asked" in await ephemeral_to(rig, "U2")
    assert has_buttons(rig.slack.message("D1", prompt.ts)) and ran == []

    await click(rig, prompt, buttons["Approve"], user="U1")
    outcome = await rig.outcome()
    assert outcome.result == "answered" and outcome.reply is not None and outcome.reply.text == "Wiped /tmp."
    closed = rig.slack.message("D1", prompt.ts)
    assert not has_buttons(closed) and "Approved by <@U1>" in closed.visible_text
    assert ran == ["/tmp <!channel> <@U3>"]

    await click(rig, prompt, buttons["Approve"], user="U1")  # a double click: late, runs nothing
    assert "already decided" in await ephemeral_to(rig, "U1")
    assert ran == ["/tmp <!channel> <@U3>"]


async def test_deny_edits_the_prompt_and_the_model_answers_without_the_tool(
    start_slack: StartSlack, tool_gateway: GatewayFactory, fake_openai: FakeOpenAI, ran: list[str]
) -> None:
    rig = await start_slack(gateway=tool_gateway())
    fake_openai.script(ToolCalls(("wipe", {"target": "/"})), Reply("I did not wipe anything."))
    await rig.deliver(im_message("wipe /", channel="D1", user="U1"))
    prompt = await prompt_in(rig, "D1")
    buttons = action_ids(prompt)
    await click(rig, prompt, buttons["Deny"], user="U1")
    outcome = await rig.outcome()
    assert outcome.reply is not None and outcome.reply.text == "I did not wipe anything."
    closed = rig.slack.message("D1", prompt.ts)
    assert not has_buttons(closed) and "Denied by <@U1>" in closed.visible_text
    tool_results = [m["content"] for m in fake_openai.requests[-1].messages if m["role"] == "tool"]
    assert ran == [] and tool_results == [DENIED]


async def test_the_click_at_another_replica_runs_the_tool_once_in_the_turns_process(
    start_slack: StartSlack, tool_gateway: GatewayFactory, fake_openai: FakeOpenAI, ran: list[str]
) -> None:
    first = await start_slack(gateway=tool_gateway())
    fake_openai.script(ToolCalls(("wipe", {"target": "/srv"})), Reply("Wiped /srv."))
    await first.deliver(im_message("wipe /srv", channel="D1", user="U1"))
    prompt = await prompt_in(first, "D1")
    buttons = action_ids(prompt)
    second = await start_slack(gateway=tool_gateway())  # the newest socket: Slack sends the clicks there
    await click(second, prompt, buttons["Approve"], user="U1")
    await click(second, prompt, buttons["Approve"], user="U1")  # and a retried click, at the same replica
    assert "already decided" in await ephemeral_to(second, "U1")
    outcome = await first.outcome()
    assert outcome.reply is not None and outcome.reply.text == "Wiped /srv."
    assert ran == ["/srv"]
    assert "Approved by <@U1>" in first.slack.message("D1", prompt.ts).visible_text


async def test_expiry_closes_the_prompt_and_a_late_click_runs_nothing(
    start_slack: StartSlack, tool_gateway: GatewayFactory, fake_openai: FakeOpenAI, ran: list[str]
) -> None:
    rig = await start_slack(gateway=tool_gateway(timeout_seconds=0.5))
    fake_openai.script(ToolCalls(("wipe", {"target": "/"})), Reply("Nobody approved it."))
    await rig.deliver(im_message("wipe /", channel="D1", user="U1"))
    prompt = await prompt_in(rig, "D1")
    buttons = action_ids(prompt)
    outcome = await rig.outcome()
    assert outcome.reply is not None and outcome.reply.text == "Nobody approved it."
    closed = rig.slack.message("D1", prompt.ts)
    assert not has_buttons(closed) and "Expired" in closed.visible_text
    await click(rig, prompt, buttons["Approve"], user="U1")
    assert "already decided (expired)" in await ephemeral_to(rig, "U1")
    assert ran == []
