"""Two real gateway processes on one Redis receive the same Slack events, as replicas behind a load balancer.

Never: an event answered twice, an event not answered, or one conversation's turns stored out of the
order its messages arrived in. Whichever replica stores an event first answers it; the other finds it
a duplicate in the inbox.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from core.store import RedisConnection
from core.store.keys import ConversationKeys
from tests.fakes.openai_server import Delay, FakeOpenAI
from tests.fakes.slack_api import FakeSlack, Message, im_message
from tests.support.processes import GatewayProcess, ProcessGroup
from tests.support.waiting import wait_until

SECRET = "replica-signing-secret"
USERS = {"U1": "D1", "U2": "D2", "U3": "D3"}
TURNS = 4


@pytest.fixture
async def replicas(
    tmp_path: Path, redis_url: str, key_prefix: str
) -> AsyncIterator[tuple[list[GatewayProcess], FakeSlack, FakeOpenAI]]:
    async with FakeSlack(bot_user_id="UBOT", bot_id="BBOT", team_id="T1") as slack, FakeOpenAI() as model:
        env = {
            "REDIS_URL": redis_url, "KEY_PREFIX": key_prefix, "OPENAI_BASE_URL": model.base_url,
            "SLACK_BOT_TOKEN": "xoxb-test", "SLACK_SIGNING_SECRET": SECRET, "SLACK_API_URL": slack.api_url,
            "RATE_LIMIT_PER_MINUTE": "0",
        }  # fmt: skip
        async with ProcessGroup(tmp_path, ["slack"], env).running() as processes:  # SIGTERM at the end: exit 0
            group = [await processes.start(f"replica{i}") for i in range(2)]
            for replica in group:
                await replica.wait_ready()
            yield group, slack, model


@pytest.mark.slow
async def test_two_replicas_given_the_same_events_answer_each_once_in_order(
    replicas: tuple[list[GatewayProcess], FakeSlack, FakeOpenAI], redis_url: str, key_prefix: str
) -> None:
    group, slack, model = replicas
    model.reply_with(lambda messages: f"answer to {messages[-1]['content']}")
    for turn in range(TURNS):
        model.script(*(Delay(0.05, then=None) for _ in USERS))
        sent = []
        for user, channel in USERS.items():
            body = json.dumps(slack.event_callback(im_message(f"{user} says {turn}", user=user, channel=channel)))
            sent.append(asyncio.gather(*(replica.post_slack_event(body.encode(), SECRET) for replica in group)))
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
    inboxes = [ConversationKeys.of(key_prefix, "slack", f"user_{u}_session_T1-{c}").inbox for u, c in USERS.items()]

    async def all_delivered() -> bool:  # marked delivered just after the post: then nothing waits in an inbox
        return all([await backend.client.xlen(inbox) == 0 for inbox in inboxes])

    await wait_until(all_delivered, timeout=10)
    await backend.aclose()


def bot_replies(slack: FakeSlack, channel: str) -> list[Message]:
    return [m for m in slack.messages(channel) if m.bot_id]
