"""Placeholder replaced by the CLI work."""


def main() -> None:
    raise SystemExit(0)
