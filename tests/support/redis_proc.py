"""Real redis-server processes for tests: free loopback ports, temp dirs, readiness by log line."""

from __future__ import annotations

import shutil
import socket
import subprocess
import threading
from collections.abc import Sequence
from pathlib import Path

__all__ = ["RedisServer", "free_port"]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisServer:
    """One redis-server on 127.0.0.1; `start()` returns once it logs that it accepts connections."""

    def __init__(self, directory: Path, *, port: int | None = None, args: Sequence[str] = ()) -> None:
        if shutil.which("redis-server") is None:
            raise RuntimeError("redis-server is not installed: run `make test`, which installs it")
        self.directory = directory
        self.port = port or free_port()
        self.args = list(args)
        self.socket_path = directory / "redis.sock"
        self.proc: subprocess.Popen[str] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 15) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        cmd = [
            "redis-server", "--bind", "127.0.0.1", "--port", str(self.port), "--dir", str(self.directory),
            "--save", "", "--unixsocket", str(self.socket_path), "--unixsocketperm", "700",
            "--protected-mode", "no", *self.args,
        ]  # fmt: skip
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        ready = threading.Event()
        lines: list[str] = []
        stdout = self.proc.stdout
        assert stdout is not None

        def watch() -> None:
            for line in stdout:
                lines.append(line)
                if "Ready to accept connections" in line:
                    ready.set()

        threading.Thread(target=watch, daemon=True).start()
        if not ready.wait(timeout):
            self.stop()
            raise RuntimeError("redis-server did not become ready:\n" + "".join(lines[-20:]))

    def stop(self, timeout: float = 15) -> None:
        """Stop with SIGTERM: redis-server then saves (AOF/RDB, as configured) and exits."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout)
        self.proc = None

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None
