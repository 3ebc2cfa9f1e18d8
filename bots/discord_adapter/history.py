"""Discord's side of context from the platform: the reply chain a message continues, or else the channel's
(a Discord thread is a channel, so its own) history before the message.

A reply (to the bot or anyone) reads its chain upwards, one referenced message after the other, as a
person reads the quoted replies; any other message reads the channel's last messages before it
(`GET /channels/{id}/messages?before=...`, paged by discord.py). Messages discord.py still holds are not
fetched again. Rate limits are discord.py's; any other failure propagates and the core answers unseeded.
"""

from __future__ import annotations

__all__ = ["DiscordHistory"]

from datetime import UTC, datetime

import discord

from bots.discord_adapter.incoming import strip_mention
from core.platform_context import AuthorKind, PlatformMessage
from core.turns import IncomingMessage

_READABLE_TYPES = (discord.MessageType.default, discord.MessageType.reply)


class DiscordHistory:
    """The `PlatformHistory` of Discord, on the adapter's logged-in client."""

    def __init__(self, client: discord.Client) -> None:
        self._client = client

    async def read(self, incoming: IncomingMessage, *, after: float | None, limit: int) -> list[PlatformMessage]:
        meta = incoming.metadata
        if not meta.get("message_id") or limit < 1:
            return []
        guild_id = int(meta["guild_id"]) if meta.get("guild_id") else None
        channel = self._client.get_partial_messageable(int(meta["channel_id"]), guild_id=guild_id)
        since = datetime.fromtimestamp(after, UTC) if after is not None else None
        if meta.get("reference_id"):
            raw = await self._chain(channel, int(meta["reference_id"]), since, limit)
        else:
            before = discord.Object(int(meta["message_id"]))
            raw = [m async for m in channel.history(limit=limit, before=before, after=since, oldest_first=False)]
            raw.reverse()
        return [self._convert(m) for m in raw if m.type in _READABLE_TYPES]

    async def _chain(
        self, channel: discord.PartialMessageable, first: int, since: datetime | None, limit: int
    ) -> list[discord.Message]:
        """The replied-to message and the ones it replies to in turn, oldest first."""
        chain: list[discord.Message] = []
        next_id: int | None = first
        while next_id is not None and len(chain) < limit:
            message = discord.utils.get(self._client.cached_messages, id=next_id)
            if message is None:
                try:
                    message = await channel.fetch_message(next_id)
                except discord.NotFound:  # deleted: the chain ends there
                    break
            if since is not None and message.created_at <= since:
                break
            chain.append(message)
            reference = message.reference
            next_id = reference.message_id if reference is not None and reference.channel_id == channel.id else None
        chain.reverse()
        return chain

    def _convert(self, message: discord.Message) -> PlatformMessage:
        me = self._client.user
        kind: AuthorKind = "person"
        if me is not None and message.author.id == me.id:
            kind = "self"
        elif message.author.bot:
            kind = "bot"
        text = strip_mention(message.content, me.id) if me is not None else message.content
        return PlatformMessage(
            message_id=str(message.id), author_id=str(message.author.id), author_name=message.author.display_name,
            text=text, sent_at=message.created_at.timestamp(), kind=kind,
        )  # fmt: skip
