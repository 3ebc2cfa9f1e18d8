"""A TCP proxy on 127.0.0.1 that tests steer, to put faults between the gateway and Redis or the model.

    async with FaultProxy(target_port) as proxy:   # point the client at proxy.port
        proxy.latency_seconds = 3.0    # every chunk waits this long each way
        proxy.black_hole = True        # accept and read, never forward or answer
        await proxy.drop_connections() # cut every open connection (the client sees a reset)
        proxy.refuse = True            # close new connections at once
"""

from __future__ import annotations

import asyncio
import contextlib
from types import TracebackType
from typing import Self

__all__ = ["FaultProxy"]

_CHUNK = 65536


class FaultProxy:
    def __init__(self, target_port: int, target_host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self.latency_seconds = 0.0
        self.black_hole = False
        self.refuse = False
        self.port = 0
        self.connections = 0
        self._server: asyncio.Server | None = None
        self._pipes: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    async def __aenter__(self) -> Self:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._server is not None:
            self._server.close()
        await self.drop_connections()
        if self._server is not None:
            await self._server.wait_closed()

    def heal(self) -> None:
        self.latency_seconds, self.black_hole, self.refuse = 0.0, False, False

    async def drop_connections(self) -> None:
        for writer in list(self._writers):
            writer.transport.abort()
        for task in list(self._pipes):
            task.cancel()
        await asyncio.gather(*self._pipes, return_exceptions=True)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        if self.refuse:
            writer.transport.abort()
            return
        self._writers.add(writer)
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            self._writers.discard(writer)
            return
        self._writers.add(upstream_writer)
        for source, sink in ((reader, upstream_writer), (upstream_reader, writer)):
            task = asyncio.create_task(self._pipe(source, sink))
            self._pipes.add(task)
            task.add_done_callback(self._pipes.discard)

    async def _pipe(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        try:
            while chunk := await source.read(_CHUNK):
                if self.black_hole:
                    continue  # swallowed: the other side waits for an answer that never comes
                if self.latency_seconds:
                    await asyncio.sleep(self.latency_seconds)  # the injected fault itself
                sink.write(chunk)
                await sink.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            with contextlib.suppress(Exception):
                sink.close()
            self._writers.discard(sink)
