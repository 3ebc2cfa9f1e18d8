"""Two real gateway processes on one Redis receive the same Slack events, as replicas behind a load balancer.

Never: an event answered twice, an event not answered, or one conversation's turns stored out of the
order its messages arrived in.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from core.store import RedisConnection
from tests.fakes.openai_server import Delay, FakeOpenAI
from tests.fakes.slack_api import FakeSlack, Message, im_message, sign
from tests.support.redis_proc import free_port
from tests.support.waiting import wait_until

SECRET = "replica-signing-secret"
USERS = {"U1": "D1", "U2": "D2", "U3": "D3"}
TURNS = 4


class Replica:
    def __init__(self, proc: asyncio.subprocess.Process, port: int, health_port: int) -> None:
        self.proc, self.port, self.health_port = proc, port, health_port

    async def ready(self) -> bool:
        try:
            async with (
                aiohttp.ClientSession() as session,
                session.get(f"http://127.0.0.1:{self.health_port}/readyz") as response,
            ):
                return response.status == 200
        except aiohttp.ClientError:
            return False

    async def post(self, body: bytes) -> int:
        headers = {"Content-Type": "application/json", **sign(body.decode(), SECRET)}
        async with (
            aiohttp.ClientSession() as session,
            session.post(f"http://127.0.0.1:{self.port}/slack/events", data=body, headers=headers) as response,
        ):
            return response.status


async def start_replica(tmp_path: Path, env: dict[str, str]) -> Replica:
    port, health_port = free_port(), free_port()
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("REDIS_", "OPENAI_", "SLACK_", "HTTP", "http"))}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", "from bots.cli import main; main()", "run", "slack", cwd=tmp_path,
        env={**clean, **env, "PORT": str(port), "HEALTH_PORT": str(health_port), "HEALTH_HOST": "127.0.0.1"},
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    return Replica(proc, port, health_port)


@pytest.fixture
async def replicas(
    tmp_path: Path, redis_url: str, key_prefix: str
) -> AsyncIterator[tuple[list[Replica], FakeSlack, FakeOpenAI]]:
    async with FakeSlack(bot_user_id="UBOT", bot_id="BBOT", team_id="T1") as slack, FakeOpenAI() as model:
        env = {
            "REDIS_URL": redis_url, "KEY_PREFIX": key_prefix, "OPENAI_BASE_URL": model.base_url,
            "SLACK_BOT_TOKEN": "xoxb-test", "SLACK_SIGNING_SECRET": SECRET, "SLACK_API_URL": slack.api_url,
            "RATE_LIMIT_PER_MINUTE": "0",
        }  # fmt: skip
        group = [await start_replica(tmp_path, env) for _ in range(2)]
        try:
            for replica in group:
                await wait_until(replica.ready, timeout=30, every=0.1)
            yield group, slack, model
        finally:
            for replica in group:
                if replica.proc.returncode is None:
                    replica.proc.terminate()
                _, stderr = await asyncio.wait_for(replica.proc.communicate(), 30)
                assert replica.proc.returncode == 0, stderr.decode()[-2000:]


@pytest.mark.slow
async def test_two_replicas_given_the_same_events_answer_each_once_in_order(
    replicas: tuple[list[Replica], FakeSlack, FakeOpenAI], redis_url: str, key_prefix: str
) -> None:
    group, slack, model = replicas
    model.reply_with(lambda messages: f"answer to {messages[-1]['content']}")
    for turn in range(TURNS):
        model.script(*(Delay(0.05, then=None) for _ in USERS))
        sent = []
        for user, channel in USERS.items():
            body = json.dumps(slack.event_callback(im_message(f"{user} says {turn}", user=user, channel=channel)))
            sent.append(asyncio.gather(*(replica.post(body.encode()) for replica in group)))
        assert all(status == 200 for statuses in await asyncio.gather(*sent) for status in statuses)
        for _ in USERS:  # this round's turns have reached the model: the next round arrives after them
            await asyncio.wait_for(model.received.get(), 15)

    async def all_answered() -> bool:
        return all(len(bot_replies(slack, channel)) >= TURNS for channel in USERS.values())

    await wait_until(all_answered, timeout=30, every=0.1)
    backend = RedisConnection.from_url(redis_url, key_prefix=key_prefix)
    for user, channel in USERS.items():
        replies = [m.visible_text for m in bot_replies(slack, channel)]
        assert replies == [f"answer to {user} says {turn}" for turn in range(TURNS)], replies
        stored = [m.text for m in await backend.store(f"user_{user}_session_T1-{channel}", "slack").list_messages()]
        assert stored == [t for turn in range(TURNS) for t in (f"{user} says {turn}", f"answer to {user} says {turn}")]
    assert len(model.requests) == len(USERS) * TURNS  # the duplicates never reached the model
    await backend.aclose()


def bot_replies(slack: FakeSlack, channel: str) -> list[Message]:
    return [m for m in slack.messages(channel) if m.bot_id]
