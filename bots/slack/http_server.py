"""The HTTP-mode listener for Slack's Events API: aiohttp with limits a slow or idle client cannot outlast.

aiohttp's defaults keep an idle connection for 3630 s and wait for headers and bodies without end, so a
few hundred idle sockets (a slow-loris client) can pin the process. Here:
- keep-alive is `keepalive_seconds` (30 s; Slack reconnects cheaply), and aiohttp also closes a
  connection whose next request head is not complete within it;
- a new connection must deliver its first request head within `header_seconds`, and every request its
  body within `body_seconds` (else 408);
- at most `max_connections` are open at once: one more is closed as soon as it is accepted;
- bodies are capped by aiohttp's client_max_size (1 MiB; Slack's payloads are a few KB).
"""

from __future__ import annotations

__all__ = ["HttpLimits", "LimitedHttpServer"]

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

log = logging.getLogger(__name__)

# After an answer to a request whose body was not read (a 408), aiohttp reads and drops what still comes
# for this long before closing (its default: 10 s, a slot a slow client keeps).
_LINGER_SECONDS = 1.0
_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True, slots=True)
class HttpLimits:
    keepalive_seconds: float = 30.0
    header_seconds: float = 10.0
    body_seconds: float = 10.0
    max_connections: int = 1000


class _Connection(asyncio.Protocol):
    """One accepted connection: aiohttp's handler inside, counted and timed from outside."""

    def __init__(self, server: LimitedHttpServer, handler: RequestHandler) -> None:
        self._server = server
        self.handler = handler
        self.started = False  # a complete request head arrived
        self.transport: asyncio.BaseTransport | None = None
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self._server.opened(self)
        self._timer = asyncio.get_running_loop().call_later(self._server.limits.header_seconds, self._expire)
        self.handler.connection_made(transport)

    def _expire(self) -> None:
        if not self.started:
            self.handler.force_close()

    def data_received(self, data: bytes) -> None:
        self.handler.data_received(data)

    def eof_received(self) -> None:
        self.handler.eof_received()  # aiohttp's returns None: the transport closes on EOF

    def pause_writing(self) -> None:
        self.handler.pause_writing()

    def resume_writing(self) -> None:
        self.handler.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._server.closed(self)
        self.handler.connection_lost(exc)


class _Refused(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.close()


class LimitedHttpServer:
    """Serves `app` on host:port under `limits`; `start()` binds, `stop()` closes every connection."""

    def __init__(self, app: web.Application, *, host: str, port: int, limits: HttpLimits | None = None) -> None:
        self.limits = limits or HttpLimits()
        self._app = app
        self._host = host
        self._port = port
        self._open = 0
        self._connections: dict[asyncio.BaseTransport, _Connection] = {}
        self._refused = 0
        self._runner: web.AppRunner | None = None
        self._server: asyncio.Server | None = None
        app.middlewares.append(self._limit_request)  # before the runner freezes the app

    @property
    def open_connections(self) -> int:
        return self._open

    @property
    def addresses(self) -> list[tuple[str, int]]:
        if self._server is None:
            return []
        return [(str(sock.getsockname()[0]), int(sock.getsockname()[1])) for sock in self._server.sockets]

    async def start(self) -> None:
        """Raises: OSError when host:port cannot be bound."""
        runner = web.AppRunner(
            self._app, access_log=None, shutdown_timeout=5, keepalive_timeout=self.limits.keepalive_seconds,
            lingering_time=_LINGER_SECONDS,
        )  # fmt: skip
        await runner.setup()
        self._runner = runner
        try:
            self._server = await asyncio.get_running_loop().create_server(
                self._accept, self._host, self._port, reuse_address=True
            )
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()  # no new connections; the runner then closes the open ones
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    def _accept(self) -> asyncio.Protocol:
        assert self._runner is not None and self._runner.server is not None
        if self._open >= self.limits.max_connections:
            self._refused += 1
            if self._refused == 1 or self._refused % 1000 == 0:
                log.warning(
                    "slack http: %d connections open, refusing more (%d refused so far)",
                    self._open, self._refused, extra={"platform": "slack"},
                )  # fmt: skip
            return _Refused()
        self._open += 1
        return _Connection(self, self._runner.server())

    def opened(self, connection: _Connection) -> None:
        if connection.transport is not None:
            self._connections[connection.transport] = connection

    def closed(self, connection: _Connection) -> None:
        self._open -= 1
        if connection.transport is not None:
            self._connections.pop(connection.transport, None)

    @web.middleware
    async def _limit_request(self, request: web.Request, handler: _Handler) -> web.StreamResponse:
        connection = self._connections.get(request.transport) if request.transport is not None else None
        if connection is not None:
            connection.started = True
        try:
            async with asyncio.timeout(self.limits.body_seconds):
                await request.read()  # aiohttp keeps it: the handler reads it again from memory
        except TimeoutError:
            return web.Response(status=408, text="request body too slow", headers={"Connection": "close"})
        return await handler(request)
