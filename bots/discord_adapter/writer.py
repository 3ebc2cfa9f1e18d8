"""Posting one reply on Discord, from the stored `IncomingMessage` alone: any process can write it.

`progress(text)` posts the first part as a reply to the user's message, then edits it (the core's
ProgressPump throttles; nothing here does). `finish(text)` makes the reply read exactly `text`, split by
`core.chunking` to DISCORD_MAX_CHARS and at most DISCORD_MAX_PARTS parts: the first edited into the
progress message when there is one, the others posted after it in the channel.

Each part is posted once, also when Discord stored a message but its answer was lost. Every send carries
the nonce `reply_nonce(message key, part)`, the same in every process, and discord.py 2.7 marks every
send that has a nonce `enforce_nonce: true` (`discord.http.handle_message_parameters`; `Messageable.send`
has no `enforce_nonce` argument of its own): Discord then answers a repeat by the same author within a
few minutes with the message it already has. So discord.py's own retry after a 5xx, `_retrying`'s after a
dropped connection, and another process re-doing the reply after a crash all get the first message back.
A reply resumed later than Discord's nonce window by a process that does not know its messages could
post them again; the core records the first message's ID (`posted`) to make that rare.

A mention that opens a thread (DISCORD_AUTO_THREAD; `open_thread` in the metadata names it) is answered in
the thread Discord creates on that message, whose ID is the message's: the thread is opened before the
first thing is shown there (typing included), and opening it again, in a retry or in another process,
answers 160004 "thread already created", which means it is there to use. Where Discord will not open it
(no permission, say), the answer goes into the channel as a reply, as without the setting.

Mentions never notify: the client's allowed_mentions is none, which discord.py applies to every send and
edit, and the reply spares the user's ping (mention_author=False).
"""

from __future__ import annotations

__all__ = [
    "DISCORD_MAX_CHARS",
    "DISCORD_MAX_PARTS",
    "DiscordReply",
    "DiscordWriters",
    "THREAD_ALREADY_CREATED",
    "InteractionReply",
    "reply_nonce",
]

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Final, TypeVar

import aiohttp
import discord

from bots.discord_adapter.approvals import approval_view, closed_content, prompt_content
from bots.discord_adapter.incoming import thread_flag
from core.chunking import split_message
from core.delivery import ReplyWriter
from core.errors import StoreError
from core.store.approvals import ApprovalRecord
from core.store.base import Flags
from core.turns import IncomingMessage

log = logging.getLogger(__name__)

DISCORD_MAX_CHARS: Final = 2000
DISCORD_MAX_PARTS: Final = 10
ORIGINAL: Final = "@original"  # the interaction's own response, in webhook message routes
# Failures a best-effort call swallows (logged): Discord's answers and the transport's.
_SEND_ERRORS: Final = (discord.HTTPException, aiohttp.ClientError, TimeoutError)
# Failures after which nobody knows whether Discord acted: only a nonce (or an edit) makes a retry safe.
_AMBIGUOUS: Final = (aiohttp.ClientConnectionError, TimeoutError)
_TRIES: Final = 3
THREAD_ALREADY_CREATED: Final = 160004  # Discord's code for a second thread on one message
_ARCHIVE_MINUTES: Final = 1440
_RETRY_SECONDS: Final = 0.5
T = TypeVar("T")


def reply_nonce(message_key: str, part: int | str) -> int:
    """The nonce of one part of the reply to `message_key`: 63 bits, the same in every process."""
    digest = hashlib.blake2b(f"discord-reply/{message_key}/{part}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> 1  # 19 digits at most: Discord takes up to 25 characters


async def _retrying(call: Callable[[], Awaitable[T]], what: str) -> T:
    """`call` again after a dropped connection; only for idempotent calls (a send with a nonce, an edit)."""
    for attempt in range(1, _TRIES):
        try:
            return await call()
        except _AMBIGUOUS as exc:
            log.warning("discord %s not confirmed (%s); trying again", what, type(exc).__name__)
            await asyncio.sleep(_RETRY_SECONDS * attempt)  # back-off before the retry
    return await call()


async def _edit(message: discord.Message | discord.PartialMessage, text: str) -> None:
    async def edit() -> None:
        await message.edit(content=text)

    await _retrying(edit, "edit")


class DiscordWriters:
    """The `ReplyWriter` of each stored Discord message or slash command, posting through `client`."""

    def __init__(self, client: discord.Client, *, flags: Flags | None = None, ttl_seconds: int | None = None) -> None:
        self._client = client
        self._flags = flags  # set: each thread answered in is remembered (thread_flag), for follow-ups
        self._ttl_seconds = ttl_seconds

    def __call__(self, incoming: IncomingMessage) -> ReplyWriter:
        if incoming.metadata.get("interaction_token"):
            return InteractionReply(self._client, incoming)
        thread = incoming.thread_ref
        if self._flags is None or thread is None:
            return DiscordReply(self._client, incoming)
        return DiscordReply(self._client, incoming, on_posted=lambda: self._remember(thread))

    async def _remember(self, thread_id: str) -> None:
        assert self._flags is not None
        try:
            await self._flags.set_flag(thread_flag(thread_id), self._ttl_seconds)
        except StoreError as exc:
            log.warning("discord thread not remembered: %s", exc, extra={"platform": "discord"})


class DiscordReply:
    """The reply to one user message; `posted` holds the IDs of the messages it wrote, first one first."""

    def __init__(
        self,
        client: discord.Client,
        incoming: IncomingMessage,
        *,
        on_posted: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        meta = incoming.metadata
        channel_id = int(meta.get("channel_id") or incoming.channel_id)
        guild_id = int(meta["guild_id"]) if meta.get("guild_id") else None
        self._on_posted = on_posted
        message_id = int(meta.get("message_id") or incoming.event_id)
        self._client = client
        self._channel = self._parent = client.get_partial_messageable(channel_id, guild_id=guild_id)
        # fail_if_not_exists=False: if the user deleted their message meanwhile, the answer still goes out.
        self._reference: discord.MessageReference | None = discord.MessageReference(
            message_id=message_id, channel_id=channel_id, guild_id=guild_id, fail_if_not_exists=False
        )
        self._parent_reference = self._reference
        self._thread_name = meta.get("open_thread") or None
        self._thread_lock = asyncio.Lock()
        if self._thread_name is not None:  # the thread to open has the message's ID; the message heads it
            self._channel = client.get_partial_messageable(message_id, guild_id=guild_id)
            self._reference = None
        self._key = incoming.dedupe_key
        self._first: discord.Message | discord.PartialMessage | None = None
        self._shown: str | None = None
        self._previews_on = True
        self.posted: list[str] = []

    def resume(self, posted: Sequence[str]) -> None:
        """Go on with a reply an earlier owner began: its first message is edited, not posted again."""
        if posted:
            self._first = self._channel.get_partial_message(int(posted[0]))
            self._shown = None  # unknown: the final text is always written
            self.posted = [posted[0]]

    async def progress(self, text: str) -> None:
        """Show the text so far in the first message. Best effort: a failure stops the previews only."""
        if not self._previews_on or not text.strip():
            return
        preview = split_message(text, DISCORD_MAX_CHARS)[0]  # the other parts appear with `finish`
        if preview == self._shown:
            return
        try:
            await self._write_first(preview)
        except _SEND_ERRORS as exc:
            self._previews_on = False
            log.warning("discord progress failed; the final text follows: %s", type(exc).__name__)

    async def finish(self, text: str) -> None:
        """Make the reply read exactly `text`, each part posted once.

        Raises:
            discord.HTTPException: Discord refused a send or an edit.
            aiohttp.ClientError: Discord could not be reached.
        """
        first, *rest = split_message(text, DISCORD_MAX_CHARS, max_parts=DISCORD_MAX_PARTS)
        if self._shown != first:
            await self._write_first(first)
        for part, content in enumerate(rest, start=1):
            message = await self._send(content, part)
            if message.content != content:  # an earlier owner's message, holding another text
                await _edit(message, content)
            self.posted.append(str(message.id))
        if self._on_posted is not None:
            await self._on_posted()

    async def post_approval(self, record: ApprovalRecord) -> str:
        """The approval prompt with its buttons, replying to the user's message; returns its message ID.

        Its nonce is the approval's: a resumed turn that did not learn the first post gets that message back.
        """
        nonce = reply_nonce(self._key, f"approval-{record.approval_id}")
        view = approval_view(record)
        await self._open_thread()

        async def send() -> discord.Message:
            if self._reference is None:
                return await self._channel.send(prompt_content(record), nonce=nonce, view=view)
            return await self._channel.send(
                prompt_content(record), nonce=nonce, reference=self._reference, mention_author=False, view=view
            )

        message = await _retrying(send, "approval prompt")
        return str(message.id)

    async def close_approval(self, record: ApprovalRecord) -> None:
        """The prompt shows the outcome, without buttons. Best effort."""
        if not record.prompt:
            return
        try:
            await self._channel.get_partial_message(int(record.prompt)).edit(content=closed_content(record), view=None)
        except _SEND_ERRORS as exc:
            log.warning("discord approval prompt not closed: %s", type(exc).__name__)

    async def notice(self, text: str, *, tag: str = "notice") -> None:
        """A new message replying to the user's. Best effort: never raises."""
        try:
            await self._send(text, tag)
        except _SEND_ERRORS as exc:
            log.warning("discord notice not posted: %s", type(exc).__name__)

    def working(self) -> AbstractAsyncContextManager[None]:
        return self._typing()

    @contextlib.asynccontextmanager
    async def _typing(self) -> AsyncIterator[None]:
        # Typing runs beside the turn: a slow or refused typing call never delays the model.
        task = asyncio.create_task(self._type(), name="discord-typing")
        try:
            yield
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def _type(self) -> None:
        try:
            await self._open_thread()
            async with self._channel.typing():
                await asyncio.Event().wait()  # until the turn's answer is in
        except _SEND_ERRORS as exc:
            log.warning("discord typing failed: %s", type(exc).__name__)

    async def _open_thread(self) -> None:
        """Open the thread this reply goes into, once; where Discord will not, reply in the channel instead."""
        if self._thread_name is None:
            return
        async with self._thread_lock:
            name = self._thread_name
            if name is None:
                return
            fields = {"platform": "discord", "thread_id": self._channel.id}
            try:
                await _retrying(lambda: self._start_thread(name), "thread")  # idempotent: see THREAD_ALREADY_CREATED
                log.info("discord thread opened", extra=fields)
            except discord.HTTPException as exc:
                if exc.code == THREAD_ALREADY_CREATED:
                    log.info("discord thread already open", extra=fields)
                else:
                    log.warning("discord thread not opened (HTTP %s, code %s): replying in the channel", exc.status,
                                exc.code, extra=fields)  # fmt: skip
                    self._channel, self._reference = self._parent, self._parent_reference
            except (aiohttp.ClientError, TimeoutError) as exc:
                log.warning("discord thread not opened (%s): replying in the channel", type(exc).__name__)
                self._channel, self._reference = self._parent, self._parent_reference
            # Only now: a call cancelled halfway (the typing task, at the turn's end) leaves it to the next one.
            self._thread_name = None

    async def _start_thread(self, name: str) -> None:
        await self._client.http.start_thread_with_message(
            self._parent.id, self._channel.id, name=name, auto_archive_duration=_ARCHIVE_MINUTES
        )

    async def _write_first(self, text: str) -> None:
        first = self._first
        if first is None:
            message = await self._send(text, 0)
            self._first, self.posted = message, [str(message.id)]
            if message.content == text:
                self._shown = text
                return
            first = message  # the nonce gave back an earlier owner's message: it shows another text
        await _edit(first, text)
        self._shown = text

    async def _send(self, text: str, part: int | str) -> discord.Message:
        await self._open_thread()
        reference = self._reference if not isinstance(part, int) or part == 0 else None  # the first part, notices
        nonce = reply_nonce(self._key, part)

        async def send() -> discord.Message:
            if reference is not None:
                return await self._channel.send(text, nonce=nonce, reference=reference, mention_author=False)
            return await self._channel.send(text, nonce=nonce)

        return await _retrying(send, "send")


class InteractionReply:
    """A slash command's ephemeral answer: its deferred "thinking…" response edited (an edit is never doubled).

    Built from the interaction's application ID and token alone, so another process can answer it too
    (within the token's 15 minutes).
    """

    def __init__(self, client: discord.Client, incoming: IncomingMessage) -> None:
        meta = incoming.metadata
        self._webhook = discord.Webhook.partial(int(meta["application_id"]), meta["interaction_token"], client=client)
        self.posted: list[str] = []

    def resume(self, posted: Sequence[str]) -> None:
        self.posted = list(posted[:1])

    async def progress(self, text: str) -> None:
        """Commands do not stream."""

    async def finish(self, text: str) -> None:
        """Raises: discord.HTTPException (the token expired, say) or aiohttp.ClientError."""
        await _retrying(lambda: self._edit(split_message(text, DISCORD_MAX_CHARS, max_parts=1)[0]), "edit")
        self.posted = [ORIGINAL]

    async def notice(self, text: str) -> None:
        try:
            await self._edit(text)
        except _SEND_ERRORS as exc:
            log.warning("discord command notice not posted: %s", type(exc).__name__)

    def working(self) -> AbstractAsyncContextManager[None]:
        return contextlib.nullcontext()  # the deferred response already shows "thinking…"

    async def _edit(self, text: str) -> None:
        # discord.py types the ID as int, but its own edit_original_response PATCHes this "@original" route.
        await self._webhook.edit_message(ORIGINAL, content=text)  # type: ignore[call-overload]
