"""The README's settings table and .env.example are generated from Settings: they must not drift."""

from __future__ import annotations

from pathlib import Path

from bench.redis_server import redis_args
from core.settings import env_example, settings_table

ROOT = Path(__file__).resolve().parents[2]


def test_readme_settings_table_matches_settings() -> None:
    readme = (ROOT / "README.md").read_text()
    table = readme.split("<!-- settings-table:start -->\n")[1].split("\n<!-- settings-table:end -->")[0]
    assert table == settings_table(), "run `make docs`"


def test_env_example_lists_every_setting() -> None:
    assert (ROOT / ".env.example").read_text().strip() == env_example().strip()


def test_readme_starts_with_the_two_commands() -> None:
    head = (ROOT / "README.md").read_text().split("\n## ")[0]
    assert "make run" in head and "make test" in head


def test_readme_states_durability_plainly_and_how_to_back_up() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "never lost" not in readme  # AOF everysec can lose about a second of acknowledged writes
    durability = readme.split("## Durability")[1].split("\n## ")[0]
    assert "appendfsync everysec" in durability and "about a second" in durability
    assert "appendfsync always" in durability and "turns/s" in durability
    assert "BGREWRITEAOF" in durability and "appendonlydir" in durability and "aof_rewrite_in_progress" in durability


def test_compose_offers_appendfsync_always_as_a_commented_option_with_its_cost() -> None:
    lines = (ROOT / "docker-compose.yml").read_text().splitlines()
    always = [line for line in lines if line.strip().startswith("#") and "always" in line]
    assert always and any("turns/s" in line for line in always)


def test_the_store_bench_can_run_redis_with_either_fsync_policy() -> None:
    assert redis_args("off") == []
    assert redis_args("always") == ["--appendonly", "yes", "--appendfsync", "always"]
    assert redis_args("everysec") == ["--appendonly", "yes", "--appendfsync", "everysec"]
