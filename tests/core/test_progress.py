"""Progress off the critical path: a slow or failing edit never holds the turn, only the newest text is sent."""

from __future__ import annotations

import asyncio

from core.progress import ProgressPump


class BlockingSend:
    def __init__(self) -> None:
        self.sent: list[str] = []
        self.started = asyncio.Event()
        self.release = asyncio.Event()
        self.got: dict[str, asyncio.Event] = {}

    async def __call__(self, text: str) -> None:
        self.started.set()
        await self.release.wait()
        self.sent.append(text)
        self.got.setdefault(text, asyncio.Event()).set()


async def test_a_blocked_edit_never_blocks_the_model() -> None:
    send = BlockingSend()
    pump = ProgressPump(send, 0)
    await pump.update("a")
    await asyncio.wait_for(send.started.wait(), 5)
    async with asyncio.timeout(1):  # the edit hangs; updates return at once anyway
        for text in ("ab", "abc", "abcd"):
            await pump.update(text)
    send.release.set()
    await asyncio.wait_for(send.got.setdefault("abcd", asyncio.Event()).wait(), 5)
    await pump.close()
    assert send.sent == ["a", "abcd"]  # the newest text, not each one


async def test_close_lets_an_edit_in_flight_finish() -> None:
    send = BlockingSend()
    pump = ProgressPump(send, 0)
    await pump.update("a")
    await asyncio.wait_for(send.started.wait(), 5)
    closing = asyncio.create_task(pump.close())
    await asyncio.sleep(0)
    assert not closing.done()
    send.release.set()
    await asyncio.wait_for(closing, 5)
    assert send.sent == ["a"]
    await pump.update("late")  # after close, nothing more is sent
    assert send.sent == ["a"]


async def test_a_failing_edit_stops_previews_without_raising() -> None:
    calls: list[str] = []
    failed = asyncio.Event()

    async def send(text: str) -> None:
        calls.append(text)
        failed.set()
        raise RuntimeError("platform refused")

    pump = ProgressPump(send, 0)
    await pump.update("a")
    await asyncio.wait_for(failed.wait(), 5)
    await pump.update("ab")
    await pump.close()
    assert calls == ["a"]
