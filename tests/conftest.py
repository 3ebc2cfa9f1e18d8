"""Shared fixtures: a real redis-server per session, unique key prefixes per test, settings without `.env`."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest
from openai import AsyncOpenAI, DefaultAsyncHttpxClient
from redis.asyncio import Redis

from core.settings import Settings
from tests.fakes.openai_server import FakeOpenAI
from tests.fakes.slack_api import FakeSlack
from tests.support.redis_cluster import LocalCluster
from tests.support.redis_proc import RedisServer


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only loopback, ever: slack_sdk reads HTTP(S)_PROXY itself and ignores NO_PROXY."""
    for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """A real 3-primary, 3-replica Redis Cluster, shared by the session (started on first use)."""
    cluster = LocalCluster(tmp_path_factory.mktemp("cluster"))
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def redis_url(redis_server: RedisServer) -> str:
    return redis_server.url


@pytest.fixture
async def redis_client(redis_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
def key_prefix() -> str:
    """A prefix no other test uses, so tests share one Redis without FLUSHDB."""
    return f"t{uuid4().hex[:12]}"


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
async def fake_openai() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI() as fake:
        yield fake


@pytest.fixture
async def slack() -> AsyncIterator[FakeSlack]:
    """A fake Slack workspace T1 whose bot user is UBOT."""
    async with FakeSlack(bot_user_id="UBOT", bot_id="BBOT", team_id="T1") as fake:
        yield fake


def openai_client(fake: FakeOpenAI, *, max_retries: int = 0, timeout: float = 5.0) -> AsyncOpenAI:
    """The real SDK aimed at the fake; trust_env=False so no proxy setting can capture loopback traffic."""
    return AsyncOpenAI(
        api_key="sk-test",
        base_url=fake.base_url,
        max_retries=max_retries,
        timeout=timeout,
        http_client=DefaultAsyncHttpxClient(trust_env=False),
    )


def make_settings(**overrides: Any) -> Settings:
    # Context from the platform is on by default, but a test that wants the platform's history read into
    # an empty memory says so: otherwise every test of a first message would depend on what the fake holds.
    overrides.setdefault("context_from_platform", False)
    return Settings(_env_file=None, **overrides)  # type: ignore[call-arg]
