"""Posting one answer on Discord: a reply that grows by edits while the model writes, then the final parts.

Every part is at most DISCORD_MAX_CHARS and split by `core.chunking` (paragraphs first, code blocks closed
and reopened with their language). The first part replies to the user's message without pinging them; the
rest follow in the channel. Mentions never notify anyone: the client's `allowed_mentions` is none, which
discord.py applies to every send and edit. A failed progress edit only stops the previews: the turn goes
on and the final text is still posted.
"""

from __future__ import annotations

__all__ = ["DISCORD_MAX_CHARS", "DISCORD_MAX_PARTS", "EDIT_INTERVAL_SECONDS", "StreamedReply"]

import logging
from typing import Final

import discord

from core.chunking import split_message
from core.throttle import ProgressThrottle

log = logging.getLogger(__name__)

DISCORD_MAX_CHARS: Final = 2000
DISCORD_MAX_PARTS: Final = 10
# Discord allows about five message edits per five seconds per channel; one a second leaves room for others.
EDIT_INTERVAL_SECONDS: Final = 1.0


class StreamedReply:
    """The bot's answer to one user message. `progress` shows text so far; `finish` posts the exact final text."""

    def __init__(self, message: discord.Message, *, edit_interval_seconds: float = EDIT_INTERVAL_SECONDS) -> None:
        self._message = message
        self._posted: discord.Message | None = None
        self._shown = ""
        self._previews_on = True
        self._throttle = ProgressThrottle(self._preview, edit_interval_seconds)

    @property
    def posted(self) -> discord.Message | None:
        """The first message of the answer, once it exists."""
        return self._posted

    async def progress(self, text_so_far: str) -> None:
        """Show the model's text so far, no more often than the edit interval allows."""
        if self._previews_on and text_so_far.strip():
            await self._throttle(text_so_far)

    async def finish(self, text: str) -> None:
        """Post `text` exactly, editing the progress message into its first part.

        Raises:
            discord.HTTPException: Discord refused a send or an edit.
        """
        first, *rest = split_message(text, DISCORD_MAX_CHARS, max_parts=DISCORD_MAX_PARTS)
        if self._posted is None:
            self._posted = await self._reply(first)
        elif self._shown != first:
            await self._posted.edit(content=first)
        self._shown = first
        for part in rest:
            await self._message.channel.send(part)

    async def _preview(self, text_so_far: str) -> None:
        # Only the first part fits in one message; the others appear with `finish`.
        preview = split_message(text_so_far, DISCORD_MAX_CHARS)[0]
        if preview == self._shown:
            return
        try:
            if self._posted is None:
                self._posted = await self._reply(preview)
            else:
                await self._posted.edit(content=preview)
        except discord.HTTPException as exc:
            self._previews_on = False
            log.warning("discord progress edit failed; final text follows", extra={"status": exc.status})
            return
        self._shown = preview

    async def _reply(self, text: str) -> discord.Message:
        # fail_if_not_exists=False: if the user deleted their message meanwhile, the answer still goes out.
        reference = self._message.to_reference(fail_if_not_exists=False)
        return await self._message.channel.send(text, reference=reference, mention_author=False)
