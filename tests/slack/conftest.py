"""A running SlackAdapter against FakeSlack, real Redis and the fake OpenAI server, in either mode.

`start_slack(mode)` builds the gateway and adapter, runs `adapter.run()` in a task and waits for
`adapter.ready`; a `SlackRig` delivers events the way that mode receives them (a Socket Mode
envelope, or a signed POST to the adapter's bound port) and hands out each delivery's outcome.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import aiohttp
import pytest

from bots.slack import SlackAdapter
from bots.slack.http_server import HttpLimits
from core.delivery import Delivery, TurnOutcome
from core.gateway import Gateway
from core.llm import OpenAIChatModel
from core.profile_rules import Profiles
from core.store import open_backend
from tests.conftest import make_settings, openai_client
from tests.fakes.openai_server import FakeOpenAI
from tests.fakes.slack_api import FakeSlack, Message, sign, slash_command_form

Mode = Literal["socket", "http"]
SIGNING_SECRET = "test-signing-secret"
WAIT = 5.0


@dataclass
class SlackRig:
    """One running adapter and the ways a test talks to it."""

    mode: Mode
    slack: FakeSlack
    adapter: SlackAdapter
    gateway: Gateway
    delivery: Delivery
    task: asyncio.Task[None]
    runner: asyncio.Task[None]
    outcomes: asyncio.Queue[TurnOutcome] = field(default_factory=asyncio.Queue)

    async def stop(self, grace_seconds: float = 2.0) -> None:
        """Shut down as the CLI does: drain the delivery runner, then cancel `adapter.run()`."""
        await self.delivery.drain(grace_seconds)
        for task in (self.runner, self.task):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def deliver(self, event: dict[str, Any], *, event_id: str | None = None, retry_num: int = 0) -> int:
        """Deliver an Events API event; returns the HTTP status (200 for an acked envelope)."""
        body = self.slack.event_callback(event, event_id)
        if self.mode == "socket":
            envelope_id = await self.slack.send_event(body, retry_attempt=retry_num)
            await self.slack.wait_ack(envelope_id, timeout=WAIT)
            return 200
        raw = json.dumps(body)
        headers = {"Content-Type": "application/json", **sign(raw, SIGNING_SECRET)}
        if retry_num:
            headers |= {"X-Slack-Retry-Num": str(retry_num), "X-Slack-Retry-Reason": "http_timeout"}
        return await self.post(raw.encode(), headers)

    async def command(self, command: str, **fields: str) -> None:
        """Invoke a slash command; its response_url points back at the fake."""
        if self.mode == "socket":
            await self.slack.wait_ack(await self.slack.send_slash_command(command, **fields), timeout=WAIT)
            return
        fields.setdefault("response_url", f"{self.slack.base_url}response/{command.strip('/')}")
        body = slash_command_form(command, **fields)
        headers = {"Content-Type": "application/x-www-form-urlencoded", **sign(body, SIGNING_SECRET)}
        assert await self.post(body, headers) == 200

    async def post(self, body: bytes, headers: dict[str, str]) -> int:
        assert self.adapter.port is not None
        url = f"http://127.0.0.1:{self.adapter.port}/slack/events"
        async with aiohttp.ClientSession() as session, session.post(url, data=body, headers=headers) as response:
            await response.read()
            return response.status

    async def outcome(self) -> TurnOutcome:
        return await asyncio.wait_for(self.outcomes.get(), WAIT)

    def replies(self, channel: str, thread_ts: str | None = None) -> list[Message]:
        """The bot's messages in a thread (or at a channel's top level), oldest first."""
        messages = self.slack.thread(channel, thread_ts) if thread_ts else self.slack.messages(channel)
        return [m for m in messages if m.user == self.slack.bot_user_id and (thread_ts or m.thread_ts is None)]

    def reply_texts(self, channel: str, thread_ts: str | None = None) -> list[str]:
        return [m.visible_text for m in self.replies(channel, thread_ts)]


StartSlack = Callable[..., Awaitable[SlackRig]]


@pytest.fixture
async def start_slack(
    slack: FakeSlack, fake_openai: FakeOpenAI, redis_url: str, key_prefix: str
) -> AsyncIterator[StartSlack]:
    """Start an adapter (and a gateway on the shared Redis, unless one is passed); stopped at teardown."""
    running: list[tuple[SlackRig, Callable[[], Awaitable[None]]]] = []

    async def start(
        mode: Mode = "socket",
        *,
        gateway: Gateway | None = None,
        progress_interval_seconds: float = 1.0,
        host: str | None = "127.0.0.1",
        http_limits: HttpLimits | None = None,
        **overrides: Any,
    ) -> SlackRig:
        settings_fields: dict[str, Any] = {
            "redis_url": redis_url,
            "key_prefix": key_prefix,
            "slack_bot_token": "xoxb-test",
            "slack_api_url": slack.api_url,
            "port": 0,
        }
        if mode == "socket":
            settings_fields["slack_app_token"] = "xapp-test"
        else:
            settings_fields["slack_signing_secret"] = SIGNING_SECRET
        settings = make_settings(**(settings_fields | overrides))
        if gateway is None:
            backend = open_backend(settings)
            gateway = Gateway(
                settings,
                backend,
                OpenAIChatModel("m", async_client=openai_client(fake_openai)),
                profiles=Profiles.from_settings(settings),
            )
            close = backend.aclose
        else:
            close = _nothing
        outcomes: asyncio.Queue[TurnOutcome] = asyncio.Queue()
        inbox = gateway.backend.inbox(
            lease_seconds=settings.lock_timeout_seconds, keep_seconds=settings.dedupe_ttl_seconds
        )
        delivery = Delivery(
            gateway, inbox, max_turns=settings.max_concurrent_turns,
            progress_interval_seconds=progress_interval_seconds, on_outcome=outcomes.put_nowait,
        )  # fmt: skip
        adapter = SlackAdapter(
            settings=settings, gateway=gateway, delivery=delivery, host=host, http_limits=http_limits,
            on_outcome=outcomes.put_nowait,
        )  # fmt: skip
        task = asyncio.create_task(adapter.run(), name=f"slack-adapter-{mode}")
        runner = asyncio.create_task(delivery.run(), name="delivery")
        rig = SlackRig(mode, slack, adapter, gateway, delivery, task, runner, outcomes)
        running.append((rig, close))
        ready = asyncio.create_task(adapter.ready.wait())
        await asyncio.wait({task, ready}, timeout=WAIT, return_when=asyncio.FIRST_COMPLETED)
        if not adapter.ready.is_set():
            ready.cancel()
            if task.done():
                task.result()  # raises the start-up error
            raise TimeoutError("the Slack adapter did not become ready")
        if mode == "socket":
            await slack.wait_socket_connected(WAIT)
        return rig

    yield start
    for rig, close in reversed(running):
        await rig.stop()
        await close()


async def _nothing() -> None:
    return None


@pytest.fixture
async def gateway(fake_openai: FakeOpenAI, redis_url: str, key_prefix: str) -> AsyncIterator[Gateway]:
    """A gateway on the shared Redis, for tests that build adapters themselves."""
    settings = make_settings(redis_url=redis_url, key_prefix=key_prefix)
    backend = open_backend(settings)
    try:
        yield Gateway(
            settings,
            backend,
            OpenAIChatModel("m", async_client=openai_client(fake_openai)),
            profiles=Profiles.from_settings(settings),
        )
    finally:
        await backend.aclose()


@pytest.fixture(params=["socket", "http"])
def mode(request: pytest.FixtureRequest) -> Mode:
    mode: Mode = request.param
    return mode


@pytest.fixture
def delivery(gateway: Gateway) -> Delivery:
    """A delivery runner on `gateway`, for tests that build adapters themselves (never run here)."""
    return Delivery(gateway, gateway.backend.inbox(lease_seconds=30, keep_seconds=3600))
