"""TCP proxies on 127.0.0.1 between the gateway and Redis or the model: faults for tests, delay for benchmarks.

    async with FaultProxy(target_port) as proxy:   # point the client at proxy.port
        proxy.latency_seconds = 3.0    # every chunk waits this long each way
        proxy.black_hole = True        # accept and read, never forward or answer
        await proxy.drop_connections() # cut every open connection (the client sees a reset)
        proxy.refuse = True            # close new connections at once

    async with DelayProxy(redis_port) as proxy:    # bench/e2e_bench.py
        proxy.delay_seconds = 0.025    # every byte arrives 25 ms later, each way (RTT + 50 ms)
        proxy.requests                 # when each client -> server chunk reached the proxy

FaultProxy sleeps before each chunk, so chunks on one connection queue behind each other's delay.
DelayProxy delays bytes without serialising them: two requests pipelined on one connection 1 ms
apart arrive 1 ms apart, one delay later. So a measured wait is the number of dependent round trips
times the delay, and requests in flight together cost one.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Coroutine
from types import TracebackType
from typing import Any, Self

__all__ = ["DelayProxy", "FaultProxy"]

_CHUNK = 65536


class _LoopbackProxy:
    """Listens on a free loopback port and forwards each connection to `target`; subclasses move the bytes."""

    def __init__(self, target_port: int, target_host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self.port = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
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

    async def drop_connections(self) -> None:
        """Cut every open connection: both sides see a reset."""
        for writer in list(self._writers):
            writer.transport.abort()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            self._writers.discard(writer)
            return
        self._writers.add(upstream_writer)
        self._forward(reader, upstream_writer, upstream=True)
        self._forward(upstream_reader, writer, upstream=False)

    def _forward(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter, *, upstream: bool) -> None:
        raise NotImplementedError

    def _spawn(self, job: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(job)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _closed(self, sink: asyncio.StreamWriter) -> None:
        with contextlib.suppress(Exception):
            sink.close()
        self._writers.discard(sink)


class FaultProxy(_LoopbackProxy):
    def __init__(self, target_port: int, target_host: str = "127.0.0.1") -> None:
        super().__init__(target_port, target_host)
        self.latency_seconds = 0.0
        self.black_hole = False
        self.refuse = False
        self.connections = 0

    def heal(self) -> None:
        self.latency_seconds, self.black_hole, self.refuse = 0.0, False, False

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        if self.refuse:
            writer.transport.abort()
            return
        await super()._accept(reader, writer)

    def _forward(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter, *, upstream: bool) -> None:
        self._spawn(self._pipe(source, sink))

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
            self._closed(sink)


class DelayProxy(_LoopbackProxy):
    def __init__(self, target_port: int, target_host: str = "127.0.0.1") -> None:
        super().__init__(target_port, target_host)
        self.delay_seconds = 0.0
        self.requests: list[float] = []  # perf_counter() of every client -> server chunk, as it arrived

    def requests_between(self, start: float, end: float) -> int:
        """Client -> server chunks that reached the proxy in [start, end) (perf_counter times)."""
        return sum(1 for t in self.requests if start <= t < end)

    def _forward(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter, *, upstream: bool) -> None:
        queue: asyncio.Queue[tuple[float, bytes] | None] = asyncio.Queue()
        self._spawn(self._read(source, queue, upstream))
        self._spawn(self._write(queue, sink))

    async def _read(self, source: asyncio.StreamReader, queue: asyncio.Queue[tuple[float, bytes] | None],
                    upstream: bool) -> None:  # fmt: skip
        try:
            while chunk := await source.read(_CHUNK):
                if upstream:
                    self.requests.append(time.perf_counter())
                queue.put_nowait((time.monotonic() + self.delay_seconds, chunk))
        except (ConnectionError, OSError):
            pass
        finally:
            queue.put_nowait(None)

    async def _write(self, queue: asyncio.Queue[tuple[float, bytes] | None], sink: asyncio.StreamWriter) -> None:
        try:
            while (item := await queue.get()) is not None:
                due, chunk = item
                wait = due - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)  # the injected network delay itself
                sink.write(chunk)
                await sink.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            self._closed(sink)
