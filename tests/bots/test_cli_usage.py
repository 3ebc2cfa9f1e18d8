"""`chat-gateway usage`: a plain aligned table of tokens per user, channel or workspace, from Redis or the
embedded SQLite file, with a cost column when MODEL_PRICES_FILE is set."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from core.store import RedisConnection, SqliteConnection
from core.store.factory import EMBEDDED_FILE
from core.store.usage import Subject
from core.usage.budgets import day_of, last_days
from core.usage.meter import TokenCount
from tests.bots.test_cli import cli


async def seed(backend: RedisConnection | SqliteConnection) -> None:
    ledger = backend.usage()
    today, ten_days_ago = day_of(), last_days(11)[0]
    c1, t1 = Subject("channel", "slack", "C1"), Subject("workspace", "slack", "T1")
    for user, model, tokens in (
        ("U1", "gpt-4o-mini", TokenCount(1_000_000, 200_000)), ("U2", "gpt-4o-mini", TokenCount(3_000, 1_000, 500)),
        ("U3", "local-llama", TokenCount(50, 50)), ("U1", "gpt-4o", TokenCount(1_000, 0)),
    ):  # fmt: skip
        await ledger.settle(today, [Subject("user", "slack", user), c1, t1], model, tokens, [])
    await ledger.settle(ten_days_ago, [Subject("user", "slack", "U9")], "gpt-4o", TokenCount(9_999_999, 0), [])
    await backend.aclose()


@pytest.fixture(params=["redis", "sqlite"])
async def env(request: pytest.FixtureRequest, redis_url: str, key_prefix: str, tmp_path: Path) -> dict[str, str]:
    if request.param == "redis":
        await seed(RedisConnection.from_url(redis_url, key_prefix=key_prefix))
        return {"REDIS_URL": redis_url, "KEY_PREFIX": key_prefix}
    await seed(SqliteConnection(tmp_path / "data" / EMBEDDED_FILE))
    return {"DATA_DIR": str(tmp_path / "data")}


def test_the_table_lists_the_top_users_of_the_last_days(tmp_path: Path, env: dict[str, str]) -> None:
    shown = cli(["usage", "--by", "user", "--days", "7", "--top", "2"], tmp_path, env=env)
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert lines[0].startswith("Tokens by user, ") and lines[0].endswith(f"to {day_of()} (UTC):")
    assert lines[1].split() == ["PLATFORM", "USER", "TURNS", "PROMPT", "COMPLETION", "TOTAL", "ESTIMATED"]
    assert lines[2].split() == ["slack", "U1", "2", "1,001,000", "200,000", "1,201,000", "0"]
    assert lines[3].split() == ["slack", "U2", "1", "3,000", "1,000", "4,000", "500"]
    assert len(lines) == 4  # --top 2; U9's tokens are older than 7 days
    assert len({len(line) for line in lines[1:3]}) == 1  # aligned: the widest row sets every column


def test_a_price_table_adds_a_cost_column(tmp_path: Path, env: dict[str, str]) -> None:
    prices = tmp_path / "prices.yaml"
    prices.write_text("gpt-4o-mini: {prompt: 0.15, completion: 0.60}\ngpt-4o: {prompt: 2.50, completion: 10}\n")
    shown = cli(["usage", "--by", "channel", "--days", "1"], tmp_path, env={**env, "MODEL_PRICES_FILE": str(prices)})
    lines = shown.stdout.splitlines()
    assert lines[1].split()[-1] == "COST_USD" and lines[1].split()[1] == "CHANNEL"
    assert lines[2].split()[:2] == ["slack", "C1"] and lines[2].split()[-1] == "?"  # local-llama has no price
    json_prices = tmp_path / "prices.json"
    json_prices.write_text(json.dumps({m: {"prompt": 0.15, "completion": 0.6} for m in ("gpt-4o-mini", "gpt-4o")}))
    users = cli(["usage", "--top", "2"], tmp_path, env={**env, "MODEL_PRICES_FILE": str(json_prices)})
    rows = users.stdout.splitlines()
    # U1: 1,001,000 prompt at 0.15 + 200,000 completion at 0.60 per million.
    assert rows[2].split()[-1] == f"{(1_001_000 * 0.15 + 200_000 * 0.6) / 1e6:.4f}"


def test_a_bad_price_file_is_one_line_and_exit_2(tmp_path: Path, env: dict[str, str]) -> None:
    prices = tmp_path / "prices.yaml"
    prices.write_text("gpt-4o: {prompt: 2.5, output: 10}\n")
    shown = cli(["usage"], tmp_path, env={**env, "MODEL_PRICES_FILE": str(prices)})
    assert shown.returncode == 2
    assert shown.stderr.strip().splitlines() == [
        f"chat-gateway: MODEL_PRICES_FILE {prices}: gpt-4o.completion: Field required"
    ]


def test_no_usage_says_so(tmp_path: Path, redis_url: str, key_prefix: str) -> None:
    shown = cli(["usage", "--by", "workspace"], tmp_path, env={"REDIS_URL": redis_url, "KEY_PREFIX": key_prefix})
    assert shown.returncode == 0 and shown.stdout.startswith("No tokens used ")
