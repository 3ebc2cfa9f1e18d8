"""The core's test runtimes: a gateway and its delivery runner on Redis and on the embedded store, talking to the
fake OpenAI server; a test module changes what every runtime of it gets by overriding `runtime_defaults`."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from core.llm import OpenAIChatModel
from tests.conftest import make_settings, openai_client
from tests.fakes.openai_server import FakeOpenAI
from tests.support.delivery import Runtime, start_runtime, stop_runtime

RuntimeFactory = Callable[..., Awaitable[Runtime]]


@pytest.fixture
def runtime_defaults() -> dict[str, Any]:
    """Settings every runtime of the module starts with (its own overrides win)."""
    return {}


@pytest.fixture(params=["redis", "sqlite"])
async def runtime_factory(
    request: pytest.FixtureRequest,
    redis_url: str,
    key_prefix: str,
    tmp_path: Path,
    fake_openai: FakeOpenAI,
    runtime_defaults: dict[str, Any],
) -> AsyncIterator[RuntimeFactory]:
    """`await runtime_factory(**settings)`: a started runtime, stopped after the test; `client_timeout` is the
    OpenAI client's."""
    started: list[Runtime] = []

    async def make(**overrides: Any) -> Runtime:
        timeout = overrides.pop("client_timeout", 5.0)
        settings = make_settings(
            redis_url=redis_url if request.param == "redis" else None, data_dir=tmp_path / "data",
            key_prefix=key_prefix, **{**runtime_defaults, **overrides},
        )  # fmt: skip
        model = OpenAIChatModel("fake", async_client=openai_client(fake_openai, timeout=timeout))
        runtime = await start_runtime(settings, model)
        started.append(runtime)
        return runtime

    yield make
    for runtime in started:
        await stop_runtime(runtime)
