"""What the CLI needs from every platform adapter."""

from __future__ import annotations

from typing import Protocol

__all__ = ["Adapter"]


class Adapter(Protocol):
    """A platform connection on the shared gateway. Constructors do no I/O; `run` does it all.

    `run()` connects, serves until cancelled, and closes its platform connections on the way out
    (cancellation included). Missing or rejected credentials raise `core.errors.ConfigError` with
    one line naming what to set.
    """

    name: str

    @property
    def connected(self) -> bool:
        """True while the platform connection is up (for /readyz)."""
        ...

    async def run(self) -> None: ...
