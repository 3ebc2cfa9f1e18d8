"""The README's settings table and .env.example are generated from Settings: they must not drift."""

from __future__ import annotations

from pathlib import Path

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
