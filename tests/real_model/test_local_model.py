"""Our model port, console and Slack adapter against a real OpenAI-compatible server that we did not write.

llama.cpp's server and SmolLM2-135M-Instruct: the assertions are on behaviour (what was sent, what was
stored, what the user saw compared with what the server sent), never on the model's wording.
"""

from __future__ import annotations

import asyncio
import io
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from bots.console import ConsoleAdapter
from bots.serving import build_delivery
from bots.slack.text import message_parts
from core.errors import GatewayError, ModelError
from core.gateway import Gateway
from core.messages import ChatMessage
from core.settings import Settings
from core.store import MemoryBackend, open_backend
from core.turns import IncomingMessage
from scripts.llama_server import MODEL_ALIAS, N_CTX, LlamaServer
from tests.conftest import make_settings
from tests.fakes.slack_api import app_mention, im_message
from tests.real_model.conftest import WireTap, real_model
from tests.slack.conftest import StartSlack
from tests.support.delivery import start_runtime, stop_runtime

pytestmark = pytest.mark.real_model

BRIEF = "You are a helpful assistant. Answer in one short sentence."
TURN_SECONDS = 90.0  # a reply of the whole window at the slowest this machine has shown, and then some


def settings_for(tmp_path: Path, **overrides: Any) -> Settings:
    return make_settings(data_dir=tmp_path / "data", openai_model=MODEL_ALIAS, system_prompt=BRIEF, **overrides)


def gateway_error_texts() -> set[str]:
    found: set[str] = set()
    pending: list[type[GatewayError]] = [GatewayError]
    while pending:
        kind = pending.pop()
        found.add(kind.user_message)
        pending.extend(kind.__subclasses__())
    return found


async def stored(backend: MemoryBackend, thread_id: str, namespace: str) -> list[tuple[str, str]]:
    return [(m.role, m.text) for m in await backend.store(thread_id, namespace).list_messages()]


def test_chat_gateway_check_reports_the_local_model_ok(llama_server: LlamaServer, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "REDIS_"))}
    env |= {"OPENAI_BASE_URL": llama_server.base_url, "OPENAI_MODEL": MODEL_ALIAS, "DATA_DIR": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-c", "from bots.cli import main; main()", "check"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"model: ok ({MODEL_ALIAS} at {llama_server.base_url}" in done.stdout


async def test_a_console_conversation_sends_the_first_turn_with_the_second(
    llama_server: LlamaServer, tmp_path: Path
) -> None:
    tap = WireTap()
    model = real_model(llama_server, tap)
    settings = settings_for(tmp_path)
    backend = open_backend(settings)
    gateway = Gateway(settings, backend, model)
    delivery = build_delivery(settings, gateway)
    screen = io.StringIO()
    console = ConsoleAdapter(
        gateway, delivery, user_id="ada", channel_id="lab",
        stdin=io.StringIO("My name is Ada.\nWhat is my name?\n"), stdout=screen,
    )  # fmt: skip
    try:
        chat = asyncio.create_task(console.run())
        runner = asyncio.create_task(delivery.run())
        await asyncio.wait_for(chat, 2 * TURN_SECONDS)  # returns at end of input, after both turns
        history = await stored(backend, "user_ada_session_lab", "console")
    finally:
        await delivery.drain(5)
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)
        await backend.aclose()
        await model.aclose()

    assert [role for role, _ in history] == ["user", "assistant", "user", "assistant"]
    first, second = tap.exchanges
    answer = history[1][1]
    assert answer.strip() and answer == first.text  # stored exactly as the server streamed it
    assert first.request["model"] == MODEL_ALIAS and first.request["stream"] is True
    assert first.messages == [{"role": "system", "content": BRIEF}, {"role": "user", "content": "My name is Ada."}]
    assert second.messages == [
        *first.messages,
        {"role": "assistant", "content": answer},
        {"role": "user", "content": "What is my name?"},
    ]
    assert history[3][1] == second.text and second.text.strip()
    shown = screen.getvalue()
    assert shown.count("bot> ") == 2 and answer in shown and second.text in shown


@pytest.fixture
async def slack_gateway(
    llama_server: LlamaServer, redis_url: str, key_prefix: str
) -> AsyncIterator[tuple[Gateway, WireTap]]:
    """A gateway on the real model and the shared Redis (with start_slack's key prefix), closed after it."""
    settings = make_settings(redis_url=redis_url, key_prefix=key_prefix, openai_model=MODEL_ALIAS, system_prompt=BRIEF)
    backend = open_backend(settings)
    tap = WireTap()
    model = real_model(llama_server, tap)
    yield Gateway(settings, backend, model), tap
    await backend.aclose()
    await model.aclose()


@pytest.mark.parametrize("where", ["channel", "dm"])
async def test_a_slack_turn_streams_and_ends_with_the_exact_reply(
    slack_gateway: tuple[Gateway, WireTap], start_slack: StartSlack, where: str
) -> None:
    gateway, tap = slack_gateway
    rig = await start_slack("http", gateway=gateway, progress_interval_seconds=0)
    event = app_mention("Name three colours, please.") if where == "channel" else im_message("Name three colours.")

    assert await rig.deliver(event) == 200
    outcome = await asyncio.wait_for(rig.outcomes.get(), TURN_SECONDS)

    assert outcome.result == "answered" and outcome.reply is not None and outcome.reply.kind == "answer"
    [exchange] = tap.exchanges
    reply = exchange.text
    assert reply.strip() and outcome.reply.text == reply
    assert outcome.reply.thread_id is not None
    assert (await stored(gateway.backend, outcome.reply.thread_id, "slack"))[-1] == ("assistant", reply)
    thread_ts = event["ts"] if where == "channel" else None
    assert rig.reply_texts(event["channel"], thread_ts) == message_parts(reply)  # exactly, and once
    methods = [c.method for c in rig.slack.calls if c.method.startswith("chat.")]
    if where == "channel":  # Slack's native stream: started, appended to as the model wrote, stopped
        assert methods[0] == "chat.startStream" and methods[-1] == "chat.stopStream"
        assert methods.count("chat.appendStream") >= 1 and "chat.postMessage" not in methods
    else:  # posted at the first words, then edited
        assert methods.count("chat.postMessage") == 1 and methods.count("chat.update") >= 1
        assert methods[0] == "chat.postMessage"


# Text that no tokenizer packs much tighter than 4 characters a token, so the estimate stays honest.
def _filler(index: int) -> str:
    return f"Note {index}: " + " ".join(f"item-{index}-{j} is filed under shelf {j % 7}." for j in range(40))


async def test_a_request_over_the_context_window_drops_the_oldest_history_and_says_so(
    llama_server: LlamaServer, tmp_path: Path
) -> None:
    tap = WireTap()
    # One SDK retry, as MODEL_MAX_RETRIES gives in production: after the empty stream the server closes
    # the kept-alive connection, and the unstreamed call that follows meets it closed.
    model = real_model(llama_server, tap, max_retries=1)
    runtime = await start_runtime(settings_for(tmp_path, max_messages=100), model)
    history = [ChatMessage(role=("user", "assistant")[i % 2], text=_filler(i)) for i in range(16)]
    assert sum(len(m.text) for m in history) // 4 > 2 * N_CTX  # well over the server's window
    await runtime.gateway.backend.store("user_U1_session_C1", "test").add_messages(history)
    incoming = IncomingMessage(platform="test", event_id="Ev-long", user_id="U1", channel_id="C1", text="Hello?")
    try:
        shown = await runtime.ask(incoming, timeout=2 * TURN_SECONDS)
    finally:
        await stop_runtime(runtime)
        await model.aclose()

    # llama.cpp ends a stream it refuses without a word: asked again unstreamed it says why (400),
    # then one retry with the oldest history dropped.
    empty, first, retry = [exchange for exchange in tap.exchanges if exchange.status]  # 0: connection closed
    assert empty.status == 200 and not empty.text and first.status == 400 and retry.status == 200
    assert first.messages[-1] == retry.messages[-1] == {"role": "user", "content": "Hello?"}
    sent_history = [m["content"] for m in first.messages if m["role"] != "system"][:-1]
    kept = [m["content"] for m in retry.messages if m["role"] != "system"][:-1]
    assert len(kept) < len(sent_history) and kept == sent_history[len(sent_history) - len(kept) :]  # the oldest went
    assert shown not in gateway_error_texts() and incoming.dedupe_key not in runtime.replies.notices
    assert retry.text.strip() and retry.text in shown and shown != retry.text  # the answer, and a word about it


async def test_a_server_killed_mid_stream_gives_a_clear_reply_and_stores_nothing(
    doomed_server: LlamaServer, tmp_path: Path
) -> None:
    tap = WireTap(kill=doomed_server)
    model = real_model(doomed_server, tap)
    runtime = await start_runtime(settings_for(tmp_path), model)
    incoming = IncomingMessage(
        platform="test", event_id="Ev-kill", user_id="U1", channel_id="C1", text="Tell me a long story about a fox."
    )
    try:
        shown = await runtime.ask(incoming, timeout=TURN_SECONDS)
        history = await stored(runtime.gateway.backend, "user_U1_session_C1", "test")
    finally:
        await stop_runtime(runtime)
        await model.aclose()

    assert tap.killed and doomed_server.process is not None and doomed_server.process.poll() is not None
    [exchange] = tap.exchanges
    assert exchange.status == 200 and exchange.text.strip()  # the server had started answering
    assert shown == ModelError.user_message
    assert history == []
