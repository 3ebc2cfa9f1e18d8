"""What can be checked of the container without a container engine: lint, compose structure, the install."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


def test_dockerfile_passes_hadolint() -> None:
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    result = subprocess.run([hadolint, str(ROOT / "Dockerfile")], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_runs_unprivileged_with_healthcheck_and_entrypoint() -> None:
    lines = [line.strip() for line in (ROOT / "Dockerfile").read_text().splitlines()]
    runtime = lines[max(i for i, line in enumerate(lines) if line.startswith("FROM ")) :]
    assert any(line.startswith("USER ") and not line.endswith((" root", " 0")) for line in runtime)
    assert any(line.startswith("HEALTHCHECK ") for line in runtime)
    assert 'ENTRYPOINT ["chat-gateway"]' in runtime and 'CMD ["run", "slack", "discord"]' in runtime
    assert all(line.startswith("FROM python:3.11-slim") for line in lines if line.startswith("FROM "))


def compose() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return document


def test_compose_redis_persists_with_aof_and_a_password_on_a_named_volume() -> None:
    doc = compose()
    redis = doc["services"]["redis"]
    command = " ".join(redis["command"])
    assert "--appendonly yes" in command and "--appendfsync everysec" in command and "--requirepass" in command
    volume = redis["volumes"][0].split(":")[0]
    assert volume in doc["volumes"]
    assert redis["healthcheck"]["test"] and redis["restart"] == "unless-stopped"


def test_compose_gateway_starts_after_healthy_redis_and_reads_env() -> None:
    gateway = compose()["services"]["gateway"]
    assert gateway["depends_on"]["redis"]["condition"] == "service_healthy"
    assert gateway["env_file"] == ".env" and gateway["restart"] == "unless-stopped"
    assert gateway["environment"]["REDIS_URL"].startswith("redis://:${REDIS_PASSWORD}@redis:6379")
    assert {"3000:3000", "8080:8080"} <= set(gateway["ports"])


def build_stage(dockerfile: str) -> list[tuple[str, str]]:
    """The first stage's COPY and RUN instructions, continuation lines joined."""
    steps: list[tuple[str, str]] = []
    stages = 0
    for line in dockerfile.replace("\\\n", " ").splitlines():
        verb, _, rest = line.strip().partition(" ")
        stages += verb == "FROM"
        if stages == 1 and verb in ("COPY", "RUN"):
            steps.append((verb, rest))
    return steps


@pytest.mark.slow
def test_the_dockerfile_install_steps_build_a_working_command(tmp_path: Path) -> None:
    """Replays the build stage's COPY and RUN lines with its absolute paths moved under tmp_path."""
    root = tmp_path / "image"

    def moved(text: str) -> str:
        return re.sub(r"(?<![\w/])(/opt/venv|/src|/tmp/)", lambda m: f"{root}{m.group(1)}", text)

    for verb, rest in build_stage((ROOT / "Dockerfile").read_text()):
        if verb == "COPY":
            *sources, destination = shlex.split(rest)
            target = Path(moved(destination))
            for source in sources:
                path = ROOT / source
                if path.is_dir():
                    shutil.copytree(path, target / path.name if destination.endswith("/") else target)
                elif destination.endswith("/"):
                    target.mkdir(parents=True, exist_ok=True)
                    shutil.copy(path, target / path.name)
                else:
                    target.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy(path, target)
        else:
            command = shlex.split(moved(rest))
            if command[0] == "python":
                command[0] = sys.executable
            result = subprocess.run(command, capture_output=True, text=True, check=False, timeout=600)
            assert result.returncode == 0, f"RUN {rest}\n{result.stdout}\n{result.stderr}"
    help_text = subprocess.run(
        [str(root / "opt/venv/bin/chat-gateway"), "--help"], capture_output=True, text=True, check=False, timeout=60
    )
    assert help_text.returncode == 0 and "usage: chat-gateway" in help_text.stdout
    installed = subprocess.run(
        [str(root / "opt/venv/bin/pip"), "list", "--format=freeze"], capture_output=True, text=True, check=False
    ).stdout
    assert "pytest" not in installed and "mypy" not in installed  # the image carries no test tooling
