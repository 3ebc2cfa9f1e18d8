"""Which Discord messages the bot answers, and the `IncomingMessage` the gateway gets for each.

Answered: direct messages, guild messages that mention the bot (or its managed role), and replies to
one of the bot's own messages. Never: the bot's own messages, system messages, other bots' messages
(unless DISCORD_ALLOW_BOTS), and guild traffic outside the DISCORD_GUILD_IDS / DISCORD_CHANNEL_IDS
allow-lists. Direct messages follow DISCORD_DM_POLICY (access.py): `off` here, `members` checked by the
adapter (it needs the API), `open` always answered.

With DISCORD_AUTO_THREAD also: messages in a thread without a mention (trigger `thread`) where the bot
takes part: it opened the thread (`opened_by`), or answered in it before (the adapter asks the backend
for `thread_flag`, which the writer sets). And a mention in a text channel (not a command) is answered
in a new thread on that message, which the writer opens when it posts (`open_thread` in the metadata
holds its name). Discord gives that thread the message's own ID, so the mention is filed under the
thread it opens: channel and `thread_ref` are the thread's, exactly as for the messages that follow in
it, and MEMORY_SCOPE treats them as one platform thread.

The message ID is the event ID (and the inbox's message key), so a MESSAGE_CREATE replayed on RESUME
is a duplicate. A Discord thread is a channel of its own, so its channel ID (not its parent's) names the
memory, and its ID is the `thread_ref` (MEMORY_SCOPE=thread). The inbox keeps the `IncomingMessage` and
any process may post its reply later, so `metadata` holds all a writer needs, as strings: `channel_id`
(where the message is), `message_id`, `guild_id` (guild messages), `open_thread`, and for a slash command
`application_id` and `interaction_token` (Discord lets that token edit the ephemeral answer for 15
minutes; it is kept with the message until it is delivered).
"""

from __future__ import annotations

__all__ = [
    "MAX_THREAD_NAME",
    "PLATFORM",
    "AnswerPolicy",
    "command_incoming",
    "parse_id_list",
    "opened_by",
    "strip_mention",
    "thread_flag",
    "thread_name",
]

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

import discord

from bots.discord_adapter.access import DmPolicy
from bots.discord_adapter.files import attachments_of
from core.commands import parse_command
from core.errors import ConfigError
from core.turns import IncomingMessage

PLATFORM = "discord"
Trigger = Literal["dm", "mention", "reply", "slash", "thread"]
MAX_THREAD_NAME = 100  # Discord's limit on a channel's name
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


def thread_name(question: str, fallback: str) -> str:
    """The name of the thread a question opens: its first line, whitespace folded, cut at a word to 100 chars."""
    line = next((part for part in question.splitlines() if part.strip()), "")
    text = re.sub(r"\s+", " ", line).strip() or fallback
    if len(text) <= MAX_THREAD_NAME:
        return text
    cut = text[: MAX_THREAD_NAME - 1]
    return (cut.rsplit(" ", 1)[0] if " " in cut else cut).rstrip(" ,;:.") + "…"


@dataclass(frozen=True, slots=True)
class AnswerPolicy:
    """The answering rules and allow-lists; empty allow-lists allow everything."""

    allow_bots: bool = False
    guild_ids: frozenset[int] = frozenset()
    channel_ids: frozenset[int] = frozenset()
    dm_policy: DmPolicy = "open"
    auto_thread: bool = False

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
        trigger = _trigger(message, me, role_id) or self._in_thread(message)
        if trigger is None:
            return None
        text = strip_mention(message.content, me.id, role_id)
        metadata = _place(trigger, message.channel.id, guild_id)
        metadata["message_id"] = str(message.id)
        channel = message.channel
        conversation = str(channel.id)
        thread_ref = conversation if isinstance(channel, discord.Thread) else None
        if self._opens_thread(trigger, channel, text):
            conversation = thread_ref = str(message.id)  # the ID of the thread the writer opens on this message
            metadata["open_thread"] = thread_name(text, f"Chat with {message.author.display_name}")
        return IncomingMessage(
            platform=PLATFORM,
            event_id=str(message.id),
            user_id=str(message.author.id),
            channel_id=conversation,
            text=text,
            thread_ref=thread_ref,
            metadata=metadata,
            from_bot=message.author.bot,
            attachments=attachments_of(message),
        )

    def _in_thread(self, message: discord.Message) -> Trigger | None:
        """DISCORD_AUTO_THREAD: in a thread it takes part in, the bot needs no mention (the adapter checks that)."""
        return "thread" if self.auto_thread and isinstance(message.channel, discord.Thread) else None

    def _opens_thread(self, trigger: Trigger, channel: object, text: str) -> bool:
        # A command acts on the conversation it is typed in: it opens nothing.
        return (
            self.auto_thread and trigger == "mention" and isinstance(channel, discord.TextChannel)
            and parse_command(text) is None
        )  # fmt: skip


def opened_by(message: discord.Message, me: discord.ClientUser) -> bool:
    """Whether `message` is in a thread the bot opened (discord.py knows threads from the gateway)."""
    return isinstance(message.channel, discord.Thread) and message.channel.owner_id == me.id


def thread_flag(thread_id: str) -> str:
    """The backend flag saying the bot answered in a Discord thread."""
    return f"{PLATFORM}:thread:{thread_id}"


def command_incoming(interaction: discord.Interaction, text: str) -> IncomingMessage:
    """A slash command as the typed command `text`; its writer edits the interaction's deferred answer."""
    channel_id = interaction.channel_id or interaction.user.id
    metadata = _place("slash", channel_id, interaction.guild_id)
    metadata["application_id"] = str(interaction.application_id)
    metadata["interaction_token"] = interaction.token
    return IncomingMessage(
        platform=PLATFORM,
        event_id=str(interaction.id),
        user_id=str(interaction.user.id),
        channel_id=str(channel_id),
        text=text,
        thread_ref=str(channel_id) if isinstance(interaction.channel, discord.Thread) else None,
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
