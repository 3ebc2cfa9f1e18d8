"""A TCP proxy on 127.0.0.1 that adds a fixed delay each way, as a network between the gateway and Redis would.

    async with DelayProxy(redis_port) as proxy:   # point the client at proxy.port
        proxy.delay_seconds = 0.025                 # every byte arrives 25 ms later, each way (RTT + 50 ms)
        proxy.requests                              # when each client -> server chunk reached the proxy

Unlike tests/support/tcp_proxy.py's FaultProxy (which sleeps before each chunk, so chunks on one
connection queue behind each other's delay), bytes are delayed, not serialised: two requests
pipelined on one connection 1 ms apart arrive 1 ms apart, one delay later. So a measured wait is
the number of dependent round trips times the delay, and requests in flight together cost one.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from types import TracebackType
from typing import Self

__all__ = ["DelayProxy"]

_CHUNK = 65536


class DelayProxy:
    def __init__(self, target_port: int, target_host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self.delay_seconds = 0.0
        self.port = 0
        self.requests: list[float] = []  # perf_counter() of every client -> server chunk, as it arrived
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
        for writer in list(self._writers):
            writer.transport.abort()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    def requests_between(self, start: float, end: float) -> int:
        """Client -> server chunks that reached the proxy in [start, end) (perf_counter times)."""
        return sum(1 for t in self.requests if start <= t < end)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        self._writers.update((writer, upstream_writer))
        for source, sink, upstream in ((reader, upstream_writer, True), (upstream_reader, writer, False)):
            queue: asyncio.Queue[tuple[float, bytes] | None] = asyncio.Queue()
            for job in (self._read(source, queue, upstream), self._write(queue, sink)):
                task = asyncio.create_task(job)
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

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
            with contextlib.suppress(Exception):
                sink.close()
            self._writers.discard(sink)
