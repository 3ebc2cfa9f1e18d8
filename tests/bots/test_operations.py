"""Operating the gateway: health and metrics endpoints, graceful shutdown, logs without secrets."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path

import aiohttp
import pytest

from core.delivery import Delivery, TurnOutcome
from core.gateway import Gateway
from core.health import HealthServer
from core.llm import OfflineChatModel
from core.store import RedisConnection, SqliteConnection
from core.turns import IncomingMessage
from tests.conftest import make_settings
from tests.fakes.discord_api import DEFAULT_TOKEN, FakeDiscord
from tests.fakes.openai_server import Delay, FakeOpenAI, Reply
from tests.fakes.slack_api import FakeSlack, im_message, sign
from tests.support.delivery import Replies
from tests.support.redis_proc import free_port
from tests.support.waiting import wait_until

SETTING_PREFIXES = ("REDIS_", "OPENAI_", "SLACK_", "DISCORD_", "LOG_", "MAX_", "KEY_PREFIX", "DATA_DIR", "HEALTH_")


class StubAdapter:
    def __init__(self, name: str, connected: bool) -> None:
        self.name = name
        self.connected = connected


async def get(url: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        return response.status, await response.text()


async def test_health_ready_and_metrics_endpoints(tmp_path: Path) -> None:
    backend = SqliteConnection(tmp_path / "m.sqlite3")
    settings = make_settings()
    gateway = Gateway(settings, backend, OfflineChatModel())
    outcomes: asyncio.Queue[TurnOutcome] = asyncio.Queue()
    inbox = backend.inbox(lease_seconds=settings.lock_timeout_seconds, keep_seconds=settings.dedupe_ttl_seconds)
    delivery = Delivery(gateway, inbox, on_outcome=outcomes.put_nowait)
    replies = Replies()
    delivery.serve("slack", replies)
    adapter = StubAdapter("slack", connected=True)
    server = HealthServer(backend=backend, metrics=gateway.metrics, adapters=[adapter], host="127.0.0.1", port=0)
    await server.start()
    base = f"http://127.0.0.1:{server.port}"
    try:
        assert (await get(f"{base}/healthz"))[0] == 200
        status, body = await get(f"{base}/readyz")
        assert status == 200 and json.loads(body)["status"] == "ready"
        adapter.connected = False
        status, body = await get(f"{base}/readyz")
        assert status == 503 and json.loads(body)["reasons"] == ["slack not connected"]
        assert await delivery.receive(IncomingMessage("slack", "E1", "U1", "C1", "hello")) == "taken"
        answered = await asyncio.wait_for(outcomes.get(), 10)  # reported once counted, after the post
        assert answered.result == "answered" and answered.reply is not None
        assert replies.texts["E1"] == [answered.reply.text]
        assert await delivery.receive(IncomingMessage("slack", "E1", "U1", "C1", "hello")) == "duplicate"
        assert (await asyncio.wait_for(outcomes.get(), 10)).result == "duplicate"
        status, metrics = await get(f"{base}/metrics")
        assert status == 200
        assert 'chat_gateway_turns_total{outcome="answer",platform="slack"} 1.0' in metrics
        assert 'chat_gateway_duplicates_dropped_total{platform="slack"} 1.0' in metrics
        assert 'chat_gateway_turn_seconds_count{platform="slack"} 1.0' in metrics
        assert "chat_gateway_model_seconds_bucket" in metrics and "U1" not in metrics
    finally:
        await delivery.drain(5)
        await server.stop()
        await backend.aclose()


async def test_readyz_is_503_when_the_store_is_down() -> None:
    backend = RedisConnection.from_url(f"redis://127.0.0.1:{free_port()}", timeout_seconds=0.3)
    server = HealthServer(backend=backend, metrics=Gateway(make_settings(), backend, OfflineChatModel()).metrics,
                          adapters=[], host="127.0.0.1", port=0)  # fmt: skip
    await server.start()
    try:
        status, body = await get(f"http://127.0.0.1:{server.port}/readyz")
        assert status == 503 and "store unreachable" in body
    finally:
        await server.stop()
        await backend.aclose()


async def start_console(tmp_path: Path, env: dict[str, str]) -> asyncio.subprocess.Process:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(SETTING_PREFIXES)}
    return await asyncio.create_subprocess_exec(
        sys.executable, "-c", "from bots.cli import main; main()", "run", "console",
        cwd=tmp_path, env={**clean, **env}, stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip


async def test_sigterm_during_a_slow_turn_posts_and_stores_it_exactly_once(tmp_path: Path) -> None:
    async with FakeOpenAI() as fake:
        fake.script(Delay(1.0, then=Reply("the slow answer")))
        proc = await start_console(tmp_path, {"OPENAI_BASE_URL": fake.base_url, "SHUTDOWN_GRACE_SECONDS": "10"})
        assert proc.stdin is not None
        proc.stdin.write(b"take your time\n")
        await proc.stdin.drain()
        await asyncio.wait_for(fake.received.get(), 15)  # the turn is in the model now
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = await asyncio.wait_for(proc.communicate(), 20)
    assert proc.returncode == 0, stderr.decode()
    assert stdout.decode().count("the slow answer") == 1
    shown = await asyncio.create_subprocess_exec(
        sys.executable, "-c", "from bots.cli import main; main()", "threads", "show", "user_local_session_console",
        "--namespace", "console", cwd=tmp_path, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    history, _ = await asyncio.wait_for(shown.communicate(), 20)
    lines = history.decode().splitlines()
    assert [line.split("] ", 1)[1] for line in lines] == ["user: take your time", "assistant: the slow answer"]


@pytest.mark.parametrize("fmt", ["json", "text"])
async def test_a_whole_conversation_logs_no_secret_and_no_text_above_debug(tmp_path: Path, fmt: str) -> None:
    secrets = {
        "OPENAI_API_KEY": "sk-secret-openai-4242",
        "SLACK_BOT_TOKEN": "xoxb-secret-slack-4242",
        "SLACK_APP_TOKEN": "xapp-secret-slack-4242",
        "SLACK_SIGNING_SECRET": "signing-secret-4242",
        "DISCORD_TOKEN": "discord-secret-4242",
    }
    async with FakeOpenAI() as fake:
        env = {**secrets, "OPENAI_BASE_URL": fake.base_url, "LOG_LEVEL": "DEBUG", "LOG_FORMAT": fmt}
        proc = await start_console(tmp_path, env)
        stdout, stderr = await asyncio.wait_for(proc.communicate(b"my private words\nmemory\n"), 30)
        assert proc.returncode == 0, stderr.decode()
        logs = stderr.decode()
        assert "turn answer" in logs and "thread_id" in logs and "event_id" in logs and "platform" in logs
        for value in secrets.values():
            assert value not in logs and value not in stdout.decode()
        info_and_up = [line for line in logs.splitlines() if "DEBUG" not in line]
        assert not any("my private words" in line for line in info_and_up)
        down = await start_console(tmp_path, {**env, "REDIS_URL": "redis://user:redis-password-4242@127.0.0.1:1"})
        _, err = await asyncio.wait_for(down.communicate(b""), 30)
        assert down.returncode == 1 and "redis-password-4242" not in err.decode()


async def test_run_slack_and_discord_share_one_gateway_process(tmp_path: Path, redis_url: str, key_prefix: str) -> None:
    # One delta per reply, so each platform's first post already holds the whole answer.
    async with FakeSlack() as slack, FakeDiscord() as discord_fake, FakeOpenAI(chunk_size=10**6) as model:
        discord_fake.add_dm_channel(4242, 777)
        port, health = free_port(), free_port()
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", "from bots.cli import main; main()", "run", "slack", "discord", cwd=tmp_path,
            env={**{k: v for k, v in os.environ.items() if not k.startswith(SETTING_PREFIXES)},
                 "REDIS_URL": redis_url, "KEY_PREFIX": key_prefix, "OPENAI_BASE_URL": model.base_url,
                 "SLACK_BOT_TOKEN": "xoxb-test", "SLACK_SIGNING_SECRET": "s3", "SLACK_API_URL": slack.api_url,
                 "DISCORD_TOKEN": DEFAULT_TOKEN, "DISCORD_API_URL": discord_fake.api_url,
                 "PORT": str(port), "HEALTH_PORT": str(health), "HEALTH_HOST": "127.0.0.1"},
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip

        async def ready() -> bool:
            try:
                return (await get(f"http://127.0.0.1:{health}/readyz"))[0] == 200
            except aiohttp.ClientError:
                return False

        try:
            await wait_until(ready, timeout=30, every=0.1)
            body = json.dumps(slack.event_callback(im_message("hi from slack")))
            async with (
                aiohttp.ClientSession() as session,
                session.post(f"http://127.0.0.1:{port}/slack/events", data=body, headers=sign(body, "s3")) as response,
            ):
                assert response.status == 200
            await discord_fake.send_message_create(channel_id=4242, author_id=777, content="hi from discord")
            assert (await discord_fake.next_message(timeout=10)).content == "echo: hi from discord"
            post = await slack.next_call("chat.postMessage", timeout=10)
            assert "echo: hi from slack" in json.dumps(post.args)
        finally:
            proc.send_signal(signal.SIGTERM)
            _, stderr = await asyncio.wait_for(proc.communicate(), 30)
        assert proc.returncode == 0, stderr.decode()[-2000:]
