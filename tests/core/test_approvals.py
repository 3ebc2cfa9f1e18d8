"""Approvals through the delivery runner: the prompt, the click (once, by whom), on another replica, after a
restart, expiry; on real Redis (and the embedded store), with the fake OpenAI server scripting the calls."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from core.approvals import ALREADY_RAN, EXPIRED, Approvals, approval_id_for
from core.llm import OpenAIChatModel
from core.store import open_backend
from core.store.inbox import Lease
from core.tools import PendingCall, PythonTools, Toolbox, open_toolbox, requires_approval
from core.tools.runner import DENIED
from core.turns import IncomingMessage
from tests.conftest import make_settings, openai_client
from tests.fakes.openai_server import FakeOpenAI, Reply, ToolCalls
from tests.support.delivery import Runtime, start_runtime, stop_runtime
from tests.support.mcp import stdio_entry, write_config

_counter = iter(range(1_000_000))
RuntimeFactory = Callable[..., Awaitable[Runtime]]


def msg(text: str, user: str = "U1") -> IncomingMessage:
    return IncomingMessage(platform="test", event_id=f"Ev{next(_counter)}", user_id=user, channel_id="C1", text=text)


class Wiper:
    """A tool that needs approval and counts its runs."""

    def __init__(self) -> None:
        self.ran: list[str] = []

    def toolbox(self) -> Toolbox:
        def wipe(target: str) -> str:
            """Delete everything at target."""
            self.ran.append(target)
            return f"wiped {target}"

        return Toolbox([PythonTools({"wipe": requires_approval(wipe)})])


@pytest.fixture
async def make_runtime(
    redis_url: str, key_prefix: str, tmp_path: Path, fake_openai: FakeOpenAI
) -> AsyncIterator[RuntimeFactory]:
    started: list[Runtime] = []

    async def make(wiper: Wiper, *, backend: str = "redis", **overrides: Any) -> Runtime:
        settings = make_settings(
            redis_url=redis_url if backend == "redis" else None, data_dir=tmp_path / "data", key_prefix=key_prefix,
            rate_limit_per_minute=0, **overrides,
        )  # fmt: skip
        model = OpenAIChatModel("fake", async_client=openai_client(fake_openai))
        runtime = await start_runtime(
            settings, model, tools=wiper.toolbox(), prompting=True, approval_poll_seconds=0.05
        )
        started.append(runtime)
        return runtime

    yield make
    for runtime in started:
        if not runtime.task.done():
            await stop_runtime(runtime)


def tool_results(fake: FakeOpenAI) -> list[str]:
    return [m["content"] for r in fake.requests for m in r.messages if m["role"] == "tool"]


def approvals_of(rt: Runtime) -> Approvals:
    return rt.gateway.approvals


def counted(rt: Runtime, outcome: str) -> float:
    value = rt.gateway.metrics.registry.get_sample_value("chat_gateway_approvals_total", {"outcome": outcome})
    return value or 0.0


@pytest.mark.parametrize("backend", ["redis", "sqlite"])
async def test_approve_runs_the_tool_and_the_model_goes_on(
    make_runtime: RuntimeFactory, fake_openai: FakeOpenAI, backend: str
) -> None:
    wiper = Wiper()
    rt = await make_runtime(wiper, backend=backend)
    fake_openai.script(ToolCalls(("wipe", {"target": "/tmp <@U9> @everyone"})), Reply("Wiped."))
    incoming = msg("wipe /tmp")
    await rt.delivery.receive(incoming)
    prompt = await rt.replies.wait_prompts(1)
    assert prompt.tool == "wipe" and prompt.requester == "U1" and prompt.state == "pending"
    assert "<@U9>" not in prompt.arguments and "@everyone" not in prompt.arguments  # mentions neutralised
    assert wiper.ran == []  # nothing runs before the click
    decided = await approvals_of(rt).decide("test", prompt.approval_id, "approve", "U1")
    assert decided.outcome == "decided" and decided.record is not None and decided.record.decided_by == "U1"
    assert await rt.replies.wait_for(incoming.dedupe_key) == "Wiped."
    assert wiper.ran == ["/tmp <@U9> @everyone"]
    assert tool_results(fake_openai) == ["wiped /tmp <@U9> @everyone"]
    assert counted(rt, "approved") == 1


async def test_deny_runs_nothing_and_the_model_is_told(make_runtime: RuntimeFactory, fake_openai: FakeOpenAI) -> None:
    wiper = Wiper()
    rt = await make_runtime(wiper)
    fake_openai.script(ToolCalls(("wipe", {"target": "/"})), Reply("Not wiped."))
    incoming = msg("wipe /")
    await rt.delivery.receive(incoming)
    prompt = await rt.replies.wait_prompts(1)
    assert (await approvals_of(rt).decide("test", prompt.approval_id, "deny", "U1")).outcome == "decided"
    assert await rt.replies.wait_for(incoming.dedupe_key) == "Not wiped."
    assert wiper.ran == [] and tool_results(fake_openai) == [DENIED]
    late = await approvals_of(rt).decide("test", prompt.approval_id, "approve", "U1")  # a late click runs nothing
    assert late.outcome == "late" and late.record is not None and late.record.state == "denied"
    assert wiper.ran == [] and counted(rt, "denied") == 1 and counted(rt, "late") == 1


async def test_another_users_click_is_refused_and_changes_nothing(
    make_runtime: RuntimeFactory, fake_openai: FakeOpenAI
) -> None:
    wiper = Wiper()
    rt = await make_runtime(wiper, approvers="U7, U8")
    fake_openai.script(ToolCalls(("wipe", {"target": "/"})), Reply("Done."))
    incoming = msg("wipe /")
    await rt.delivery.receive(incoming)
    prompt = await rt.replies.wait_prompts(1)
    refused = await approvals_of(rt).decide("test", prompt.approval_id, "approve", "U2")
    assert refused.outcome == "refused" and refused.record is not None and refused.record.state == "pending"
    refused = await approvals_of(rt).decide("test", prompt.approval_id, "deny", "U2")
    assert refused.outcome == "refused"
    assert incoming.dedupe_key not in rt.replies.texts and wiper.ran == []
    # Someone in APPROVERS may decide for the requester.
    assert (await approvals_of(rt).decide("test", prompt.approval_id, "approve", "U8")).outcome == "decided"
    assert await rt.replies.wait_for(incoming.dedupe_key) == "Done."
    assert wiper.ran == ["/"] and counted(rt, "refused") == 2


async def test_a_double_click_and_clicks_at_two_replicas_make_one_decision(
    make_runtime: RuntimeFactory, fake_openai: FakeOpenAI
) -> None:
    wiper = Wiper()
    a, b = await make_runtime(wiper), await make_runtime(wiper)
    fake_openai.script(ToolCalls(("wipe", {"target": "/"})), Reply("Done."))
    incoming = msg("wipe /")
    await a.delivery.receive(incoming)
    prompt = await a.replies.wait_prompts(1)
    clicks = await asyncio.gather(
        approvals_of(a).decide("test", prompt.approval_id, "approve", "U1"),
        approvals_of(a).decide("test", prompt.approval_id, "approve", "U1"),
        approvals_of(b).decide("test", prompt.approval_id, "deny", "U1"),
        approvals_of(b).decide("test", prompt.approval_id, "approve", "U1"),
    )
    assert sorted(c.outcome for c in clicks) == ["decided", "late", "late", "late"]
    winner = next(c for c in clicks if c.outcome == "decided")
    assert winner.record is not None
    assert await a.replies.wait_for(incoming.dedupe_key) == "Done."
    assert wiper.ran == (["/"] if winner.record.state == "approved" else [])
    assert len(a.replies.prompts) == 1 and not b.replies.prompts


async def test_the_click_on_another_replica_resumes_the_turn(
    make_runtime: RuntimeFactory, fake_openai: FakeOpenAI
) -> None:
    wiper = Wiper()
    a, b = await make_runtime(wiper), await make_runtime(wiper)
    fake_openai.script(ToolCalls(("wipe", {"target": "/srv"})), Reply("Wiped /srv."))
    incoming = msg("wipe /srv")
    await a.delivery.receive(incoming)
    prompt = await a.replies.wait_prompts(1)
    assert (await approvals_of(b).decide("test", prompt.approval_id, "approve", "U1")).outcome == "decided"
    assert await a.replies.wait_for(incoming.dedupe_key) == "Wiped /srv."  # A's turn read B's decision
    assert wiper.ran == ["/srv"]


class CreateSeen:
    """An approval store that says when a turn created (or found) a record."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.created = asyncio.Event()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def create(self, record: Any, keep_seconds: int) -> Any:
        stored = await self.inner.create(record, keep_seconds)
        self.created.set()
        return stored


@pytest.mark.parametrize("click", ["while_down", "while_resumed"])
async def test_the_click_after_a_restart_is_applied_by_the_new_process(
    make_runtime: RuntimeFactory, fake_openai: FakeOpenAI, click: str, redis_url: str, key_prefix: str
) -> None:
    wiper = Wiper()
    first = await make_runtime(wiper, lock_timeout_seconds=3)
    # The resumed turn asks the model again: it asks for the same call (with a new call ID).
    fake_openai.script(ToolCalls(("wipe", {"target": "/var"})), ToolCalls(("wipe", {"target": "/var"})),
                       Reply("Wiped /var."))  # fmt: skip
    incoming = msg("wipe /var")
    await first.delivery.receive(incoming)
    prompt = await first.replies.wait_prompts(1)
    await stop_runtime(first, grace_seconds=0)  # the process goes; its lease is released with the turn unanswered
    if click == "while_down":  # taken by a replica that serves other conversations, before anyone resumes
        backend = open_backend(make_settings(redis_url=redis_url, key_prefix=key_prefix))
        try:
            decided = await Approvals(backend.approvals()).decide("test", prompt.approval_id, "approve", "U1")
        finally:
            await backend.aclose()
        second = await make_runtime(wiper, lock_timeout_seconds=3)
    else:
        second = await make_runtime(wiper, lock_timeout_seconds=3)
        seen = CreateSeen(approvals_of(second).store)
        approvals_of(second).store = seen  # before its sweep first runs: nothing awaited since it started
        await asyncio.wait_for(seen.created.wait(), 10)  # the resumed turn found the record and waits on it
        decided = await approvals_of(second).decide("test", prompt.approval_id, "approve", "U1")
    assert decided.outcome == "decided"
    assert await second.replies.wait_for(incoming.dedupe_key) == "Wiped /var."
    assert wiper.ran == ["/var"]
    assert not second.replies.prompts  # the same approval: no second prompt


async def test_an_approved_call_already_run_is_not_run_again(
    make_runtime: RuntimeFactory, fake_openai: FakeOpenAI
) -> None:
    wiper = Wiper()
    rt = await make_runtime(wiper)
    approvals = approvals_of(rt)
    lease = Lease("test", "user_U1_session_C1", "1-0", "Ev-x", rt.delivery.inbox.owner, 1)  # type: ignore[attr-defined]
    call = PendingCall("call_1", "wipe", "python", "wipe", {"target": "/"})

    class Prompts:
        async def post_approval(self, record: Any) -> str:
            await approvals.decide("test", record.approval_id, "approve", "U1")
            return "p"

        async def close_approval(self, record: Any) -> None:
            return None

    hook = approvals.hook(lease, "U1", Prompts())
    assert hook is not None
    assert await hook(call) is True  # approved, claimed for running
    assert await hook(call) == ALREADY_RAN  # a resumed attempt: same ID, found "ran"
    assert approval_id_for(lease, call) == approval_id_for(lease, PendingCall("call_2", "wipe", "python", "wipe",
                                                                              {"target": "/"}))  # fmt: skip


async def test_expiry_gives_the_model_a_not_approved_result(
    make_runtime: RuntimeFactory, fake_openai: FakeOpenAI
) -> None:
    wiper = Wiper()
    rt = await make_runtime(wiper, approval_timeout_seconds=0.3, turn_timeout_seconds=0.2)
    fake_openai.script(ToolCalls(("wipe", {"target": "/"})), Reply("Nobody approved."))
    incoming = msg("wipe /")
    await rt.delivery.receive(incoming)
    prompt = await rt.replies.wait_prompts(1)
    # The wait for approval is not cut by TURN_TIMEOUT_SECONDS (0.2 s): the turn ends by the approval's expiry.
    assert await rt.replies.wait_for(incoming.dedupe_key) == "Nobody approved."
    closed = await rt.replies.wait_closed(1)
    assert closed.approval_id == prompt.approval_id and closed.state == "expired"
    assert wiper.ran == [] and tool_results(fake_openai) == [EXPIRED]
    late = await approvals_of(rt).decide("test", prompt.approval_id, "approve", "U1")
    assert late.outcome == "late" and wiper.ran == []
    assert counted(rt, "expired") == 1


async def test_an_mcp_servers_destructive_tool_runs_once_approved(
    fake_openai: FakeOpenAI, redis_url: str, key_prefix: str, tmp_path: Path
) -> None:
    config = write_config(tmp_path / "mcp.json", {"orders": stdio_entry(only="lookup_order,delete_order")})
    toolbox = await open_toolbox(make_settings(mcp_config=config))
    settings = make_settings(redis_url=redis_url, key_prefix=key_prefix, rate_limit_per_minute=0)
    model = OpenAIChatModel("m", async_client=openai_client(fake_openai))
    rt = await start_runtime(settings, model, tools=toolbox, prompting=True, approval_poll_seconds=0.05)
    try:
        fake_openai.script(
            ToolCalls(("lookup_order", {"order_id": "7"}), ("delete_order", {"order_id": "7"})), Reply("Deleted.")
        )
        incoming = msg("delete order 7")
        await rt.delivery.receive(incoming)
        prompt = await rt.replies.wait_prompts(1)
        assert (prompt.tool, prompt.server, prompt.arguments) == ("delete_order", "orders", '{\n "order_id": "7"\n}')
        await approvals_of(rt).decide("test", prompt.approval_id, "approve", "U1")
        assert await rt.replies.wait_for(incoming.dedupe_key) == "Deleted."
        assert tool_results(fake_openai) == ["order 7: 2 books, shipped", "deleted order 7"]
    finally:
        await stop_runtime(rt)
        await toolbox.aclose()
