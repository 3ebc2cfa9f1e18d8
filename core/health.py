"""Liveness, readiness and metrics over HTTP, on HEALTH_PORT, apart from Slack's PORT so probes work in every mode.

/healthz: the process answers. /readyz: the store answers and every adapter is connected (503 with
JSON reasons otherwise). /metrics: Prometheus text format.
"""

from __future__ import annotations

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
    ) -> None:
        self._backend = backend
        self._metrics = metrics
        self._adapters = adapters
        self._host = host
        self.port = port
        self._runner: web.AppRunner | None = None

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
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _healthz(self, _: web.Request) -> web.Response:
        return web.json_response({"status": "alive"})

    async def _readyz(self, _: web.Request) -> web.Response:
        reasons = [] if await self._backend.ping() else [f"store unreachable ({self._backend.kind})"]
        reasons += [f"{a.name} not connected" for a in self._adapters if not a.connected]
        if reasons:
            return web.json_response({"status": "not ready", "reasons": reasons}, status=503)
        return web.json_response({"status": "ready", "adapters": [a.name for a in self._adapters]})

    async def _metrics_page(self, _: web.Request) -> web.Response:
        response = web.Response(body=self._metrics.render())
        response.content_type = CONTENT_TYPE_LATEST.split(";")[0]
        return response
