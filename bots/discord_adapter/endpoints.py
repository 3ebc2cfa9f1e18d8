"""Where discord.py sends REST calls and opens its gateway socket, for DISCORD_API_URL.

Both are process-wide class attributes in discord.py: `Route.BASE` is read whenever a request is built
(webhook and interaction routes included), and a plain `Client` dials `DiscordWebSocket.DEFAULT_GATEWAY`
without asking `/gateway/bot`; a sharded client with a fixed shard count does too, and every client falls
back to it after an invalid session. So only one Discord API can be targeted per process at a time, and
`pointed_at` puts both back when its block ends, which keeps tests (and restarts) isolated.
"""

from __future__ import annotations

__all__ = ["follow_bot_gateway", "pointed_at", "rest_base"]

import contextlib
import logging
from collections.abc import Iterator

import yarl
from discord.gateway import DiscordWebSocket
from discord.http import HTTPClient, Route

log = logging.getLogger(__name__)


def rest_base(api_url: str) -> str:
    """DISCORD_API_URL as discord.py wants its base: every route path starts with '/'."""
    return api_url.rstrip("/")


@contextlib.contextmanager
def pointed_at(api_url: str | None) -> Iterator[None]:
    """Send REST calls to `api_url` (None: Discord's) inside the block; restore both endpoints after it."""
    saved_base, saved_gateway = Route.BASE, DiscordWebSocket.DEFAULT_GATEWAY
    if api_url:
        Route.BASE = rest_base(api_url)
    try:
        yield
    finally:
        Route.BASE, DiscordWebSocket.DEFAULT_GATEWAY = saved_base, saved_gateway


async def follow_bot_gateway(http: HTTPClient) -> yarl.URL:
    """Ask the API (after login) which gateway to dial, and make it the one discord.py dials by default.

    Raises:
        discord.GatewayNotFound: the API did not answer `/gateway/bot`.
    """
    _, url, _ = await http.get_bot_gateway()
    gateway = yarl.URL(url)
    DiscordWebSocket.DEFAULT_GATEWAY = gateway
    log.info("discord gateway from %s: %s", Route.BASE, gateway)
    return gateway
