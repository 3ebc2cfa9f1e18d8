"""Discord's attachments: references from a `discord.Message`, and their download from the CDN.

Attachment URLs are signed by Discord and need no token; they expire after about a day, so a message
answered much later (its turn resumed after an outage) may find its link gone: that file then gets a note.
"""

from __future__ import annotations

__all__ = ["DiscordFiles", "attachments_of"]

import aiohttp
import discord

from bots.downloads import download
from core.attachments import Attachment, Fetched, FetchError


def attachments_of(message: discord.Message) -> tuple[Attachment, ...]:
    """The message's files as references (nothing is downloaded here)."""
    return tuple(
        Attachment(
            name=item.filename, mimetype=item.content_type or "", size=item.size, url=item.url, file_id=str(item.id)
        )
        for item in message.attachments
    )


class DiscordFiles:
    """The `FileFetcher` of Discord messages. Borrows `session` (the adapter's, closed by the adapter)."""

    def __init__(self, session: aiohttp.ClientSession) -> None:
        self._session = session

    async def fetch(self, attachment: Attachment, *, max_bytes: int) -> Fetched:
        """Raises: FetchError."""
        if not attachment.url:
            raise FetchError("Discord did not send a link to it")
        data, _ = await download(self._session, attachment.url, max_bytes=max_bytes)
        return Fetched(data, attachment)
