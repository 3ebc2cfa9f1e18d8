"""Liveness, readiness and metrics over HTTP, on HEALTH_PORT, apart from Slack's PORT so probes work in every mode.

/healthz: the process answers. /readyz: the store answers and every adapter is connected (503 with
JSON reasons otherwise). /metrics: Prometheus text format.

The store's answer to /readyz is cached for `ready_cache_seconds` (1 s), and probes that arrive while
it is being asked wait for that one PING: a flood of probes costs the store at most one PING a second,
on the pool that user turns share.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Protocol

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from core.metrics import Metrics
from core.store.base import MemoryBackend

__all__ = ["HealthServer"]


class _Connected(Protocol):
    name: str

    @property
    def connected(self) -> bool: ...


class HealthServer:
    """Owns its aiohttp runner; `start()` binds, `stop()` closes. Port 0 binds a free port (`port` tells which)."""

    def __init__(
        self,
        *,
        backend: MemoryBackend,
        metrics: Metrics,
        adapters: Sequence[_Connected],
        host: str = "127.0.0.1",  # HEALTH_HOST; the image sets 0.0.0.0, where probes come from outside
        port: int = 8080,
        ready_cache_seconds: float = 1.0,
    ) -> None:
        self._backend = backend
        self._metrics = metrics
        self._adapters = adapters
        self._host = host
        self.port = port
        self._runner: web.AppRunner | None = None
        self._cache_seconds = ready_cache_seconds
        self._store_ok = False
        self._checked_at = float("-inf")  # monotonic
        self._checking: asyncio.Task[bool] | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/metrics", self._metrics_page)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self.port)
        await site.start()
        self.port = int(self.addresses[0][1])  # the port actually bound (HEALTH_PORT may be 0)

    @property
    def addresses(self) -> list[tuple[str, int]]:
        """The (host, port) pairs it listens on; empty before `start()`."""
        if self._runner is None:
            return []
        return [(str(address[0]), int(address[1])) for address in self._runner.addresses]

    async def stop(self) -> None:
        if self._checking is not None:
            self._checking.cancel()
            await asyncio.gather(self._checking, return_exceptions=True)
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _healthz(self, _: web.Request) -> web.Response:
        return web.json_response({"status": "alive"})

    async def _store_reachable(self) -> bool:
        if time.monotonic() - self._checked_at < self._cache_seconds:
            return self._store_ok
        if self._checking is None:  # the first probe asks; the others wait for its answer
            self._checking = asyncio.create_task(self._ping(), name="readyz-ping")
        return await asyncio.shield(self._checking)

    async def _ping(self) -> bool:
        try:
            self._store_ok = await self._backend.ping()
            self._checked_at = time.monotonic()
            return self._store_ok
        finally:
            self._checking = None

    async def _readyz(self, _: web.Request) -> web.Response:
        reasons = [] if await self._store_reachable() else [f"store unreachable ({self._backend.kind})"]
        reasons += [f"{a.name} not connected" for a in self._adapters if not a.connected]
        if reasons:
            return web.json_response({"status": "not ready", "reasons": reasons}, status=503)
        return web.json_response({"status": "ready", "adapters": [a.name for a in self._adapters]})

    async def _metrics_page(self, _: web.Request) -> web.Response:
        response = web.Response(body=self._metrics.render())
        response.content_type = CONTENT_TYPE_LATEST.split(";")[0]
        return response
