"""Discord messages and slash commands in, gateway turns through, answers out.

The gateway decides everything about a turn (duplicates, ordering, commands, limits, failures turned into
short replies); this module only converts, shows typing, and posts. Its one `except Exception` per entry
point logs the traceback and answers with the gateway's generic apology where Discord still lets it, so
a failure never takes the client down.

discord.py runs every event in a task of its own and keeps no list of them, so turns are tracked here:
each counts as `gateway.in_flight()` (the CLI's shutdown drain waits for it, posting included), and
`drain` lets those still running finish, up to a deadline, before the adapter closes the client.
"""

from __future__ import annotations

__all__ = ["NOT_HERE", "Conversation"]

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

import discord

from bots.discord_adapter.incoming import PLATFORM, AnswerPolicy
from bots.discord_adapter.writer import DISCORD_MAX_CHARS, EDIT_INTERVAL_SECONDS, StreamedReply
from core.chunking import split_message
from core.errors import GatewayError
from core.gateway import Gateway
from core.logs import turn_context
from core.turns import IncomingMessage

log = logging.getLogger(__name__)

NOT_HERE = "I'm not enabled in this channel."


class Conversation:
    """Answers the messages `policy` admits, and the `/reset` and `/memory` commands, through `gateway`."""

    def __init__(
        self, *, gateway: Gateway, policy: AnswerPolicy, edit_interval_seconds: float = EDIT_INTERVAL_SECONDS
    ) -> None:
        self._gateway = gateway
        self._policy = policy
        self._edit_interval_seconds = edit_interval_seconds
        self._turns: set[asyncio.Task[Any]] = set()

    async def drain(self, timeout_seconds: float) -> None:
        """Let turns in flight finish for up to `timeout_seconds`, then cancel the rest."""
        try:
            async with asyncio.timeout(timeout_seconds):
                while self._turns:
                    await asyncio.wait(set(self._turns))
        except TimeoutError:
            pending = set(self._turns)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            log.warning("discord turns cancelled at shutdown", extra={"platform": PLATFORM, "turns": len(pending)})

    @contextlib.asynccontextmanager
    async def _turn(self, event_id: str) -> AsyncIterator[None]:
        task = asyncio.current_task()  # discord.py's task for this event
        tracked = {task} if task is not None else set()
        self._turns |= tracked
        try:
            with turn_context(platform=PLATFORM, event_id=event_id):
                async with self._gateway.in_flight():
                    yield
        finally:
            self._turns -= tracked

    async def on_message(self, message: discord.Message, me: discord.ClientUser) -> None:
        """Answer `message` if the policy says so; never raises (but lets cancellation through)."""
        incoming = self._policy.incoming(message, me)
        if incoming is None:
            return
        async with self._turn(incoming.event_id):
            answer = StreamedReply(message, edit_interval_seconds=self._edit_interval_seconds)
            try:
                await self._answer(message, incoming, answer)
            except Exception:
                log.exception("discord reply failed", extra={"channel_id": incoming.channel_id})
                await _apologise(message)

    async def _answer(self, message: discord.Message, incoming: IncomingMessage, answer: StreamedReply) -> None:
        async with contextlib.AsyncExitStack() as typing:
            try:
                await typing.enter_async_context(message.channel.typing())
            except discord.HTTPException as exc:  # typing is a courtesy; the answer matters
                log.warning("discord typing failed", extra={"status": exc.status})
            reply = await self._gateway.handle(incoming, on_progress=answer.progress)
        if reply is not None:
            await answer.finish(reply.text)
            log.info("discord reply posted", extra={"kind": reply.kind, "chars": len(reply.text)})

    async def on_command(self, interaction: discord.Interaction, text: str) -> None:
        """Run a slash command as the typed command `text`, answering ephemerally; never raises."""
        if not self._policy.allows(interaction.guild_id, interaction.channel):
            try:
                await interaction.response.send_message(NOT_HERE, ephemeral=True)
            except discord.HTTPException as exc:
                log.info("discord interaction not acknowledged", extra={"status": exc.status, "code": exc.code})
            return
        incoming = IncomingMessage(
            platform=PLATFORM,
            event_id=str(interaction.id),
            user_id=str(interaction.user.id),
            channel_id=str(interaction.channel_id or interaction.user.id),
            text=text,
            metadata={"trigger": "slash"},
        )
        async with self._turn(incoming.event_id):
            try:
                # Deferring first answers within Discord's 3 s even when the thread's turn is busy; a replayed
                # interaction fails here (already acknowledged), which is exactly when nothing must be posted.
                await interaction.response.defer(ephemeral=True, thinking=True)
            except discord.HTTPException as exc:
                log.info("discord interaction not acknowledged", extra={"status": exc.status, "code": exc.code})
                return
            try:
                reply = await self._gateway.handle(incoming)
                if reply is None:
                    await interaction.delete_original_response()
                    return
                text = split_message(reply.text, DISCORD_MAX_CHARS, max_parts=1)[0]
                await interaction.edit_original_response(content=text)
            except Exception:
                log.exception("discord command reply failed")
                with contextlib.suppress(discord.HTTPException):
                    await interaction.edit_original_response(content=GatewayError.user_message)


async def _apologise(message: discord.Message) -> None:
    # A new message, not an edit: whatever part of the answer did get out stays readable.
    try:
        await message.channel.send(
            GatewayError.user_message, reference=message.to_reference(fail_if_not_exists=False), mention_author=False
        )
    except discord.HTTPException as exc:
        log.warning("discord apology failed too", extra={"status": exc.status})
