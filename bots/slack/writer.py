"""Posting one reply on Slack: progressive while the model writes, then the exact final text, once.

`progress(text_so_far)` any number of times (the caller throttles it), then `finish(text)` once:
- in a thread, progress goes through Slack's chat stream (chat.startStream / appendStream /
  stopStream, via slack_sdk's `AsyncChatStream`); at the top level of a DM, where streams cannot
  go, or where Slack refuses to start one, a message is posted and then edited (chat.update);
- progress is best effort and uses `progress_client`, which has no rate-limit retries: waiting out
  a Retry-After there would stall the model's stream. A `ratelimited` answer pauses progress for
  its Retry-After; any other refusal stops progress for this reply. Nothing is lost either way:
- `finish` makes the reply read exactly the final text, whatever progress showed, through the
  main client (which retries per Retry-After); it posts `text.message_parts`, each part once, and
  splits a part Slack finds too long (`msg_too_long`, `msg_blocks_too_long`) in halves.

Each part is posted at most once, also when Slack acted but its answer was lost (a 5xx, a dropped
connection): every post carries message metadata naming the message key and the part, and before a
post is tried again the thread (or DM) is searched for a message carrying it. A reply resumed by
another process (`resume`) edits the message the first owner posted instead of posting anew.
"""

from __future__ import annotations

__all__ = ["REPLY_EVENT", "THINKING", "TRANSPORT_ERRORS", "SlackReply", "error_code"]

import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

from aiohttp import ClientError
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.web.async_chat_stream import AsyncChatStream
from slack_sdk.web.async_client import AsyncWebClient

from bots.slack.approvals import closed_blocks, prompt_blocks, prompt_text
from bots.slack.text import (
    MAX_PART_CHARS,
    MAX_PARTS,
    fallback_text,
    markdown_blocks,
    message_parts,
    neutralise,
    preview,
    stable_prefix,
)
from core.agent_turn import running_tools
from core.approvals import outcome_text
from core.chunking import split_message
from core.store.approvals import ApprovalRecord

log = logging.getLogger(__name__)

# What a Web API call raises besides Slack's own answer: the request never got one.
TRANSPORT_ERRORS = (SlackClientError, ClientError, TimeoutError)
_TOO_LONG = frozenset({"msg_too_long", "msg_blocks_too_long"})
_MIN_PART_CHARS = 500
REPLY_EVENT = "chat_gateway_reply"
_POST_TRIES = 3
_LEDGER_PAGE = 100
THINKING = "is thinking…"  # an assistant thread's status line while the model works
_STATUS_CHARS = 60


def error_code(exc: SlackApiError) -> str:
    """Slack's error code (`channel_not_found`, `ratelimited`, ...): safe to log, never the token."""
    return str(exc.response.get("error") or "unknown_error")


def _retry_after_seconds(exc: SlackApiError) -> float:
    headers = getattr(exc.response, "headers", None) or {}
    try:
        return max(float(headers.get("Retry-After", 1)), 1.0)
    except ValueError:
        return 1.0


class SlackReply:
    """One reply, in one channel or thread; `posted` lists the ts of every message it wrote."""

    def __init__(
        self,
        client: AsyncWebClient,
        *,
        progress_client: AsyncWebClient | None = None,
        channel: str,
        thread_ts: str | None,
        recipient_team_id: str | None = None,
        recipient_user_id: str | None = None,
        part_chars: int = MAX_PART_CHARS,
        max_parts: int = MAX_PARTS,
        message_key: str = "",
        working: Callable[[], contextlib.AbstractAsyncContextManager[None]] | None = None,
        on_posted: Callable[[], Awaitable[None]] | None = None,
        on_status: Callable[[str], Awaitable[None]] | None = None,
        allow_user_mentions: bool = False,
    ) -> None:
        self._allow_mentions = allow_user_mentions
        self._client = client
        self._progress_client = progress_client or client
        self._channel = channel
        self._thread_ts = thread_ts
        self._recipient = (recipient_team_id, recipient_user_id)
        self._part_chars = part_chars
        self._max_parts = max_parts
        self._may_stream = thread_ts is not None  # Slack streams only as thread replies
        self._stream: AsyncChatStream | None = None
        self._streamed = ""  # handed to the stream: sent, or in its buffer until stop
        self._edited_ts: str | None = None
        self._shown = ""
        self._progressing = True
        self._paused_until = 0.0  # monotonic time
        self._message_key = message_key
        self._working = working
        self._on_posted = on_posted
        self._on_status = on_status
        self._status: str | None = None  # the status line progress last asked for
        self._parts_posted = 0
        self._resumed = False
        self.posted: list[str] = []

    def resume(self, posted: Sequence[str]) -> None:
        """Go on with a reply an earlier owner began: its first message becomes ours to edit."""
        self._resumed = True  # the earlier owner may have posted more parts: every post looks first
        if posted:
            self._edited_ts, self._may_stream = posted[0], False
            self.posted = [posted[0]]
            self._parts_posted = 1

    def working(self) -> contextlib.AbstractAsyncContextManager[None]:
        return self._working() if self._working is not None else _nothing()

    async def notice(self, text: str) -> None:
        try:
            await self._client.chat_postMessage(channel=self._channel, thread_ts=self._thread_ts, text=text)
        except SlackApiError as exc:
            log.warning("slack failure notice not posted: %s", error_code(exc), extra=self._log_fields(exc))
        except TRANSPORT_ERRORS as exc:
            log.warning("slack failure notice not posted: %s", type(exc).__name__, extra={"platform": "slack"})

    async def post_approval(self, record: ApprovalRecord) -> str:
        """The approval prompt, with its buttons, where the reply goes; returns its ts."""
        response = await self._client.chat_postMessage(
            channel=self._channel, thread_ts=self._thread_ts, text=prompt_text(record), blocks=prompt_blocks(record)
        )
        return str(response["ts"])

    async def close_approval(self, record: ApprovalRecord) -> None:
        """The prompt shows the outcome, without buttons. Best effort."""
        if not record.prompt:
            return
        try:
            await self._client.chat_update(
                channel=self._channel, ts=record.prompt, text=f"{prompt_text(record)}: {outcome_text(record)}",
                blocks=closed_blocks(record),
            )  # fmt: skip
        except SlackApiError as exc:
            log.warning("slack approval prompt not closed: %s", error_code(exc), extra=self._log_fields(exc))
        except TRANSPORT_ERRORS as exc:
            log.warning("slack approval prompt not closed: %s", type(exc).__name__, extra={"platform": "slack"})

    async def progress(self, text: str) -> None:
        """Show the text so far; never raises for Slack's errors (progress pauses or stops instead)."""
        await self._show_status(text)
        if not self._progressing or time.monotonic() < self._paused_until:
            return
        try:
            if self._may_stream:
                await self._stream_progress(text)
            else:
                await self._edit_progress(text)
        except SlackApiError as exc:
            if error_code(exc) == "ratelimited":
                self._paused_until = time.monotonic() + _retry_after_seconds(exc)
                log.info("slack progress paused: ratelimited", extra=self._log_fields(exc))
            elif self._stream is not None and self._stream.ts is None:
                # Slack would not start a stream here (not enabled, wrong context): edit instead.
                self._stream, self._streamed, self._may_stream = None, "", False
                log.info("slack stream refused: %s", error_code(exc), extra=self._log_fields(exc))
            else:
                self._progressing = False
                log.warning("slack progress stopped: %s", error_code(exc), extra=self._log_fields(exc))
        except TRANSPORT_ERRORS as exc:
            # Progress must never fail the turn: the gateway would count it as the model's failure.
            self._progressing = False
            log.warning("slack progress stopped: %s", type(exc).__name__, extra={"platform": "slack"})

    async def finish(self, text: str) -> None:
        """Make the reply read exactly `text`, in as many messages as it needs.

        Raises:
            SlackApiError: Slack refused a message even after splitting (`channel_not_found`, ...).
        """
        first, *rest = message_parts(text, self._part_chars, self._max_parts, allow_user_mentions=self._allow_mentions)
        if self._stream is not None and self._stream.ts is not None:
            await self._finish_stream(self._stream, self._stream.ts, first)
        elif self._edited_ts is None or self._shown != first:  # an edit that changes nothing is a wasted call
            await self._write(first, self._edited_ts)
        for part in rest:
            await self._write(part, None)
        if self._on_posted is not None:
            await self._on_posted()

    async def _show_status(self, text: str) -> None:
        """Name the tool being run in the thread's status line; back to thinking once it is done."""
        if self._on_status is None:
            return
        tools = running_tools(text)
        status = f"is running {tools}"[:_STATUS_CHARS] + "…" if tools else (THINKING if self._status else None)
        if status is not None and status != self._status:
            self._status = status if tools else None
            await self._on_status(status)

    async def _stream_progress(self, text: str) -> None:
        shown = stable_prefix(self._neutralise(text)[: self._part_chars])
        if not shown.strip() or len(shown) <= len(self._streamed) or not shown.startswith(self._streamed):
            return
        delta, self._streamed = shown[len(self._streamed) :], shown
        if self._stream is None:
            self._stream = await self._progress_client.chat_stream(
                channel=self._channel,
                thread_ts=str(self._thread_ts),
                recipient_team_id=self._recipient[0],
                recipient_user_id=self._recipient[1],
                buffer_size=1,  # calls are throttled by the caller already
            )
        await self._stream.append(markdown_text=delta)
        if self._stream.ts is not None and self._stream.ts not in self.posted:
            self.posted.append(self._stream.ts)

    async def _edit_progress(self, text: str) -> None:
        shown = preview(self._neutralise(text), self._part_chars)
        if not shown.strip() or shown == self._shown:
            return
        if self._edited_ts is None:
            self._edited_ts = await self._post(shown, self._progress_client)
        else:
            await self._update(self._edited_ts, shown, self._progress_client)
        self._shown = shown

    async def _finish_stream(self, stream: AsyncChatStream, ts: str, first: str) -> None:
        rest: str | None = first[len(self._streamed) :] if first.startswith(self._streamed) else None
        try:
            await stream.stop(markdown_text=rest or None)
        except SlackApiError as exc:
            log.warning("slack stream stop failed: %s", error_code(exc), extra=self._log_fields(exc))
            rest = None
        if rest is None:
            # What was streamed is not the start of the final text (or stopping failed): rewrite it whole.
            await self._write(first, ts)

    async def _write(self, part: str, ts: str | None) -> None:
        """Post `part`, or rewrite message `ts` with it, halving it while Slack says it is too long."""
        try:
            await (self._post(part) if ts is None else self._update(ts, part))
        except SlackApiError as exc:
            if error_code(exc) not in _TOO_LONG or len(part) <= _MIN_PART_CHARS:
                raise
            log.info("slack part too long, splitting: %s", error_code(exc), extra=self._log_fields(exc, len(part)))
            first, *rest = split_message(part, len(part) // 2)
            await self._write(first, ts)
            for piece in rest:
                await self._write(piece, None)

    async def _post(self, part: str, client: AsyncWebClient | None = None) -> str:
        index = self._parts_posted
        metadata = {"event_type": REPLY_EVENT, "event_payload": {"message_key": self._message_key, "part": index}}
        found = await self._find_posted(index) if self._resumed else None
        if found is not None:
            await self._update(found, part, client)  # posted by the earlier owner: make it read this part
            self._parts_posted += 1
            self.posted.append(found)
            return found
        for attempt in range(1, _POST_TRIES + 1):
            try:
                response = await (client or self._client).chat_postMessage(
                    channel=self._channel, thread_ts=self._thread_ts, text=self._fallback(part),
                    blocks=markdown_blocks(part), metadata=metadata,
                )  # fmt: skip
                ts = str(response["ts"])
                break
            except (SlackApiError, *TRANSPORT_ERRORS) as exc:
                if not _ambiguous(exc) or attempt == _POST_TRIES:
                    raise
                # Slack may have stored it before its answer got lost: look before posting again.
                found = await self._find_posted(index)
                if found is not None:
                    log.info("slack post found after a lost answer", extra={"platform": "slack", "part": index})
                    ts = found
                    break
        self._parts_posted += 1
        self.posted.append(ts)
        return ts

    async def _find_posted(self, index: int) -> str | None:
        try:
            if self._thread_ts is not None:
                page = await self._client.conversations_replies(
                    channel=self._channel, ts=self._thread_ts, include_all_metadata=True, limit=_LEDGER_PAGE
                )
            else:
                page = await self._client.conversations_history(
                    channel=self._channel, include_all_metadata=True, limit=_LEDGER_PAGE
                )
        except (SlackApiError, *TRANSPORT_ERRORS) as exc:
            log.warning("slack post lookup failed: %s", type(exc).__name__, extra={"platform": "slack"})
            return None
        for message in page.get("messages") or []:
            meta: dict[str, Any] = message.get("metadata") or {}
            payload = meta.get("event_payload") or {}
            ours = meta.get("event_type") == REPLY_EVENT and payload.get("message_key") == self._message_key
            if ours and payload.get("part") == index:
                return str(message["ts"])
        return None

    async def _update(self, ts: str, part: str, client: AsyncWebClient | None = None) -> str:
        await (client or self._client).chat_update(
            channel=self._channel, ts=ts, text=self._fallback(part), blocks=markdown_blocks(part)
        )
        return ts

    def _neutralise(self, text: str) -> str:
        return neutralise(text, allow_user_mentions=self._allow_mentions)

    def _fallback(self, part: str) -> str:
        return fallback_text(part, allow_user_mentions=self._allow_mentions)

    def _log_fields(self, exc: SlackApiError, chars: int | None = None) -> dict[str, object]:
        fields: dict[str, object] = {"platform": "slack", "channel": self._channel, "slack_error": error_code(exc)}
        if chars is not None:
            fields["chars"] = chars
        return fields


def _ambiguous(exc: Exception) -> bool:
    """Whether Slack may have acted although the call failed: a 5xx, or no answer at all."""
    if isinstance(exc, SlackApiError):
        return int(getattr(exc.response, "status_code", 0) or 0) >= 500
    return True


@contextlib.asynccontextmanager
async def _nothing() -> AsyncIterator[None]:
    yield
