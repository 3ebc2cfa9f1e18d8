"""Which Discord messages the bot answers, and the `IncomingMessage` the gateway gets for each.

Answered: direct messages, guild messages that mention the bot (or its managed role), and replies to
one of the bot's own messages. Never: the bot's own messages, system messages, other bots' messages
(unless DISCORD_ALLOW_BOTS), and guild traffic outside the DISCORD_GUILD_IDS / DISCORD_CHANNEL_IDS
allow-lists. Direct messages follow DISCORD_DM_POLICY (access.py): `off` here, `members` checked by the
adapter (it needs the API), `open` always answered.

The message ID is the event ID (and the inbox's message key), so a MESSAGE_CREATE replayed on RESUME
is a duplicate. A Discord thread is a channel of its own, so its channel ID (not its parent's) names the
memory. The inbox keeps the `IncomingMessage` and any process may post its reply later, so `metadata`
holds all a writer needs, as strings: `channel_id`, `message_id`, `guild_id` (guild messages), and for a
slash command `application_id` and `interaction_token` (Discord lets that token edit the ephemeral
answer for 15 minutes; it is kept with the message until it is delivered).
"""

from __future__ import annotations

__all__ = ["PLATFORM", "AnswerPolicy", "command_incoming", "parse_id_list", "strip_mention"]

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

import discord

from bots.discord_adapter.access import DmPolicy
from core.errors import ConfigError
from core.turns import IncomingMessage

PLATFORM = "discord"
Trigger = Literal["dm", "mention", "reply", "slash"]
_ANSWERABLE_TYPES = (discord.MessageType.default, discord.MessageType.reply)


def parse_id_list(name: str, value: object) -> frozenset[int]:
    """An allow-list setting as snowflakes: None, "1,2 3", an int, or an iterable of ints/strings.

    Raises:
        ConfigError: an entry is not a number; the message names the setting.
    """
    if value is None:
        return frozenset()
    if isinstance(value, str):
        items: Iterable[object] = value.replace(",", " ").split()
    elif isinstance(value, int):
        items = [value]
    elif isinstance(value, Iterable):
        items = value
    else:
        raise ConfigError(f"{name}: expected Discord IDs separated by commas, got a {type(value).__name__}")
    try:
        return frozenset(int(str(item).strip()) for item in items)
    except ValueError:
        raise ConfigError(f"{name}: every entry must be a numeric Discord ID (right-click → Copy ID)") from None


def strip_mention(content: str, user_id: int, role_id: int | None = None) -> str:
    """The text without the bot's own `<@id>`/`<@!id>` (and managed-role) mentions; other mentions stay."""
    targets = rf"<@!?{user_id}>" + (rf"|<@&{role_id}>" if role_id is not None else "")
    return re.sub(rf"[ \t]*(?:{targets})[ \t]*", " ", content).strip()


@dataclass(frozen=True, slots=True)
class AnswerPolicy:
    """The answering rules and allow-lists; empty allow-lists allow everything."""

    allow_bots: bool = False
    guild_ids: frozenset[int] = frozenset()
    channel_ids: frozenset[int] = frozenset()
    dm_policy: DmPolicy = "open"

    def allows(self, guild_id: int | None, channel: object) -> bool:
        """Whether the allow-lists admit this place; a thread counts as its own channel and as its parent's."""
        if guild_id is None:
            return True
        if self.guild_ids and guild_id not in self.guild_ids:
            return False
        if not self.channel_ids:
            return True
        places = {getattr(channel, "id", None), getattr(channel, "parent_id", None)}
        return not places.isdisjoint(self.channel_ids)

    def incoming(self, message: discord.Message, me: discord.ClientUser) -> IncomingMessage | None:
        """The gateway's view of `message`, or None when the bot should stay silent."""
        if message.author.id == me.id or message.type not in _ANSWERABLE_TYPES:
            return None
        if message.author.bot and not self.allow_bots:
            return None
        guild_id = message.guild.id if message.guild is not None else None
        if not self.allows(guild_id, message.channel) or (guild_id is None and self.dm_policy == "off"):
            return None
        role_id = _self_role_id(message)
        trigger = _trigger(message, me, role_id)
        if trigger is None:
            return None
        metadata = _place(trigger, message.channel.id, guild_id)
        metadata["message_id"] = str(message.id)
        metadata["sent_at"] = repr(message.created_at.timestamp())  # the reset watermark compares with it
        if message.reference is not None and message.reference.message_id is not None:
            metadata["reference_id"] = str(message.reference.message_id)  # a reply chain to read for context
        return IncomingMessage(
            platform=PLATFORM,
            event_id=str(message.id),
            user_id=str(message.author.id),
            channel_id=str(message.channel.id),
            text=strip_mention(message.content, me.id, role_id),
            metadata=metadata,
            from_bot=message.author.bot,
        )


def command_incoming(interaction: discord.Interaction, text: str) -> IncomingMessage:
    """A slash command as the typed command `text`; its writer edits the interaction's deferred answer."""
    channel_id = interaction.channel_id or interaction.user.id
    metadata = _place("slash", channel_id, interaction.guild_id)
    metadata["application_id"] = str(interaction.application_id)
    metadata["interaction_token"] = interaction.token
    metadata["sent_at"] = repr(interaction.created_at.timestamp())
    return IncomingMessage(
        platform=PLATFORM,
        event_id=str(interaction.id),
        user_id=str(interaction.user.id),
        channel_id=str(channel_id),
        text=text,
        metadata=metadata,
    )


def _place(trigger: Trigger, channel_id: int, guild_id: int | None) -> dict[str, str]:
    metadata = {"trigger": trigger, "channel_id": str(channel_id)}
    if guild_id is not None:
        metadata["guild_id"] = str(guild_id)
    else:
        metadata["is_dm"] = "1"
    return metadata


def _self_role_id(message: discord.Message) -> int | None:
    role = message.guild.self_role if message.guild is not None else None
    return role.id if role is not None else None


def _trigger(message: discord.Message, me: discord.ClientUser, role_id: int | None) -> Trigger | None:
    if message.guild is None:
        return "dm"
    # Not `me.mentioned_in(message)`: that is also true for @everyone, which must not wake the bot.
    if any(user.id == me.id for user in message.mentions) or any(r.id == role_id for r in message.role_mentions):
        return "mention"
    replied = message.reference.resolved if message.reference is not None else None
    if isinstance(replied, discord.Message) and replied.author.id == me.id:
        return "reply"
    return None
