"""The real-model tier: llama.cpp's server with SmolLM2-135M-Instruct (scripts/llama_server.py), started
once per session, and the real openai SDK through our model port against it.

`make test-real-model` builds the server into the venv first; `make test` deselects these tests.
Between the SDK and the server sits a `WireTap` (an httpx transport): it records every chat request's
JSON and the text the server streamed back, and can SIGKILL a server once its first text has passed.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx2 as httpx  # the HTTP client the openai SDK is built on here
import pytest
from openai import AsyncOpenAI, DefaultAsyncHttpxClient

from core.llm import OpenAIChatModel
from scripts.llama_server import MODEL_ALIAS, LlamaServer
from tests.slack.conftest import start_slack  # noqa: F401 - the Slack rig, a fixture for the Slack turn

_TEXT = re.compile(rb'"content":\s*"[^"]')


@dataclass
class Exchange:
    """One chat completion on the wire: what we sent, the status, the text the server sent back."""

    request: dict[str, Any]
    status: int = 0
    text: str = ""

    @property
    def messages(self) -> list[dict[str, Any]]:
        messages: list[dict[str, Any]] = self.request["messages"]
        return messages


@dataclass
class WireTap(httpx.AsyncBaseTransport):
    kill: LlamaServer | None = None  # SIGKILLed right after the first bytes that carry text
    exchanges: list[Exchange] = field(default_factory=list)
    killed: bool = False
    _inner: httpx.AsyncHTTPTransport = field(default_factory=lambda: httpx.AsyncHTTPTransport(trust_env=False))

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if not request.url.path.endswith("/chat/completions"):
            return await self._inner.handle_async_request(request)
        exchange = Exchange(json.loads(request.content))
        self.exchanges.append(exchange)
        response = await self._inner.handle_async_request(request)
        exchange.status = response.status_code
        return httpx.Response(
            response.status_code,
            headers=response.headers,
            stream=_Tapped(response.stream, exchange, self),
            extensions=response.extensions,
        )

    async def aclose(self) -> None:
        await self._inner.aclose()


class _Tapped(httpx.AsyncByteStream):
    def __init__(self, inner: Any, exchange: Exchange, tap: WireTap) -> None:
        self._inner = inner
        self._exchange = exchange
        self._tap = tap
        self._buffer = b""

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._inner:
            self._read(chunk)
            yield chunk
            if self._tap.kill is not None and not self._tap.killed and _TEXT.search(chunk):
                self._tap.kill.kill()
                self._tap.killed = True

    def _read(self, chunk: bytes) -> None:
        self._buffer = (self._buffer + chunk).replace(b"\r\n", b"\n")  # sse-starlette ends lines with CRLF
        *events, self._buffer = self._buffer.split(b"\n\n")
        for event in events:
            for line in event.splitlines():
                if line.startswith(b"data: ") and line != b"data: [DONE]":
                    body = json.loads(line[6:])
                    for choice in body.get("choices") or ():
                        self._exchange.text += (choice.get("delta") or {}).get("content") or ""

    async def aclose(self) -> None:
        await self._inner.aclose()


def real_model(
    server: LlamaServer, tap: WireTap | None = None, *, timeout: float = 90.0, max_retries: int = 0
) -> OpenAIChatModel:
    """Our model port on the real SDK, aimed at `server` through `tap`; no retries unless asked, no proxy."""
    client = AsyncOpenAI(
        api_key="local",
        base_url=server.base_url,
        max_retries=max_retries,
        timeout=timeout,
        http_client=DefaultAsyncHttpxClient(transport=tap or WireTap()),
    )
    return OpenAIChatModel(MODEL_ALIAS, async_client=client)


@pytest.fixture(scope="session")
def llama_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlamaServer]:
    with LlamaServer(log_path=tmp_path_factory.mktemp("llama") / "server.log") as server:
        yield server


@pytest.fixture
def doomed_server(tmp_path: Path) -> Iterator[LlamaServer]:
    """A server of this test's own, for a test that kills it."""
    with LlamaServer(log_path=tmp_path / "doomed-server.log") as server:
        yield server
