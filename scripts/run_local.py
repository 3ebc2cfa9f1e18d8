"""`make run-local`: the console chat against SmolLM2-135M-Instruct, served by llama.cpp on this machine.

Starts the server (scripts/llama_server.py) on 127.0.0.1 and a free port, points the model settings at
it and runs `chat-gateway run console` in this process. Ctrl-D (or Ctrl-C) ends the chat, then the
server is stopped: nothing is left running. Arguments go to the console (`--user ID --channel ID`);
the conversation is `--channel local-model` unless told otherwise, apart from `make run`'s.

Usage: python -m scripts.run_local [--user ID] [--channel ID]
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from scripts.llama_server import MODEL_ALIAS, MODEL_LABEL, N_CTX, LlamaServer, LocalModelError

SYSTEM_PROMPT = (
    "You are SmolLM2, a small language model with 135 million parameters, running on this computer "
    "through llama.cpp; you are not a large hosted model, and you say so when asked what you are. "
    "Answer in one or two short sentences."
)
# The gateway's estimate (about 4 characters a token) of what fits the server's window with room
# for a reply.
MAX_CONTEXT_TOKENS = N_CTX * 3 // 4


def main(argv: Sequence[str]) -> int:
    from bots.cli import main as chat_gateway  # noqa: PLC0415 - after the banner, it takes a moment

    log_path = Path(sys.prefix) / "llama-server.log"
    log_path.write_bytes(b"")
    print(f"Starting {MODEL_LABEL} ...", flush=True)
    started = time.monotonic()
    try:
        with LlamaServer(log_path=log_path) as server:
            print(
                f"Ready in {time.monotonic() - started:.1f}s at {server.base_url} (server log: {log_path}).\n"
                "Replies come from this small local model: fast, and often wrong.",
                flush=True,
            )
            os.environ["OPENAI_BASE_URL"] = server.base_url
            os.environ["OPENAI_MODEL"] = MODEL_ALIAS
            os.environ["OPENAI_API_KEY"] = "local"  # never send a key from .env to this server
            os.environ.setdefault("SYSTEM_PROMPT", SYSTEM_PROMPT)
            os.environ.setdefault("MAX_CONTEXT_TOKENS", str(MAX_CONTEXT_TOKENS))
            # Ctrl-C in the middle of a long reply should not wait 20 s: the message stays in the
            # inbox and is answered at the next start.
            os.environ.setdefault("SHUTDOWN_GRACE_SECONDS", "2")
            try:
                chat_gateway(["run", "console", "--channel", "local-model", *argv])
            except SystemExit as exc:
                return exc.code if isinstance(exc.code, int) else int(exc.code is not None)
    except LocalModelError as exc:
        print(f"run-local: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
