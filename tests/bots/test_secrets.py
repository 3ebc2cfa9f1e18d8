"""Secrets stay out of everything shown: settings' repr, every log line, errors and CLI output.

A real `chat-gateway run console` process on a password-protected redis-server and the fake model, at
DEBUG, through a whole conversation with every failure it can meet (model 401, 500, timeout, the store
going down); its whole stderr and stdout are searched for each secret value.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from pathlib import Path

import pytest

from core.logs import TextFormatter
from core.redact import redact_text, redact_url
from tests.conftest import make_settings
from tests.fakes.openai_server import FakeOpenAI, Hang, Status
from tests.support.redis_proc import RedisServer

SETTING_PREFIXES = ("REDIS_", "OPENAI_", "SLACK_", "DISCORD_", "LOG_", "MAX_", "KEY_PREFIX", "DATA_DIR", "HEALTH_")
REDIS_PASSWORD = "redis-pass-4242"
URL_PASSWORD = "url-pass-4242"
QUERY_KEY = "query-key-4242"
TOKENS = {
    "OPENAI_API_KEY": "sk-secret-openai-4242",
    "SLACK_BOT_TOKEN": "xoxb-secret-slack-4242",
    "SLACK_APP_TOKEN": "xapp-secret-slack-4242",
    "SLACK_SIGNING_SECRET": "signing-secret-4242",
    "DISCORD_TOKEN": "discord-secret-4242",
}
SECRET_VALUES = [*TOKENS.values(), REDIS_PASSWORD, URL_PASSWORD, QUERY_KEY]
PROMPT = b"you> "


def with_credentials(base_url: str) -> str:
    return base_url.replace("http://", f"http://apiuser:{URL_PASSWORD}@")


class Console:
    """`chat-gateway run console` in a subprocess; `say` returns what it printed for one line."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.shown = b""

    @classmethod
    async def start(cls, cwd: Path, env: dict[str, str]) -> Console:
        clean = {k: v for k, v in os.environ.items() if not k.startswith(SETTING_PREFIXES)}
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", "from bots.cli import main; main()", "run", "console",
            cwd=cwd, env={**clean, **env}, stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        console = cls(proc)
        await console._until_prompt()
        return console

    async def _until_prompt(self) -> str:
        assert self.proc.stdout is not None
        chunk = await asyncio.wait_for(self.proc.stdout.readuntil(PROMPT), 30)
        self.shown += chunk
        return chunk.decode()

    async def say(self, line: str) -> str:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line.encode() + b"\n")
        await self.proc.stdin.drain()
        return await self._until_prompt()

    async def close(self) -> tuple[str, str]:
        stdout, stderr = await asyncio.wait_for(self.proc.communicate(b""), 30)
        return (self.shown + stdout).decode(), stderr.decode()


async def run_cli(cwd: Path, env: dict[str, str], *args: str) -> str:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(SETTING_PREFIXES)}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", "from bots.cli import main; main()", *args, cwd=cwd, env={**clean, **env},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(proc.communicate(), 30)
    return out.decode()


def leaked(text: str) -> list[str]:
    return [value for value in SECRET_VALUES if value in text]


@pytest.mark.parametrize("fmt", ["json", "text"])
async def test_a_conversation_through_every_failure_logs_no_secret(tmp_path: Path, fmt: str) -> None:
    redis = RedisServer(tmp_path / "redis", args=["--requirepass", REDIS_PASSWORD])
    redis.start()
    try:
        async with FakeOpenAI() as fake:
            env = {
                **TOKENS, "LOG_LEVEL": "DEBUG", "LOG_FORMAT": fmt, "MODEL_MAX_RETRIES": "0",
                "MODEL_TIMEOUT_SECONDS": "1", "REDIS_TIMEOUT_SECONDS": "0.5",
                "REDIS_URL": f"redis://default:{REDIS_PASSWORD}@127.0.0.1:{redis.port}/0",
                "OPENAI_BASE_URL": with_credentials(fake.base_url),
            }  # fmt: skip
            console = await Console.start(tmp_path, env)
            assert "echo: hello" in await console.say("hello")
            fake.script(Status(401))
            assert "rejected" in await console.say("now a 401")
            fake.script(Status(500))
            assert "did not answer properly" in await console.say("now a 500")
            fake.script(Hang())
            assert "took too long" in await console.say("now a timeout")
            fake.release()
            checked = await run_cli(tmp_path, env, "check")
            assert "model: ok" in checked
            redis.kill()
            assert "memory is unreachable" in await console.say("the store is down")
            stdout, stderr = await console.close()

            # A query-string key in the model URL breaks the SDK's paths: every turn fails, naming the URL.
            query_env = {**env, "OPENAI_BASE_URL": f"{fake.base_url}?key={QUERY_KEY}", "REDIS_URL": ""}
            query_console = await Console.start(tmp_path, query_env)
            assert "rejected" in await query_console.say("hello again")
            query_out, query_err = await query_console.close()
            query_checked = await run_cli(tmp_path, query_env, "check")
    finally:
        redis.stop()
    assert "turn answer" in stderr and "turn failed" in stderr and "turn failed" in query_err
    assert "127.0.0.1" in stderr  # redaction keeps where things are, only credentials go
    for shown in (stdout, stderr, checked, query_out, query_err, query_checked):
        assert leaked(shown) == []


def test_repr_of_settings_shows_no_url_credentials() -> None:
    settings = make_settings(
        redis_url=f"redis://default:{REDIS_PASSWORD}@redis.example:6379/0",
        openai_base_url=f"https://apiuser:{URL_PASSWORD}@llm.example/v1?key={QUERY_KEY}&api-version=1",
    )
    shown = repr(settings) + str(settings) + str(settings.model_dump())
    assert leaked(shown) == [] and "redis.example" in repr(settings) and "llm.example" in repr(settings)
    assert settings.redis_url is not None and REDIS_PASSWORD in settings.redis_url.get_secret_value()


@pytest.mark.parametrize(
    "url,expected",
    [
        ("redis://default:pw@h:6379/0", "redis://default:***@h:6379/0"),
        ("rediss://:pw@h1:1,h2:2/0", "rediss://:***@h1:1,h2:2/0"),
        ("https://token@llm.example/v1", "https://***@llm.example/v1"),
        ("https://llm.example/v1?key=abc&api-version=2", "https://llm.example/v1?key=***&api-version=***"),
        ("http://127.0.0.1:8080/v1", "http://127.0.0.1:8080/v1"),
    ],
)
def test_redact_url_drops_userinfo_and_query_values(url: str, expected: str) -> None:
    assert redact_url(url) == expected
    assert redact_text(f"error from model at {url}: boom") == f"error from model at {expected}: boom"


def test_the_log_formatter_redacts_urls_and_known_secrets_in_messages_and_tracebacks() -> None:
    formatter = TextFormatter(secrets=["tok-4242-secret"])
    try:
        raise RuntimeError(f"failed at https://u:{URL_PASSWORD}@h/v1?key={QUERY_KEY}")
    except RuntimeError:
        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "with %s", ("tok-4242-secret",), sys.exc_info())
    record.__dict__["url"] = f"redis://:{REDIS_PASSWORD}@h:1"
    assert leaked(formatter.format(record)) == [] and "tok-4242-secret" not in formatter.format(record)
