"""The discord.py client of the adapter: intents, safe mentions, slash commands, and events handed on.

`ChatClient` is a plain `discord.Client`; `ShardedChatClient` the same on `discord.AutoShardedClient`
(DISCORD_SHARD_COUNT). Constructors do no I/O; `setup_hook` (run by `login`) asks the API which gateway
to dial when DISCORD_API_URL is set, and registers `/reset`, `/memory` and `/usage`. Reconnects, RESUMEs and
rate limits are discord.py's.
"""

from __future__ import annotations

__all__ = [
    "GUILD_READY_TIMEOUT_SECONDS",
    "IDENTIFY_DELAY_SECONDS",
    "ChatClient",
    "ChatEvents",
    "ShardedChatClient",
    "chat_intents",
]

import asyncio
import logging
from collections.abc import Callable, Collection, Coroutine
from typing import Any, Final, Protocol

import discord
from discord import app_commands

from bots.discord_adapter.approvals import ApprovalButton, ApprovalClicks
from bots.discord_adapter.endpoints import follow_bot_gateway

log = logging.getLogger(__name__)

# discord.py's defaults: on_ready waits this long after the last GUILD_CREATE; an IDENTIFY after the
# first waits this long so reconnecting shards stay within Discord's session-start rate.
GUILD_READY_TIMEOUT_SECONDS: Final = 2.0
IDENTIFY_DELAY_SECONDS: Final = 5.0


class ChatEvents(Protocol):
    """Where the client hands user messages and slash commands (the adapter)."""

    async def on_message(self, message: discord.Message, me: discord.ClientUser) -> None: ...

    async def on_command(self, interaction: discord.Interaction, text: str) -> None: ...


def chat_intents() -> discord.Intents:
    """Guilds, guild messages, direct messages and the privileged message content; nothing else."""
    return discord.Intents(guilds=True, guild_messages=True, dm_messages=True, message_content=True)


class ChatClient(discord.Client):
    """A Discord connection whose messages and slash commands go to `events`."""

    def __init__(
        self,
        *,
        events: ChatEvents,
        follow_gateway: bool = False,
        command_guild_ids: Collection[int] = (),
        guild_ready_timeout: float = GUILD_READY_TIMEOUT_SECONDS,
        identify_delay_seconds: float = IDENTIFY_DELAY_SECONDS,
        approval_clicks: ApprovalClicks | None = None,
        **options: Any,
    ) -> None:
        super().__init__(
            intents=chat_intents(),
            allowed_mentions=discord.AllowedMentions.none(),
            guild_ready_timeout=guild_ready_timeout,
            **options,
        )
        self.tree: app_commands.CommandTree[ChatClient] = app_commands.CommandTree(self)
        self._events = events
        self._follow_gateway = follow_gateway
        self._command_guild_ids = tuple(command_guild_ids)
        self._identify_delay_seconds = identify_delay_seconds
        self._gateway_up = False
        self.approval_clicks: ApprovalClicks | None = approval_clicks

    @property
    def connected(self) -> bool:
        """True from READY (or RESUMED) until the gateway socket drops or the client closes."""
        return self._gateway_up and not self.is_closed()

    async def setup_hook(self) -> None:
        # Approval buttons are found by their custom_id, whoever posted them and whenever (persistent views).
        self.add_dynamic_items(ApprovalButton)
        if self._follow_gateway:
            await follow_bot_gateway(self.http)
        await self._register_commands()

    async def before_identify_hook(self, shard_id: int | None, *, initial: bool = False) -> None:
        if not initial:
            await asyncio.sleep(self._identify_delay_seconds)  # pacing Discord asks for, as discord.py does

    async def on_ready(self) -> None:
        self._gateway_up = True
        log.info("discord ready", extra={"guilds": len(self.guilds)})

    async def on_resumed(self) -> None:
        self._gateway_up = True

    # A sharded client dispatches `ready` once; a shard that re-IDENTIFYs later says so only per shard.
    async def on_shard_ready(self, shard_id: int) -> None:
        self._gateway_up = True

    async def on_shard_resumed(self, shard_id: int) -> None:
        self._gateway_up = True

    async def on_disconnect(self) -> None:
        self._gateway_up = False

    async def on_message(self, message: discord.Message) -> None:
        if self.user is not None:
            await self._events.on_message(message, self.user)

    async def _register_commands(self) -> None:
        guilds = [discord.Object(guild_id) for guild_id in self._command_guild_ids]
        for name, description in (
            ("reset", "Forget our conversation in this channel"),
            ("memory", "How much of our conversation here I remember"),
            ("usage", "The tokens you used today and this month, and your budget left"),
        ):
            command: app_commands.Command[Any, [], None] = app_commands.Command(
                name=name, description=description, callback=self._command(name)
            )
            if guilds:  # guild commands appear at once and only where the bot may answer
                self.tree.add_command(command, guilds=guilds)
            else:
                self.tree.add_command(command)
        try:
            targets: list[discord.Object | None] = [*guilds] or [None]  # None: global commands
            for guild in targets:
                await self.tree.sync(guild=guild)
        except discord.HTTPException as exc:
            log.warning(
                "discord slash commands not registered; typed commands still work",
                extra={"status": exc.status, "code": exc.code},
            )

    def _command(self, text: str) -> Callable[[discord.Interaction], Coroutine[Any, Any, None]]:
        events = self._events

        async def run(interaction: discord.Interaction) -> None:
            await events.on_command(interaction, text)

        return run


class ShardedChatClient(ChatClient, discord.AutoShardedClient):
    """`ChatClient` over several gateway shards (DISCORD_SHARD_COUNT), each shard reconnecting on its own."""
