"""Run a benchmark against --redis-url, or against a redis-server started for it on a free port."""

from __future__ import annotations

import argparse
import asyncio
import tempfile
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from tests.support.redis_proc import RedisServer

__all__ = ["run_with_redis"]


def run_with_redis(main: Callable[[argparse.Namespace], Coroutine[Any, Any, None]], args: argparse.Namespace) -> None:
    if args.redis_url:
        asyncio.run(main(args))
        return
    with tempfile.TemporaryDirectory() as directory:
        server = RedisServer(Path(directory))
        server.start()
        try:
            args.redis_url = server.url
            asyncio.run(main(args))
        finally:
            server.stop()
