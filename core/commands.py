"""Commands a user can type instead of a message, on every platform: reset, help, memory, usage.

`admin usage` is one too, but only for ADMINS: the gateway treats it as an ordinary message from anyone else.
"""

from __future__ import annotations

import re
from typing import Literal

__all__ = ["Command", "describe_duration", "help_text", "parse_command"]

Command = Literal["reset", "help", "memory", "usage", "admin usage"]
_COMMAND = re.compile(r"^[!/]?(reset|help|memory|usage|admin\s+usage)[.!?]*$", re.IGNORECASE)


def parse_command(text: str) -> Command | None:
    """The command when the whole message is one (`reset`, `!reset`, `/reset`, `Reset.`), else None."""
    match = _COMMAND.fullmatch(text.strip())
    return " ".join(match.group(1).lower().split()) if match else None  # type: ignore[return-value]  # the regex admits only Command values


def describe_duration(seconds: int) -> str:
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size:
            count = round(seconds / size)
            return f"{count} {unit}{'' if count == 1 else 's'}"
    return f"{seconds} second{'' if seconds == 1 else 's'}"


def help_text(max_messages: int | None, ttl_seconds: int | None) -> str:
    keep = f"the last {max_messages} messages" if max_messages else "every message"
    forget = f"after {describe_duration(ttl_seconds)} without activity" if ttl_seconds else "only when you reset"
    return (
        "I'm an AI assistant that remembers this conversation.\n"
        f"I keep {keep} and forget them {forget}.\n"
        "Commands: `reset` forgets our conversation here, `memory` shows what I keep, `usage` shows the tokens "
        "you used, `help` shows this."
    )
