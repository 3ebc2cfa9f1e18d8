"""A TOOLS_MODULE for the tests: what becomes a tool and what does not."""

from __future__ import annotations

from os.path import join  # imported: not one of this module's tools
from typing import Annotated, Literal

from pydantic import Field

from core.tools import requires_approval


def weather(city: Annotated[str, Field(description="City name")], unit: Literal["C", "F"] = "C") -> str:
    """Today's weather in a city."""
    return f"{city}: 21 {unit}, sunny"


async def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@requires_approval
def wipe(target: str) -> str:
    """Delete everything at target."""
    return f"wiped {target}"


def broken() -> str:
    """Always raises."""
    raise RuntimeError("kaboom")


def untyped(x):  # type: ignore[no-untyped-def]  # skipped: a parameter without a type has no schema
    return x


def _private(x: int) -> int:
    return x


PATH_JOIN = join
