"""Run a benchmark against --redis-url, or against a redis-server started for it on a free port.

`--aof off|everysec|always` chooses the started server's persistence: no AOF (the default), or AOF
fsynced once a second or on every write (what docker-compose.yml can choose; README Durability).
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from tests.support.redis_proc import RedisServer

__all__ = ["AOF_CHOICES", "add_redis_arguments", "redis_args", "run_with_redis"]

AOF_CHOICES = ("off", "everysec", "always")


def redis_args(aof: str) -> list[str]:
    """redis-server flags for the `--aof` choice."""
    if aof == "off":
        return []
    return ["--appendonly", "yes", "--appendfsync", aof]


def add_redis_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--redis-url", help="default: start a redis-server on a free port")
    parser.add_argument(
        "--aof", choices=AOF_CHOICES, default="off", help="the started redis-server's AOF fsync policy (default: off)"
    )
    parser.add_argument("--data-dir", help="where the started redis-server writes (default: a temp dir)")


def run_with_redis(main: Callable[[argparse.Namespace], Coroutine[Any, Any, None]], args: argparse.Namespace) -> None:
    if args.redis_url:
        args.aof_note = "as the server at --redis-url is configured"
        asyncio.run(main(args))
        return
    args.aof_note = getattr(args, "aof", "off")
    with tempfile.TemporaryDirectory(dir=getattr(args, "data_dir", None)) as directory:
        server = RedisServer(Path(directory), args=redis_args(getattr(args, "aof", "off")))
        server.start()
        try:
            args.redis_url = server.url
            asyncio.run(main(args))
        finally:
            server.stop()
