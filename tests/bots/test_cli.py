"""The `chat-gateway` command as a user runs it: a real process, piped stdin, exit codes, one-line errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from redis.asyncio import Redis

from core.messages import ChatMessage
from core.store import RedisConnection
from tests.support.redis_proc import free_port

SETTING_PREFIXES = (
    "REDIS_", "OPENAI_", "SLACK_", "DISCORD_", "LOG_", "MAX_", "KEY_PREFIX", "DATA_DIR", "THREAD_TTL", "TOOLS_", "MCP_",
)  # fmt: skip


def cli(
    args: list[str], cwd: Path, *, stdin: str = "", env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(SETTING_PREFIXES)}
    command = [sys.executable, "-c", "from bots.cli import main; main()", *args]
    return subprocess.run(
        command,
        check=False,
        cwd=cwd,
        input=stdin,
        env={**clean, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_console_chat_remembers_across_a_restart(tmp_path: Path) -> None:
    first = cli(["run", "console", "--user", "ada", "--channel", "lab"], tmp_path, stdin="My name is Ada\n")
    assert first.returncode == 0, first.stderr
    assert "[offline model]" in first.stdout and "no earlier messages" in first.stdout
    second = cli(["run", "console", "--user", "ada", "--channel", "lab"], tmp_path, stdin="Who am I?\nmemory\n")
    assert second.returncode == 0, second.stderr
    assert "I was given 2 earlier messages" in second.stdout and "My name is Ada" in second.stdout
    assert "I remember 4 messages" in second.stdout
    other = cli(["run", "console", "--user", "bob", "--channel", "lab"], tmp_path, stdin="Hi\n")
    assert "no earlier messages" in other.stdout


def test_console_reset_forgets(tmp_path: Path) -> None:
    cli(["run", "console"], tmp_path, stdin="remember this\n")
    done = cli(["run", "console"], tmp_path, stdin="reset\nwhat now?\n")
    assert "forgotten" in done.stdout and "no earlier messages" in done.stdout


@pytest.mark.parametrize("args", [["fly"], ["run"], ["run", "telegram"], ["threads", "show"]])
def test_wrong_flags_are_one_line_and_exit_2(tmp_path: Path, args: list[str]) -> None:
    result = cli(args, tmp_path)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("chat-gateway: ")


def test_bad_settings_are_one_line_naming_the_variable_and_exit_2(tmp_path: Path) -> None:
    result = cli(["check"], tmp_path, env={"THREAD_TTL_SECONDS": "-1", "LOG_LEVEL": "LOUD"})
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "THREAD_TTL_SECONDS" in result.stderr and "LOG_LEVEL" in result.stderr
    assert "Traceback" not in result.stderr


def test_unreachable_redis_is_one_clear_line(tmp_path: Path) -> None:
    port = free_port()
    result = cli(
        ["run", "console"], tmp_path, env={"REDIS_URL": f"redis://127.0.0.1:{port}", "REDIS_TIMEOUT_SECONDS": "0.5"}
    )
    assert result.returncode == 1
    assert f"127.0.0.1:{port}" in result.stderr and "unreachable" in result.stderr and "Traceback" not in result.stderr


def test_check_reports_each_part(tmp_path: Path) -> None:
    result = cli(["check"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert "store: ok (embedded SQLite store" in result.stdout
    assert "model: offline" in result.stdout and "slack: not configured (set SLACK_BOT_TOKEN)" in result.stdout
    broken = cli(
        ["check"], tmp_path, env={"REDIS_URL": f"redis://127.0.0.1:{free_port()}", "REDIS_TIMEOUT_SECONDS": "0.5"}
    )
    assert broken.returncode == 1 and "store: UNREACHABLE" in broken.stdout


async def test_threads_list_show_and_clear(
    tmp_path: Path, redis_url: str, redis_client: Redis, key_prefix: str
) -> None:
    backend = RedisConnection.from_url(redis_url, key_prefix=key_prefix)
    await backend.store("user_U1_session_C1", "slack").add_messages([ChatMessage(role="user", text="hello slack")])
    await backend.store("user_U2_session_9", "discord").add_messages([ChatMessage(role="user", text="hello discord")])
    await backend.aclose()
    env = {"REDIS_URL": redis_url, "KEY_PREFIX": key_prefix}
    listed = cli(["threads", "list"], tmp_path, env=env)
    assert sorted(listed.stdout.splitlines()) == ["discord\tuser_U2_session_9", "slack\tuser_U1_session_C1"]
    only = cli(["threads", "list", "--namespace", "slack", "--match", "user_U1_*"], tmp_path, env=env)
    assert only.stdout.splitlines() == ["slack\tuser_U1_session_C1"]
    shown = cli(["threads", "show", "user_U1_session_C1", "--namespace", "slack"], tmp_path, env=env)
    assert "user: hello slack" in shown.stdout
    cleared = cli(["threads", "clear", "user_U1_session_C1", "--namespace", "slack"], tmp_path, env=env)
    assert cleared.returncode == 0
    assert await redis_client.exists(f"{key_prefix}:slack:{{user_U1_session_C1}}:messages") == 0
