"""`chat-gateway run discord`: connect to Discord, hand its messages to the core's delivery, serve its writers.

Messages the policy admits are made durable on receipt (`Delivery.receive`); the core's runner answers
them, under a lease, through `DiscordWriters`, which any process can build from the stored message. A
message the store could not take gets one short notice (nothing was stored, so nothing else will come).
`/reset` and `/memory` go through the inbox too: deferred (ephemeral) at once, then answered by editing
the deferred response; so a reset is ordered with the conversation's turns and its clear is the turn's
fenced commit, and a replayed interaction is refused by Discord at the deferral, before anything runs.
There is no drain here: the process's one drain is `Delivery.drain` (SHUTDOWN_GRACE_SECONDS).

Start-up failures an operator must fix become one `ConfigError` line (the CLI exits 2): a missing or
rejected DISCORD_TOKEN, a refused message content intent, sharding required but DISCORD_SHARD_COUNT
unset, a DISCORD_API_URL that does not answer like Discord's API. After READY, reconnects are discord.py's.
"""

from __future__ import annotations

__all__ = ["INTENT_REFUSED", "NOT_HERE", "SHARDING_REQUIRED", "TOKEN_MISSING", "TOKEN_REJECTED", "DiscordAdapter"]

import logging
from dataclasses import replace
from typing import Final

import aiohttp
import discord

from bots.discord_adapter.access import GuildMembers, dm_policy
from bots.discord_adapter.approvals import ApprovalClicks
from bots.discord_adapter.client import (
    GUILD_READY_TIMEOUT_SECONDS,
    IDENTIFY_DELAY_SECONDS,
    ChatClient,
    ShardedChatClient,
)
from bots.discord_adapter.endpoints import pointed_at
from bots.discord_adapter.files import DiscordFiles
from bots.discord_adapter.incoming import (
    PLATFORM,
    AnswerPolicy,
    command_incoming,
    opened_by,
    parse_id_list,
    thread_flag,
)
from bots.discord_adapter.writer import DiscordReply, DiscordWriters
from core.delivery import Delivery
from core.errors import ConfigError, StoreError
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
NOT_HERE: Final = "I'm not enabled in this channel."
# Gateway close codes that no reconnect can fix, only the operator.
_FATAL_CLOSES: Final = {4004: TOKEN_REJECTED, 4011: SHARDING_REQUIRED}


class DiscordAdapter:
    """Discord on the shared delivery: DMs, mentions and replies to the bot; `/reset` and `/memory`.

    Borrows `delivery`; `gateway` is the one `delivery` answers with, taken like every adapter's: its
    backend remembers the threads the bot answered in (DISCORD_AUTO_THREAD). The client is built by
    `run()`, which serves the writers once logged in and closes the client on the way out, cancellation
    included: drain `delivery` before (the CLI does), or replies still being posted lose their client.
    The other options exist for tests: discord.py's waits for guilds and between IDENTIFYs.
    """

    name = "discord"

    def __init__(
        self,
        *,
        settings: Settings,
        gateway: Gateway,
        delivery: Delivery,
        guild_ready_timeout: float = GUILD_READY_TIMEOUT_SECONDS,
        identify_delay_seconds: float = IDENTIFY_DELAY_SECONDS,
    ) -> None:
        self._settings = settings
        self._delivery = delivery
        self._flags = gateway.backend
        guild_ids = parse_id_list("DISCORD_GUILD_IDS", settings.discord_guild_ids)
        self._policy = AnswerPolicy(
            allow_bots=settings.discord_allow_bots,
            guild_ids=guild_ids,
            channel_ids=parse_id_list("DISCORD_CHANNEL_IDS", settings.discord_channel_ids),
            dm_policy=dm_policy(settings.discord_dm_policy, guild_ids),
            auto_thread=settings.discord_auto_thread,
        )
        self._approval_clicks = ApprovalClicks(gateway.approvals)
        self._members: GuildMembers | None = None
        self._guild_ready_timeout = guild_ready_timeout
        self._identify_delay_seconds = identify_delay_seconds
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
        self._members = GuildMembers(client, self._policy.guild_ids)
        try:
            # One keep-alive session for attachment downloads, closed with the client.
            with pointed_at(self._settings.discord_api_url):
                async with client, aiohttp.ClientSession() as files:
                    await self._serve(client, token, DiscordFiles(files))
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
            events=self,
            follow_gateway=bool(self._settings.discord_api_url),
            command_guild_ids=sorted(self._policy.guild_ids),
            guild_ready_timeout=self._guild_ready_timeout,
            identify_delay_seconds=self._identify_delay_seconds,
            approval_clicks=self._approval_clicks,
            **sharding,
        )

    async def _serve(self, client: ChatClient, token: str, files: DiscordFiles) -> None:
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
        # From login on, REST works: replies (ours, and those dead processes left) can go out. Messages may
        # arrive before on_ready (it waits for every guild), so this cannot wait for READY.
        remember = self._flags if self._settings.discord_auto_thread else None  # only auto-threads read them
        self._delivery.serve(
            PLATFORM, DiscordWriters(client, flags=remember, ttl_seconds=self._settings.store_ttl_seconds),
            files=files,
        )
        try:
            await client.connect()
        except discord.PrivilegedIntentsRequired:
            raise ConfigError(INTENT_REFUSED) from None
        except discord.ConnectionClosed as exc:
            if exc.code in _FATAL_CLOSES:
                raise ConfigError(_FATAL_CLOSES[exc.code]) from None
            raise

    async def on_message(self, message: discord.Message, me: discord.ClientUser) -> None:
        """Store `message` for its turn if the policy admits it; the delivery answers it."""
        incoming = self._policy.incoming(message, me)
        if incoming is None:
            return
        fields = {"platform": PLATFORM, "event_id": incoming.event_id, "channel_id": incoming.channel_id}
        if (
            incoming.metadata["trigger"] == "thread"
            and not opened_by(message, me)
            and not await self._answered_in(incoming.channel_id)
        ):
            return  # a thread the bot has no part in: a mention is what brings it in
        if message.guild is None and not await self._may_dm(message.author.id):
            log.info("discord DM refused by DISCORD_DM_POLICY=%s", self._policy.dm_policy, extra=fields)
            return
        try:
            outcome = await self._delivery.receive(incoming)
        except StoreError as exc:  # nothing was stored: no answer will come, so say it once
            log.error("discord message not stored: %s", exc, extra=fields)  # noqa: TRY400
            if self._client is not None:  # in place: a message that was not taken opens no thread
                in_place = replace(
                    incoming, metadata={k: v for k, v in incoming.metadata.items() if k != "open_thread"}
                )
                await DiscordReply(self._client, in_place).notice(exc.user_message, tag="intake")
            return
        log.info("discord message %s", outcome, extra=fields)

    async def _answered_in(self, thread_id: str) -> bool:
        try:
            return await self._flags.has_flag(thread_flag(thread_id))
        except StoreError as exc:
            log.warning("discord thread lookup failed: %s", exc, extra={"platform": PLATFORM})
            return False

    async def _may_dm(self, user_id: int) -> bool:
        """DISCORD_DM_POLICY for a direct message (or a slash command in one) from `user_id`."""
        policy = self._policy.dm_policy
        if policy == "members":
            return self._members is not None and await self._members.is_member(user_id)
        return policy == "open"

    async def on_command(self, interaction: discord.Interaction, text: str) -> None:
        """Store a slash command as the typed command `text`, its answer ephemeral; never raises."""
        in_dm = interaction.guild_id is None
        allowed = self._policy.allows(interaction.guild_id, interaction.channel)
        if not allowed or (in_dm and not await self._may_dm(interaction.user.id)):
            try:
                await interaction.response.send_message(NOT_HERE, ephemeral=True)
            except discord.HTTPException as exc:
                log.info("discord interaction not acknowledged", extra={"status": exc.status, "code": exc.code})
            return
        try:
            # Deferring first answers within Discord's 3 s even when the conversation's turn is busy; a replayed
            # interaction fails here (already acknowledged), which is exactly when nothing must run.
            await interaction.response.defer(ephemeral=True, thinking=True)
        except discord.HTTPException as exc:
            log.info("discord interaction not acknowledged", extra={"status": exc.status, "code": exc.code})
            return
        incoming = command_incoming(interaction, text)
        fields = {"platform": PLATFORM, "event_id": incoming.event_id, "channel_id": incoming.channel_id}
        try:
            outcome = await self._delivery.receive(incoming)
        except StoreError as exc:
            log.error("discord command not stored: %s", exc, extra=fields)  # noqa: TRY400
            try:
                await interaction.edit_original_response(content=exc.user_message)
            except discord.HTTPException as http:
                log.warning("discord command notice not posted", extra={"status": http.status})
            return
        log.info("discord command %s", outcome, extra=fields)
