"""Regenerate the README's settings table and .env.example from `Settings` (`make docs`)."""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from core.settings import env_example, settings_table  # noqa: E402


def main() -> None:
    readme = ROOT / "README.md"
    text = re.sub(
        r"<!-- settings-table:start -->.*<!-- settings-table:end -->",
        lambda _: f"<!-- settings-table:start -->\n{settings_table()}\n<!-- settings-table:end -->",
        readme.read_text(),
        flags=re.S,
    )
    readme.write_text(text)
    (ROOT / ".env.example").write_text(env_example())


if __name__ == "__main__":
    main()
