"""Structured logs: every line of a turn carries platform, event ID and thread ID.

Modules only call `logging.getLogger(__name__)`; `configure_logging` (called by the CLI's `main`)
installs the handler. Message text is logged at DEBUG only; secrets never: they are `SecretStr`, and
every line passes through a `Redactor` (URL credentials and query values, and the settings' secret values).
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any, TextIO

from core.redact import Redactor

__all__ = ["TurnFields", "configure_logging", "turn_context"]

_turn: ContextVar[Mapping[str, str] | None] = ContextVar("turn", default=None)
_RECORD_DEFAULTS = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}
TURN_KEYS = ("platform", "event_id", "thread_id")


@contextmanager
def turn_context(**fields: str) -> Iterator[None]:
    """Bind fields to every record logged inside the block (and in tasks it starts)."""
    token = _turn.set({**(_turn.get() or {}), **fields})
    try:
        yield
    finally:
        _turn.reset(token)


class TurnFields(logging.Filter):
    """Copies the current turn's fields onto every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in (_turn.get() or {}).items():
            record.__dict__.setdefault(key, value)
        return True


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in record.__dict__.items() if k not in _RECORD_DEFAULTS and not k.startswith("_")}


def _scrub(value: Any, redact: Redactor) -> Any:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {key: _scrub(item, redact) for key, item in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_scrub(item, redact) for item in value]
    if value is None or isinstance(value, bool | int | float):
        return value
    return redact(str(value))


class JsonFormatter(logging.Formatter):
    def __init__(self, *, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self._redact = Redactor(secrets)

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            **_extras(record),
        }
        if record.exc_info:
            line["traceback"] = self.formatException(record.exc_info)
        return json.dumps(_scrub(line, self._redact), ensure_ascii=False)


class TextFormatter(logging.Formatter):
    def __init__(self, *, secrets: Iterable[str] = ()) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")
        self._redact = Redactor(secrets)

    def format(self, record: logging.LogRecord) -> str:
        base = super().format(record)
        fields = " ".join(f"{k}={v}" for k, v in _extras(record).items())
        return self._redact(f"{base} [{fields}]" if fields else base)


def configure_logging(
    level: str = "INFO", fmt: str = "text", stream: TextIO | None = None, *, secrets: Iterable[str] = ()
) -> None:
    """Log to `stream` (stderr) at `level`; `secrets` are masked wherever they would appear."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter(secrets=secrets) if fmt == "json" else TextFormatter(secrets=secrets))
    handler.addFilter(TurnFields())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    # Library chatter at INFO (HTTP request lines) would drown the turn lines.
    for noisy in ("httpx", "httpx2", "openai", "mcp", "slack_bolt", "slack_sdk", "discord", "aiohttp.access"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLevelName(level)))
