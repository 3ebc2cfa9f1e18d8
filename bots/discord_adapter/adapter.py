"""`chat-gateway run discord`: the Discord adapter the CLI builds from settings and runs on the shared gateway.

Start-up failures an operator must fix become one `ConfigError` line (the CLI exits 2): a missing or
rejected DISCORD_TOKEN, a refused message content intent, sharding required but DISCORD_SHARD_COUNT
unset, a DISCORD_API_URL that does not answer like Discord's API. After READY, reconnects are discord.py's.
"""

from __future__ import annotations

__all__ = ["INTENT_REFUSED", "SHARDING_REQUIRED", "TOKEN_MISSING", "TOKEN_REJECTED", "DiscordAdapter"]

import logging
from typing import Final

import aiohttp
import discord

from bots.discord_adapter.client import (
    GUILD_READY_TIMEOUT_SECONDS,
    IDENTIFY_DELAY_SECONDS,
    ChatClient,
    ShardedChatClient,
)
from bots.discord_adapter.conversation import Conversation
from bots.discord_adapter.endpoints import pointed_at
from bots.discord_adapter.incoming import AnswerPolicy, parse_id_list
from bots.discord_adapter.writer import EDIT_INTERVAL_SECONDS
from core.errors import ConfigError
from core.gateway import Gateway
from core.settings import Settings

log = logging.getLogger(__name__)

_BOT_PAGE = "Discord Developer Portal → your app → Bot"
TOKEN_MISSING: Final = f"DISCORD_TOKEN is not set: copy the bot token from {_BOT_PAGE} → Reset Token"
TOKEN_REJECTED: Final = (
    f"Discord rejected DISCORD_TOKEN (wrong or reset): copy a new one from {_BOT_PAGE} → Reset Token"
)
INTENT_REFUSED: Final = (
    f"Discord refused the message content intent: turn on {_BOT_PAGE} → Privileged Gateway Intents → "
    "MESSAGE CONTENT INTENT, then restart"
)
SHARDING_REQUIRED: Final = (
    "Discord requires this bot to be sharded: set DISCORD_SHARD_COUNT (Discord suggests one per 1,000 guilds)"
)
# Gateway close codes that no reconnect can fix, only the operator.
_FATAL_CLOSES: Final = {4004: TOKEN_REJECTED, 4011: SHARDING_REQUIRED}
DRAIN_SECONDS: Final = 10.0


class DiscordAdapter:
    """Discord on the shared gateway: DMs, mentions and replies to the bot; `/reset` and `/memory`.

    Borrows `gateway`. The client is built by `run()` and closed by it on the way out, cancellation included.
    `drain_seconds` bounds how long answers in flight may finish once `run()` is cancelled. The other options
    exist for tests: discord.py's waits for guilds and between IDENTIFYs, and how often a streamed answer
    is edited.
    """

    name = "discord"

    def __init__(
        self,
        *,
        settings: Settings,
        gateway: Gateway,
        guild_ready_timeout: float = GUILD_READY_TIMEOUT_SECONDS,
        identify_delay_seconds: float = IDENTIFY_DELAY_SECONDS,
        edit_interval_seconds: float = EDIT_INTERVAL_SECONDS,
        drain_seconds: float = DRAIN_SECONDS,
    ) -> None:
        self._settings = settings
        # DISCORD_GUILD_IDS / DISCORD_CHANNEL_IDS are not Settings fields yet; read them if they appear.
        self._policy = AnswerPolicy(
            allow_bots=settings.discord_allow_bots,
            guild_ids=parse_id_list("DISCORD_GUILD_IDS", getattr(settings, "discord_guild_ids", None)),
            channel_ids=parse_id_list("DISCORD_CHANNEL_IDS", getattr(settings, "discord_channel_ids", None)),
        )
        self._conversation = Conversation(
            gateway=gateway, policy=self._policy, edit_interval_seconds=edit_interval_seconds
        )
        self._guild_ready_timeout = guild_ready_timeout
        self._identify_delay_seconds = identify_delay_seconds
        self._drain_seconds = drain_seconds
        self._client: ChatClient | None = None

    @property
    def connected(self) -> bool:
        return self._client is not None and self._client.connected

    @property
    def client(self) -> ChatClient | None:
        """The running client (None outside `run`)."""
        return self._client

    async def run(self) -> None:
        """Log in, serve until cancelled or closed, then close the client.

        Raises:
            ConfigError: DISCORD_TOKEN missing or rejected, the message content intent refused, sharding
                required without DISCORD_SHARD_COUNT, or DISCORD_API_URL not answering like Discord's API.
        """
        token = self._token()
        client = self._build_client()
        self._client = client
        try:
            with pointed_at(self._settings.discord_api_url):
                async with client:
                    try:
                        await self._serve(client, token)
                    finally:  # cancelled included: answers being written get to finish before the client closes
                        await self._conversation.drain(self._drain_seconds)
        finally:
            self._client = None

    def _token(self) -> str:
        secret = self._settings.discord_token
        token = secret.get_secret_value().strip() if secret is not None else ""
        if not token:
            raise ConfigError(TOKEN_MISSING)
        return token

    def _build_client(self) -> ChatClient:
        shards = self._settings.discord_shard_count
        client_class = ChatClient if shards is None else ShardedChatClient
        sharding = {} if shards is None else {"shard_count": shards}
        return client_class(
            conversation=self._conversation,
            follow_gateway=bool(self._settings.discord_api_url),
            command_guild_ids=sorted(self._policy.guild_ids),
            guild_ready_timeout=self._guild_ready_timeout,
            identify_delay_seconds=self._identify_delay_seconds,
            **sharding,
        )

    async def _serve(self, client: ChatClient, token: str) -> None:
        api_url = self._settings.discord_api_url
        try:
            await client.login(token)  # setup_hook (gateway URL, slash commands) runs inside
        except discord.LoginFailure:
            raise ConfigError(TOKEN_REJECTED) from None
        except (aiohttp.ClientConnectionError, discord.NotFound, discord.GatewayNotFound) as exc:
            if not api_url:
                raise
            raise ConfigError(
                f"DISCORD_API_URL={api_url} does not answer like Discord's API ({type(exc).__name__}); "
                "it should be the REST base, as in https://discord.com/api/v10"
            ) from None
        log.info("discord logged in", extra={"shards": self._settings.discord_shard_count or 1})
        try:
            await client.connect()
        except discord.PrivilegedIntentsRequired:
            raise ConfigError(INTENT_REFUSED) from None
        except discord.ConnectionClosed as exc:
            if exc.code in _FATAL_CLOSES:
                raise ConfigError(_FATAL_CLOSES[exc.code]) from None
            raise
