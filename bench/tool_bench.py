"""Tool-call overhead: one answer through `Gateway.answer` without tools, with one round of a Python tool,
and with one round of an MCP tool over stdio (the test server in tests/fakes/mcp_server.py).

The model is the fake OpenAI server on 127.0.0.1, through the real `openai` SDK, in this process: a
turn with a tool round makes two model calls instead of one, so "per round" below is what one round
adds to an answer: the second HTTP call, the tool call, and the longer request. Turns run one after
the other (no queueing), each with an empty history; each mode is run streamed and not.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core.gateway import Gateway
from core.llm import OpenAIChatModel
from core.settings import Settings
from core.store import open_backend
from core.tools import PythonTools, Toolbox, open_toolbox
from core.turns import IncomingMessage
from tests.fakes.openai_server import Behaviour, FakeOpenAI, Reply, ToolCalls
from tests.support.mcp import stdio_entry, write_config


def weather(city: str) -> str:
    """Today's weather in a city."""
    return f"{city}: 21 C, sunny"


async def run_turns(
    gateway: Gateway, fake: FakeOpenAI, script: Callable[[], list[Behaviour]], turns: int, streamed: bool
) -> list[float]:
    shown: list[str] = []

    async def on_text(text: str) -> None:
        shown.append(text)

    progress: Callable[[str], Awaitable[None]] | None = on_text if streamed else None
    seconds: list[float] = []
    for n in range(turns):
        fake.script(*script())
        incoming = IncomingMessage(platform="bench", event_id=f"E{n}", user_id="U1", channel_id="C1", text="hi")
        started = time.perf_counter()
        answer = await gateway.answer(incoming, [], on_text=progress)
        seconds.append(time.perf_counter() - started)
        assert answer.reply.kind == "answer" and answer.reply.text == "done", answer.reply
    return seconds


def row(name: str, streamed: bool, seconds: list[float], plain: float | None) -> str:
    ordered = sorted(seconds)
    p50 = statistics.median(ordered) * 1000
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000
    extra = f"{p50 - plain:8.2f}" if plain is not None else "       —"
    return f"| {name:<24} | {'yes' if streamed else 'no':<8} | {p50:7.2f} | {p99:7.2f} | {extra} |"


async def main(turns: int) -> None:
    data = Path(tempfile.mkdtemp(prefix="tool-bench-"))
    config = write_config(data / "mcp.json", {"orders": stdio_entry(only="lookup_order")})
    async with FakeOpenAI() as fake:
        settings = Settings(_env_file=None, data_dir=data, mcp_config=config)  # type: ignore[call-arg]
        backend = open_backend(settings)
        model = OpenAIChatModel("gpt-4o-mini", base_url=fake.base_url, max_retries=0, max_reply_tokens=1024)
        mcp = await open_toolbox(settings)
        cases: list[tuple[str, Toolbox | None, Callable[[], list[Behaviour]]]] = [
            ("no tools", None, lambda: [Reply("done")]),
            ("python tool, 1 round", Toolbox([PythonTools({"weather": weather})]),
             lambda: [ToolCalls(("weather", {"city": "Oslo"})), Reply("done")]),
            ("MCP stdio tool, 1 round", mcp, lambda: [ToolCalls(("lookup_order", {"order_id": "7"})), Reply("done")]),
        ]  # fmt: skip
        print(f"{turns} answers per row, one at a time; model = fake OpenAI server on loopback via the openai SDK\n")
        print("| answer                   | streamed | p50 ms  | p99 ms  | +p50 ms per round |")
        print("|---|---|---|---|---|")
        try:
            for streamed in (False, True):
                plain: float | None = None
                for name, tools, script in cases:
                    gateway = Gateway(settings, backend, model, tools=tools)
                    await run_turns(gateway, fake, script, max(turns // 10, 5), streamed)  # warm up
                    seconds = await run_turns(gateway, fake, script, turns, streamed)
                    print(row(name, streamed, seconds, plain))
                    plain = plain if plain is not None else statistics.median(seconds) * 1000
        finally:
            await mcp.aclose()
            await model.aclose()
            await backend.aclose()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=300)
    asyncio.run(main(parser.parse_args().turns))
