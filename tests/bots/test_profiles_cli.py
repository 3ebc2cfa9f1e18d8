"""`chat-gateway profiles show` and a running gateway's SIGHUP reload, as real processes."""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.bots.test_cli import cli
from tests.fakes.openai_server import FakeOpenAI, Hang
from tests.fakes.slack_api import FakeSlack, im_message
from tests.support.processes import GatewayProcess, ProcessGroup
from tests.support.waiting import wait_until

SECRET = "profiles-signing-secret"
GOOD = """
defaults:
  temperature: 0.5
profiles:
  - name: support
    match: {platform: slack, channel: "C1*"}
    system_prompt: You are support.
    deny: [U9]
"""


def test_profiles_show_prints_each_resolved_value_and_where_it_came_from(tmp_path: Path) -> None:
    (tmp_path / "profiles.yaml").write_text(GOOD)
    env = {"PROFILES_FILE": "profiles.yaml", "OPENAI_MODEL": "env-model"}
    shown = cli(["profiles", "show", "--platform", "slack", "--channel", "C123", "--user", "U9"], tmp_path, env=env)
    assert shown.returncode == 0, shown.stderr
    lines = {line.split()[0]: line for line in shown.stdout.splitlines() if line.strip()}
    assert "support" in lines["matched"]
    assert lines["system_prompt"].split()[1:] == ["You", "are", "support.", "from", "profile", '"support"']
    assert lines["temperature"].split()[1:] == ["0.5", "from", "defaults"]
    assert lines["model"].split()[1:] == ["env-model", "from", "environment", "(OPENAI_MODEL)"]
    assert "user U9: NOT answered here" in shown.stdout
    elsewhere = cli(["profiles", "show", "--platform", "discord", "--channel", "C123"], tmp_path, env=env)
    assert "matched profile: (none" in elsewhere.stdout


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("profiles:\n  - name: s\n    match: {chanel: C1}\n", "field match.chanel: unknown key"),
        (
            "profiles:\n  - name: s\n    match: {channel: 'C[1'}\n",
            "field match.channel: bad glob 'C[1': '[' is never closed",
        ),
        (
            "profiles:\n  - name: s\n    rate_limit_per_minute: lots\n",
            "field rate_limit_per_minute: Input should be a valid integer (got str 'lots')",
        ),
    ],
)
def test_a_bad_file_is_one_line_and_exit_2_from_show_and_from_run(tmp_path: Path, text: str, line: str) -> None:
    (tmp_path / "bad.yaml").write_text(text)
    for args in (["profiles", "show", "--platform", "slack"], ["run", "console"]):
        result = cli(args, tmp_path, env={"PROFILES_FILE": "bad.yaml"})
        assert result.returncode == 2, result.stderr
        assert result.stderr == f'chat-gateway: bad.yaml: profile "s" (profiles[0]), {line}\n'  # the one line


async def test_sighup_reloads_profiles_without_dropping_the_turn_in_flight_and_keeps_them_on_a_bad_file(
    tmp_path: Path,
) -> None:
    path = tmp_path / "profiles.yaml"
    path.write_text("profiles:\n  - name: one\n    match: {}\n    system_prompt: First prompt.\n")
    async with FakeSlack(bot_user_id="UBOT", bot_id="BBOT", team_id="T1") as slack, FakeOpenAI() as model:
        env = {
            "OPENAI_BASE_URL": model.base_url, "SLACK_BOT_TOKEN": "xoxb-test", "SLACK_SIGNING_SECRET": SECRET,
            "SLACK_API_URL": slack.api_url, "RATE_LIMIT_PER_MINUTE": "0", "PROFILES_FILE": str(path),
        }  # fmt: skip
        async with ProcessGroup(tmp_path, ["slack"], env).running() as group:
            gateway = await group.start_ready("gateway")

            async def say(text: str) -> None:
                body = json.dumps(slack.event_callback(im_message(text, user="U1", channel="D1")))
                assert await gateway.post_slack_event(body.encode(), SECRET) == 200

            async def system_prompt_of_next_request() -> str:
                request = await asyncio.wait_for(model.received.get(), 15)
                return str(request.messages[0]["content"])

            model.script(Hang())
            await say("one")
            assert await system_prompt_of_next_request() == "First prompt."  # the turn is now in flight
            path.write_text("profiles:\n  - name: two\n    match: {}\n    system_prompt: Second prompt.\n")
            await reload(gateway, "profiles reloaded")
            model.release()
            await until(lambda: replies(slack) == ["echo: one"])
            await say("two")
            assert await system_prompt_of_next_request() == "Second prompt."
            await until(lambda: len(replies(slack)) == 2)

            path.write_text("profiles:\n  - name: three\n    match: {}\n    system_prmpt: typo\n")
            await reload(gateway, "profiles not reloaded")
            assert 'profile "three" (profiles[0]), field system_prmpt: unknown key' in gateway.log_tail()
            await say("three")
            assert await system_prompt_of_next_request() == "Second prompt."
            await until(lambda: replies(slack) == ["echo: one", "echo: two", "echo: three"])
            assert gateway.running


async def reload(gateway: GatewayProcess, line: str) -> None:
    seen = gateway.log_tail(100_000).count(line)
    gateway.proc.send_signal(signal.SIGHUP)
    await until(lambda: gateway.log_tail(100_000).count(line) > seen)


async def until(holds: Callable[[], bool], timeout: float = 15) -> None:
    async def check() -> bool:
        return holds()

    await wait_until(check, timeout=timeout, every=0.05)


def replies(slack: FakeSlack) -> list[str]:
    return [m.visible_text for m in slack.messages("D1") if m.bot_id]
