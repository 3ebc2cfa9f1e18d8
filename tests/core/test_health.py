"""The health server: where it listens by default, and what a probe costs the store."""

from __future__ import annotations

from pathlib import Path

import yaml

from core.gateway import Gateway
from core.health import HealthServer
from core.llm import OfflineChatModel
from core.store import SqliteConnection
from tests.conftest import make_settings

ROOT = Path(__file__).resolve().parents[2]


def test_health_host_defaults_to_loopback_and_only_the_container_opens_it() -> None:
    assert make_settings().health_host == "127.0.0.1"
    dockerfile = (ROOT / "Dockerfile").read_text()
    env_line = next(line for line in dockerfile.splitlines() if line.startswith("ENV ") and "HEALTH_PORT" in line)
    assert "HEALTH_HOST=0.0.0.0" in env_line
    gateway = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]["gateway"]
    assert gateway["environment"]["HEALTH_HOST"] == "0.0.0.0"
    assert "`HEALTH_HOST`" in (ROOT / "README.md").read_text().split("## Operations")[1]


async def test_the_health_server_listens_on_loopback_by_default(tmp_path: Path) -> None:
    backend = SqliteConnection(tmp_path / "h.sqlite3")
    server = HealthServer(
        backend=backend, metrics=Gateway(make_settings(), backend, OfflineChatModel()).metrics, adapters=[], port=0
    )
    await server.start()
    try:
        assert [address[0] for address in server.addresses] == ["127.0.0.1"]
    finally:
        await server.stop()
        await backend.aclose()
