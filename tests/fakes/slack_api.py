"""A fake Slack platform for tests: Web API, Socket Mode and Events API helpers.

``FakeSlack`` runs an aiohttp server on 127.0.0.1 (port chosen by the OS) that speaks the
wire formats slack_sdk 3.48 really uses, so adapters can be driven with the real
``AsyncWebClient``/``SocketModeClient``/Bolt and checked against Slack's limits::

    async with FakeSlack(bot_user_id="UBOT", bot_id="BBOT", team_id="T1") as slack:
        client = AsyncWebClient(token="xoxb-test", base_url=slack.api_url)
        ...
        call = await slack.next_call("chat.postMessage", timeout=5)

Wire facts this fake relies on (read from slack_sdk's source, not guessed):

* ``AsyncWebClient`` builds URLs with ``urllib.parse.urljoin(base_url, method)``, so the
  base URL must end in ``/`` (``api_url`` does); without it the ``api`` segment is dropped.
* Methods with blocks (chat.postMessage/update/postEphemeral, the stream methods,
  assistant.threads.setStatus/setSuggestedPrompts) send a JSON body; ``params`` methods (auth.test,
  chat.delete, reactions.*, apps.connections.open, assistant.threads.setTitle) POST with arguments
  in the *query string* and an empty form body; conversations.replies and users.info are GETs. The token always travels
  as ``Authorization: Bearer ...``. The fake merges query, form and JSON arguments and
  decodes JSON-encoded ``blocks``/``attachments``/``chunks``/``metadata`` so ``Call.args``
  looks the same whichever encoding the client chose.
* Message metadata (``{"event_type", "event_payload"}``) is stored as posted, but Slack hands the
  ``event_payload`` back only to readers that ask with ``include_all_metadata`` (and apps whose
  manifest subscribes to the event type, which the fake does not model): everywhere else, the
  chat.postMessage/update answers included, a message carries ``{"event_type": ...}`` alone.
  chat.update keeps the old metadata unless it is given some; ``{}`` removes it.

Files: :meth:`FakeSlack.add_file` keeps a file and returns the object Slack puts in a message event's
``files``; its ``url_private_download`` (and ``url_private``) is served on the fake only to
``Authorization: Bearer xoxb-...`` while the app has the ``files:read`` scope (``FakeSlack.scopes``).
Otherwise Slack does not refuse with an error: it answers 200 with its HTML sign-in page, and so does
the fake. Every download is recorded in ``FakeSlack.downloads``. ``files.info`` describes a kept file
(``missing_scope`` without files:read); :meth:`FakeSlack.unlinked` gives the link-less form Slack Connect
events carry.

Faults: :meth:`FakeSlack.fail_next` refuses a call (nothing happens); :meth:`FakeSlack.lose_responses`
and :meth:`FakeSlack.drop_responses` let a call take effect and then lose its answer, the case a
client cannot tell apart from a refusal.
"""

from __future__ import annotations

__all__ = [
    "CHANNEL_NOT_FOUND",
    "DEFAULT_APP_ID",
    "DEFAULT_BOT_ID",
    "DEFAULT_BOT_USER_ID",
    "DEFAULT_CHANNEL_ID",
    "DEFAULT_IM_CHANNEL_ID",
    "DEFAULT_TEAM_ID",
    "DEFAULT_USER_ID",
    "MAX_BLOCKS",
    "MAX_SUGGESTED_PROMPTS",
    "MAX_MARKDOWN_BLOCKS_LENGTH",
    "MAX_STREAM_MARKDOWN_LENGTH",
    "MAX_TEXT_LENGTH",
    "USER_NOT_FOUND",
    "VERIFICATION_TOKEN",
    "Ack",
    "Call",
    "EphemeralMessage",
    "Envelope",
    "FileDownload",
    "FakeSlack",
    "JsonDict",
    "Message",
    "User",
    "app_mention",
    "assistant_thread_started",
    "bot_message",
    "channel_message",
    "event_callback",
    "im_message",
    "next_ts",
    "sign",
    "slash_command_form",
    "slash_command_payload",
]

import asyncio
import base64
import copy
import hashlib
import hmac
import itertools
import json
import re
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any
from urllib.parse import urlencode

from aiohttp import WSCloseCode, WSMsgType, web
from multidict import CIMultiDict, CIMultiDictProxy

JsonDict = dict[str, Any]

# Slack's documented limits; adapters are expected to split or truncate before hitting them.
MAX_TEXT_LENGTH = 40_000  # chat.postMessage/update "text" -> msg_too_long
MAX_MARKDOWN_BLOCKS_LENGTH = 12_000  # cumulative over all "markdown" blocks -> msg_blocks_too_long
MAX_BLOCKS = 50  # blocks per message -> invalid_blocks
MAX_STREAM_MARKDOWN_LENGTH = 12_000  # per markdown_text / markdown chunk of a stream call

# Sentinel ids that make the fake answer like Slack does for ids that do not exist.
CHANNEL_NOT_FOUND = "CNOTFOUND"
USER_NOT_FOUND = "UNOTFOUND"

DEFAULT_BOT_USER_ID = "UBOT"
DEFAULT_BOT_ID = "BBOT"
DEFAULT_TEAM_ID = "T1"
DEFAULT_APP_ID = "AFAKEAPP"
DEFAULT_USER_ID = "U1"
DEFAULT_CHANNEL_ID = "C1"
DEFAULT_IM_CHANNEL_ID = "D1"
VERIFICATION_TOKEN = "fake-verification-token"

_TEAM_DOMAIN = "fake-team"
_OAUTH_SCOPES = (
    "app_mentions:read,assistant:write,channels:history,chat:write,files:read,im:history,reactions:write,users:read"
)
_SIGN_IN_PAGE = (
    '<!DOCTYPE html><html lang="en-US"><head><title>Slack</title></head>'
    '<body><h1>Sign in to Fake Team</h1><form action="/signin" method="post"></form></body></html>'
)
_APP_TOKEN_METHODS = frozenset({"apps.connections.open"})
_JSON_ENCODED_ARGS = ("blocks", "attachments", "chunks", "metadata", "loading_messages", "prompts")
MAX_SUGGESTED_PROMPTS = 4  # assistant.threads.setSuggestedPrompts takes "up to four"
_MENTION = re.compile(r"<@([A-Z0-9]+)>")
_EVENT_TYPE = re.compile(r"[A-Za-z0-9_-]+")
_TS_ARG = re.compile(r"\d+(\.\d{1,6})?")

# One process-wide clock so event-built user messages and bot posts never share a ts,
# even across several FakeSlack instances.
_TS_START_MICROS = 1_700_000_000_000_100
_TS_STEP_MICROS = 100
_ts_counter = itertools.count(_TS_START_MICROS, _TS_STEP_MICROS)
_event_counter = itertools.count(1)


def next_ts() -> str:
    """Return a fresh Slack message ts, unique and increasing across the test process."""
    micros = next(_ts_counter)
    return f"{micros // 1_000_000}.{micros % 1_000_000:06d}"


def _ts_key(ts: str) -> tuple[int, int]:
    seconds, _, micros = ts.partition(".")
    return int(seconds), int(micros.ljust(6, "0")[:6])


# --------------------------------------------------------------------------- records


@dataclass(frozen=True)
class Call:
    """One Web API request as the fake received and answered it.

    ``status`` and ``response`` are what the client got. For a call whose answer was lost
    (:meth:`FakeSlack.lose_responses`, :meth:`FakeSlack.drop_responses`) the call still took
    effect: ``lost_response`` holds the answer Slack computed and never delivered, and a dropped
    connection has ``status`` 0 and an empty ``response``.
    """

    method: str
    args: JsonDict
    headers: Mapping[str, str]
    token: str | None = None
    http_method: str = "POST"
    status: int = 200
    response: JsonDict = field(default_factory=dict)
    lost_response: JsonDict | None = None

    @property
    def ok(self) -> bool:
        """Whether the client was told the call succeeded."""
        return bool(self.response.get("ok"))

    @property
    def lost(self) -> bool:
        """The call took effect, but its answer never reached the client."""
        return self.lost_response is not None

    @property
    def dropped(self) -> bool:
        """The connection was closed without any HTTP response."""
        return self.lost and self.status == 0


@dataclass
class Message:
    """A message in the fake's per-channel log; ``text`` holds streamed markdown too."""

    channel: str
    ts: str
    text: str
    user: str
    thread_ts: str | None = None
    blocks: list[JsonDict] = field(default_factory=list)
    bot_id: str | None = None
    chunks: list[JsonDict] = field(default_factory=list)  # task/plan stream chunks; markdown goes to text
    metadata: JsonDict | None = None
    streaming: bool = False  # between chat.startStream and chat.stopStream
    streamed: bool = False  # built by the stream methods, so stop-blocks render under the text
    edited_ts: str | None = None
    deleted: bool = False

    @property
    def visible_text(self) -> str:
        """What a reader sees: blocks replace ``text`` (then only a fallback), streams show both."""
        block_text = "\n".join(t for t in map(_block_text, self.blocks) if t)
        if self.streamed or not self.blocks:
            return "\n".join(t for t in (self.text, block_text) if t)
        return block_text


@dataclass(frozen=True)
class FileDownload:
    """One GET of a file URL: the token it carried (None: no Authorization) and whether the file was served."""

    file_id: str
    token: str | None
    served: bool


@dataclass(frozen=True)
class _File:
    id: str
    name: str
    data: bytes
    mimetype: str


@dataclass(frozen=True)
class EphemeralMessage:
    channel: str
    user: str
    message_ts: str
    text: str
    blocks: list[JsonDict]
    thread_ts: str | None


@dataclass(frozen=True)
class User:
    id: str
    name: str
    real_name: str
    display_name: str
    team_id: str
    is_bot: bool = False
    tz: str = "Europe/London"

    def to_api(self) -> JsonDict:
        return {
            "id": self.id,
            "team_id": self.team_id,
            "name": self.name,
            "deleted": False,
            "real_name": self.real_name,
            "tz": self.tz,
            "tz_label": "Greenwich Mean Time",
            "tz_offset": 0,
            "is_admin": False,
            "is_bot": self.is_bot,
            "is_app_user": False,
            "updated": 1_700_000_000,
            "profile": {
                "real_name": self.real_name,
                "real_name_normalized": self.real_name,
                "display_name": self.display_name,
                "display_name_normalized": self.display_name,
                "team": self.team_id,
            },
        }


@dataclass(frozen=True)
class Envelope:
    """A Socket Mode envelope; retry fields are only sent for ``events_api``."""

    envelope_id: str
    type: str
    payload: JsonDict
    accepts_response_payload: bool = False
    retry_attempt: int | None = None
    retry_reason: str | None = None

    def to_wire(self) -> JsonDict:
        wire: JsonDict = {
            "envelope_id": self.envelope_id,
            "type": self.type,
            "accepts_response_payload": self.accepts_response_payload,
            "payload": self.payload,
        }
        if self.retry_attempt is not None:
            wire["retry_attempt"] = self.retry_attempt
            wire["retry_reason"] = self.retry_reason or ""
        return wire


@dataclass(frozen=True)
class Ack:
    """A client's acknowledgement of an envelope; ``payload`` is set for slash/interactive replies."""

    envelope_id: str
    payload: JsonDict | None
    raw: JsonDict


@dataclass(frozen=True)
class _ScriptedFailure:
    error: str
    status: int
    retry_after: int | None

    def headers(self) -> dict[str, str]:
        if self.retry_after is None and self.status != 429:
            return {}
        # Slack always sends Retry-After with a 429; slack_sdk's retry handler reads it.
        return {"Retry-After": str(1 if self.retry_after is None else self.retry_after)}


@dataclass(frozen=True)
class _LostResponse:
    status: int | None  # None: close the connection without answering


def _default_error(status: int) -> str:
    return "ratelimited" if status == 429 else "internal_error" if status >= 500 else "fatal_error"


class _ApiError(Exception):
    def __init__(self, error: str, **extra: Any) -> None:
        super().__init__(error)
        self.body: JsonDict = {"ok": False, "error": error, **extra}


# --------------------------------------------------------------------------- argument parsing


async def _read_args(request: web.Request) -> JsonDict:
    args: JsonDict = {key: request.query[key] for key in request.query}
    if request.content_type == "application/json":
        body = await request.json() if request.can_read_body else {}
        if isinstance(body, dict):
            args.update(body)
    else:
        form = await request.post()
        args.update({key: form[key] for key in form})
    return {key: _decode_json_arg(key, value) for key, value in args.items()}


def _decode_json_arg(key: str, value: Any) -> Any:
    # Form-encoded clients send structured arguments as JSON strings.
    if key not in _JSON_ENCODED_ARGS or not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except ValueError:
        return value


def _extract_token(headers: Mapping[str, str], args: JsonDict) -> str | None:
    body_token = args.pop("token", None)
    authorization = headers.get("Authorization", "")
    if authorization.startswith("Bearer "):
        return authorization.removeprefix("Bearer ").strip() or None
    return str(body_token) if body_token else None


def _check_token(method: str, token: str | None) -> None:
    if not token:
        raise _ApiError("not_authed")
    if (method in _APP_TOKEN_METHODS) != token.startswith("xapp-"):
        raise _ApiError("not_allowed_token_type")


def _required(args: JsonDict, name: str) -> str:
    value = args.get(name)
    if value is None or value == "":
        message = f"[ERROR] missing required field: {name}"
        raise _ApiError("invalid_arguments", response_metadata={"messages": [message]})
    return str(value)


def _channel(args: JsonDict, key: str = "channel") -> str:
    channel = str(args.get(key) or "")
    if not channel or channel == CHANNEL_NOT_FOUND:
        raise _ApiError("channel_not_found")
    return channel


def _text(args: JsonDict) -> str | None:
    text = args.get("text")
    if text is None:
        return None
    if len(str(text)) > MAX_TEXT_LENGTH:
        raise _ApiError("msg_too_long")
    return str(text)


def _blocks(args: JsonDict) -> list[JsonDict] | None:
    blocks = args.get("blocks")
    if blocks is None:
        return None
    if not isinstance(blocks, list) or not all(isinstance(block, dict) for block in blocks):
        raise _ApiError("invalid_blocks_format")
    if len(blocks) > MAX_BLOCKS:
        message = f"[ERROR] no more than {MAX_BLOCKS} items allowed [json-pointer:/blocks]"
        raise _ApiError("invalid_blocks", response_metadata={"messages": [message]})
    markdown_length = sum(len(str(b.get("text", ""))) for b in blocks if b.get("type") == "markdown")
    if markdown_length > MAX_MARKDOWN_BLOCKS_LENGTH:
        raise _ApiError("msg_blocks_too_long")
    return blocks


def _require_content(text: str | None, blocks: list[JsonDict] | None, args: JsonDict) -> None:
    if not text and not blocks and not args.get("attachments"):
        raise _ApiError("no_text")


def _stream_content(args: JsonDict) -> tuple[str, list[JsonDict]]:
    """Split a stream call into appended markdown and the other (task/plan) chunks."""
    chunks = args.get("chunks") or []
    if not isinstance(chunks, list) or not all(isinstance(chunk, dict) for chunk in chunks):
        raise _ApiError("invalid_chunks")
    pieces = [str(args.get("markdown_text") or "")]
    pieces += [str(c.get("text", "")) for c in chunks if c.get("type") == "markdown_text"]
    if any(len(piece) > MAX_STREAM_MARKDOWN_LENGTH for piece in pieces):
        raise _ApiError("msg_too_long")
    return "".join(pieces), [c for c in chunks if c.get("type") != "markdown_text"]


def _flag(args: JsonDict, name: str) -> bool:
    """A boolean argument: slack_sdk sends Python bools as "1"/"0" in query strings, JSON bodies keep them."""
    value = args.get(name)
    if isinstance(value, bool):
        return value
    return value is not None and str(value).strip().lower() in ("1", "true")


def _metadata(args: JsonDict) -> tuple[JsonDict | None, str | None]:
    """The (metadata to store, warning) of a call that passed ``metadata``.

    Not an object: the call fails with invalid_metadata_format. An event_type with anything but
    letters, digits, ``_`` and ``-``, or an event_payload that is not an object: the message is
    posted without metadata and the answer carries Slack's invalid_metadata_schema warning.
    ``{}`` means no metadata (chat.update: remove it).
    """
    value = args["metadata"]
    if not isinstance(value, dict):
        raise _ApiError("invalid_metadata_format")
    if not value:
        return None, None
    event_type, payload = value.get("event_type"), value.get("event_payload")
    if not isinstance(event_type, str) or not _EVENT_TYPE.fullmatch(event_type) or not isinstance(payload, dict):
        return None, "invalid_metadata_schema"
    return {"event_type": event_type, "event_payload": copy.deepcopy(payload)}, None


def _with_warning(result: JsonDict, warning: str | None) -> JsonDict:
    if warning is not None:
        result.update(warning=warning, response_metadata={"warnings": [warning]})
    return result


def _ts_bound(args: JsonDict, name: str) -> tuple[int, int] | None:
    value = args.get(name)
    if value is None or value == "":
        return None
    if not _TS_ARG.fullmatch(str(value)):
        raise _ApiError(f"invalid_ts_{name}")
    return _ts_key(str(value))


def _in_window(messages: list[Message], args: JsonDict) -> list[Message]:
    """Apply ``oldest``/``latest`` (exclusive unless ``inclusive``), as the conversations.* readers do."""
    oldest, latest = _ts_bound(args, "oldest"), _ts_bound(args, "latest")
    inclusive = _flag(args, "inclusive")

    def inside(message: Message) -> bool:
        key = _ts_key(message.ts)
        if oldest is not None and (key < oldest or (key == oldest and not inclusive)):
            return False
        return latest is None or key < latest or (key == latest and inclusive)

    return [m for m in messages if inside(m)]


def _encode_cursor(ts: str) -> str:
    # Slack's cursors are base64 of "next_ts:<ts digits>", the first message of the next page.
    seconds, micros = _ts_key(ts)
    return base64.b64encode(f"next_ts:{seconds}{micros:06d}".encode()).decode()


def _decode_cursor(cursor: Any) -> tuple[int, int] | None:
    if not cursor:
        return None
    try:
        digits = base64.b64decode(str(cursor), validate=True).decode().removeprefix("next_ts:")
        if len(digits) <= 6 or not digits.isdigit():
            raise ValueError(digits)
    except ValueError:
        raise _ApiError("invalid_cursor") from None
    return int(digits[:-6]), int(digits[-6:])


def _page(
    messages: list[Message], args: JsonDict, *, default_limit: int, max_limit: int, newest_first: bool
) -> tuple[list[Message], str]:
    """One page of ``messages`` (already in answer order) and the cursor of the next, "" at the end.

    Cursors name a ts rather than an offset, so messages posted between two page reads neither
    repeat nor shift a page, as with Slack.
    """
    start = _decode_cursor(args.get("cursor"))
    if start is not None:
        messages = [m for m in messages if (_ts_key(m.ts) <= start if newest_first else _ts_key(m.ts) >= start)]
    try:
        limit = int(args.get("limit") or default_limit)
    except ValueError:
        raise _ApiError("invalid_limit") from None
    limit = min(max(limit, 1), max_limit)
    page, rest = messages[:limit], messages[limit:]
    return page, _encode_cursor(rest[0].ts) if rest else ""


# --------------------------------------------------------------------------- block text


def _block_text(block: JsonDict) -> str:
    kind = block.get("type")
    if kind == "markdown":
        return str(block.get("text", ""))
    if kind in ("section", "header"):
        parts = [_text_object(block.get("text"))] + [_text_object(f) for f in block.get("fields", [])]
        return "\n".join(p for p in parts if p)
    if kind == "context":
        return " ".join(t for t in map(_text_object, block.get("elements", [])) if t)
    if kind == "rich_text":
        return "".join(_rich_text_pieces(block))
    return ""


def _text_object(obj: Any) -> str:
    return str(obj.get("text", "")) if isinstance(obj, dict) else ""


def _rich_text_pieces(node: JsonDict) -> Iterator[str]:
    if node.get("type") == "user":
        yield f"<@{node.get('user_id', '')}>"
    elif isinstance(node.get("text"), str):
        yield node["text"]
    for child in node.get("elements", []):
        if isinstance(child, dict):
            yield from _rich_text_pieces(child)


# --------------------------------------------------------------------------- event builders


def _rich_text_blocks(text: str) -> list[JsonDict]:
    """Mirror what the Slack client attaches to typed messages, mentions as user elements."""
    elements: list[JsonDict] = []
    position = 0
    for match in _MENTION.finditer(text):
        if match.start() > position:
            elements.append({"type": "text", "text": text[position : match.start()]})
        elements.append({"type": "user", "user_id": match.group(1)})
        position = match.end()
    if position < len(text):
        elements.append({"type": "text", "text": text[position:]})
    section = {"type": "rich_text_section", "elements": elements}
    return [{"type": "rich_text", "block_id": uuid.uuid4().hex[:5], "elements": [section]}]


def _user_message(
    event_type: str,
    text: str,
    *,
    user: str,
    channel: str,
    ts: str | None,
    thread_ts: str | None,
    team: str,
) -> JsonDict:
    message_ts = ts or next_ts()
    event: JsonDict = {
        "type": event_type,
        "client_msg_id": str(uuid.uuid4()),
        "text": text,
        "user": user,
        "ts": message_ts,
        "blocks": _rich_text_blocks(text),
        "team": team,
        "channel": channel,
        "event_ts": message_ts,
    }
    if thread_ts is not None:
        event["thread_ts"] = thread_ts
    return event


def app_mention(
    text: str = "hello",
    *,
    user: str = DEFAULT_USER_ID,
    channel: str = DEFAULT_CHANNEL_ID,
    ts: str | None = None,
    thread_ts: str | None = None,
    team: str = DEFAULT_TEAM_ID,
    bot_user_id: str = DEFAULT_BOT_USER_ID,
) -> JsonDict:
    """An ``app_mention`` event; the bot mention is prepended unless ``text`` already has it.

    Real app_mention events carry no ``channel_type``, so neither does this one.
    """
    mention = f"<@{bot_user_id}>"
    full_text = text if mention in text else f"{mention} {text}"
    return _user_message("app_mention", full_text, user=user, channel=channel, ts=ts, thread_ts=thread_ts, team=team)


def channel_message(
    text: str = "hello",
    *,
    user: str = DEFAULT_USER_ID,
    channel: str = DEFAULT_CHANNEL_ID,
    ts: str | None = None,
    thread_ts: str | None = None,
    team: str = DEFAULT_TEAM_ID,
    channel_type: str = "channel",
) -> JsonDict:
    """A plain ``message`` event from a person in a channel (``channel_type`` "channel"/"group")."""
    event = _user_message("message", text, user=user, channel=channel, ts=ts, thread_ts=thread_ts, team=team)
    event["channel_type"] = channel_type
    return event


def im_message(
    text: str = "hello",
    *,
    user: str = DEFAULT_USER_ID,
    channel: str = DEFAULT_IM_CHANNEL_ID,
    ts: str | None = None,
    thread_ts: str | None = None,
    team: str = DEFAULT_TEAM_ID,
) -> JsonDict:
    """A ``message`` event in a direct message with the bot."""
    return channel_message(text, user=user, channel=channel, ts=ts, thread_ts=thread_ts, team=team, channel_type="im")


def bot_message(
    text: str = "hello",
    *,
    bot_user_id: str = DEFAULT_BOT_USER_ID,
    bot_id: str = DEFAULT_BOT_ID,
    channel: str = DEFAULT_CHANNEL_ID,
    ts: str | None = None,
    thread_ts: str | None = None,
    team: str = DEFAULT_TEAM_ID,
    channel_type: str = "channel",
) -> JsonDict:
    """The ``message`` event Slack echoes back for a bot's own post (has ``bot_id``, no subtype)."""
    event = channel_message(
        text, user=bot_user_id, channel=channel, ts=ts, thread_ts=thread_ts, team=team, channel_type=channel_type
    )
    del event["client_msg_id"]
    event.update(bot_id=bot_id, app_id=DEFAULT_APP_ID)
    return event


def assistant_thread_started(
    *,
    user: str = DEFAULT_USER_ID,
    channel: str = DEFAULT_IM_CHANNEL_ID,
    thread_ts: str | None = None,
    context_channel: str | None = DEFAULT_CHANNEL_ID,
    team: str = DEFAULT_TEAM_ID,
) -> JsonDict:
    """The ``assistant_thread_started`` event: the user opened the app's assistant view (a DM thread).

    The user's messages in that thread then arrive as ``message`` events in the DM (``im_message`` with
    ``thread_ts``), the bot's replies as messages with ``bot_id`` in the same thread.
    """
    context: JsonDict = {"team_id": team, "enterprise_id": None}
    if context_channel is not None:
        context["channel_id"] = context_channel
    ts = next_ts()
    return {
        "type": "assistant_thread_started",
        "assistant_thread": {
            "user_id": user,
            "context": context,
            "channel_id": channel,
            "thread_ts": thread_ts or ts,
        },
        "event_ts": ts,
    }


def event_callback(
    event: JsonDict,
    event_id: str | None = None,
    team_id: str = DEFAULT_TEAM_ID,
    *,
    api_app_id: str = DEFAULT_APP_ID,
    bot_user_id: str = DEFAULT_BOT_USER_ID,
    event_time: int | None = None,
) -> JsonDict:
    """The full Events API body Slack POSTs (or wraps in an ``events_api`` envelope)."""
    authorization = {
        "enterprise_id": None,
        "team_id": team_id,
        "user_id": bot_user_id,
        "is_bot": True,
        "is_enterprise_install": False,
    }
    return {
        "token": VERIFICATION_TOKEN,
        "team_id": team_id,
        "context_team_id": team_id,
        "context_enterprise_id": None,
        "api_app_id": api_app_id,
        "event": event,
        "type": "event_callback",
        "event_id": event_id or f"Ev{next(_event_counter):08d}",
        "event_time": int(time.time()) if event_time is None else event_time,
        "authorizations": [authorization],
        "is_ext_shared_channel": False,
        "event_context": f"4-{uuid.uuid4().hex}",
    }


def slash_command_payload(command: str = "/ask", text: str = "", **overrides: str) -> dict[str, str]:
    """Slash command fields; ``overrides`` use Slack's own names (``user_id``, ``channel_id``...)."""
    payload = {
        "token": VERIFICATION_TOKEN,
        "team_id": DEFAULT_TEAM_ID,
        "team_domain": _TEAM_DOMAIN,
        "channel_id": DEFAULT_CHANNEL_ID,
        "channel_name": "general",
        "user_id": DEFAULT_USER_ID,
        "user_name": "alice",
        "command": command,
        "text": text,
        "api_app_id": DEFAULT_APP_ID,
        "is_enterprise_install": "false",
        "response_url": f"https://hooks.slack.com/commands/{DEFAULT_TEAM_ID}/1/{uuid.uuid4().hex}",
        "trigger_id": f"1.{uuid.uuid4().int % 10**12}.{uuid.uuid4().hex}",
    }
    payload.update(overrides)
    return payload


def slash_command_form(command: str = "/ask", text: str = "", **overrides: str) -> bytes:
    """The form-encoded body Slack POSTs for a slash command in HTTP mode."""
    return urlencode(slash_command_payload(command, text, **overrides)).encode()


def sign(body: bytes | str, signing_secret: str, timestamp: int | None = None) -> dict[str, str]:
    """Slack's request-signing headers, computed as slack_sdk's SignatureVerifier checks them."""
    stamp = str(int(time.time()) if timestamp is None else timestamp)
    text = body.decode() if isinstance(body, bytes) else body
    digest = hmac.new(signing_secret.encode(), f"v0:{stamp}:{text}".encode(), hashlib.sha256).hexdigest()
    return {"X-Slack-Request-Timestamp": stamp, "X-Slack-Signature": f"v0={digest}"}


# --------------------------------------------------------------------------- the fake

_Handler = Callable[[JsonDict], JsonDict]


class FakeSlack:
    """Slack's Web API and Socket Mode on loopback, recording every call and ack."""

    def __init__(
        self,
        *,
        bot_user_id: str = DEFAULT_BOT_USER_ID,
        bot_id: str = DEFAULT_BOT_ID,
        team_id: str = DEFAULT_TEAM_ID,
        app_id: str = DEFAULT_APP_ID,
        bot_name: str = "fakebot",
        team_name: str = "Fake Team",
    ) -> None:
        self.bot_user_id = bot_user_id
        self.bot_id = bot_id
        self.team_id = team_id
        self.app_id = app_id
        self.bot_name = bot_name
        self.team_name = team_name
        self.calls: list[Call] = []
        self.acks: list[Ack] = []
        self.envelopes: list[Envelope] = []
        self.ephemeral_messages: list[EphemeralMessage] = []
        self.scopes: set[str] = set(_OAUTH_SCOPES.split(","))
        self.downloads: list[FileDownload] = []
        self._files: dict[str, _File] = {}
        self._file_objects: dict[str, JsonDict] = {}
        self._call_queues: defaultdict[str, asyncio.Queue[Call]] = defaultdict(asyncio.Queue)
        self._failures: defaultdict[str, list[_ScriptedFailure]] = defaultdict(list)
        self._lost: defaultdict[str, list[_LostResponse]] = defaultdict(list)
        self._channels: defaultdict[str, dict[str, Message]] = defaultdict(dict)
        self._reactions: defaultdict[tuple[str, str], dict[str, list[str]]] = defaultdict(dict)
        self._assistant_status: dict[tuple[str, str], str] = {}
        self._assistant_titles: dict[tuple[str, str], str] = {}
        self._suggested_prompts: dict[tuple[str, str], list[JsonDict]] = {}
        self._users: dict[str, User] = {}
        self._members: dict[str, list[str]] = {}
        self._tickets: set[str] = set()
        self._sockets: list[web.WebSocketResponse] = []
        self._socket_connections = 0
        self._socket_changed = asyncio.Condition()
        self._ack_futures: dict[str, asyncio.Future[Ack]] = {}
        self._runner: web.AppRunner | None = None
        self._port: int | None = None
        self._handlers: dict[str, _Handler] = {
            "auth.test": self._auth_test,
            "chat.postMessage": self._chat_post_message,
            "chat.update": self._chat_update,
            "chat.postEphemeral": self._chat_post_ephemeral,
            "chat.delete": self._chat_delete,
            "reactions.add": self._reactions_add,
            "reactions.remove": self._reactions_remove,
            "assistant.threads.setStatus": self._assistant_set_status,
            "assistant.threads.setTitle": self._assistant_set_title,
            "assistant.threads.setSuggestedPrompts": self._assistant_set_suggested_prompts,
            "chat.startStream": self._chat_start_stream,
            "chat.appendStream": self._chat_append_stream,
            "chat.stopStream": self._chat_stop_stream,
            "conversations.replies": self._conversations_replies,
            "conversations.history": self._conversations_history,
            "conversations.members": self._conversations_members,
            "apps.connections.open": self._apps_connections_open,
            "users.info": self._users_info,
            "files.info": self._files_info,
        }
        self.add_user(bot_user_id, name=bot_name, is_bot=True)

    # ----------------------------------------------------------------- lifecycle

    async def __aenter__(self) -> FakeSlack:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/api/{method}", self._handle_api)
        app.router.add_get("/socket", self._handle_socket)
        app.router.add_post("/response/{hook}", self._handle_response_url)
        app.router.add_get("/files-pri/{team_file}/download/{name}", self._handle_file)
        app.router.add_get("/files-pri/{team_file}/{name}", self._handle_file)
        app.router.add_route("*", "/{tail:.*}", self._handle_stray_path)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self._port = int(self._runner.addresses[0][1])

    async def close(self) -> None:
        for ws in list(self._sockets):
            await ws.close(code=WSCloseCode.GOING_AWAY, message=b"fake slack shutting down")
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("FakeSlack is not started")
        return self._port

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    @property
    def api_url(self) -> str:
        """Pass as ``base_url``; the trailing slash matters to slack_sdk's urljoin."""
        return f"{self.base_url}api/"

    # ----------------------------------------------------------------- call recording

    def calls_to(self, method: str) -> list[Call]:
        return [call for call in self.calls if call.method == method]

    async def next_call(self, method: str, timeout: float = 5.0) -> Call:
        """The oldest call to ``method`` not yet returned by ``next_call``, waiting if needed."""
        try:
            async with asyncio.timeout(timeout):
                return await self._call_queues[method].get()
        except TimeoutError:
            seen = [call.method for call in self.calls]
            raise TimeoutError(f"no {method} call within {timeout}s; calls so far: {seen}") from None

    def fail_next(
        self, method: str, error: str | None = None, *, status: int = 200, retry_after: int | None = None
    ) -> None:
        """Make the next call to ``method`` fail; queued failures are used one per call, in order.

        A failed call has no effect, and uses up no lost response (:meth:`lose_responses`).
        """
        self._failures[method].append(_ScriptedFailure(error or _default_error(status), status, retry_after))

    def lose_responses(self, method: str, count: int = 1, *, status: int = 500) -> None:
        """Let the next ``count`` calls to ``method`` take effect, then answer each with HTTP ``status``.

        The call is handled as usual (a chat.postMessage stores its message, visible to later
        conversations.* reads; an API error stays an error) and the answer is replaced by
        ``{"ok": false, "error": "internal_error"}`` with ``status``: Slack acted, the client was
        told it failed. ``Call.lost_response`` keeps the answer that was lost.
        """
        self._queue_lost(method, count, _LostResponse(status))

    def drop_responses(self, method: str, count: int = 1) -> None:
        """Like :meth:`lose_responses`, but close the connection without any HTTP response.

        aiohttp raises ``ServerDisconnectedError``, which slack_sdk's default
        ``AsyncConnectionErrorRetryHandler`` retries. The call records ``status`` 0.
        """
        self._queue_lost(method, count, _LostResponse(None))

    def _queue_lost(self, method: str, count: int, lost: _LostResponse) -> None:
        if count < 1:
            raise ValueError(f"count must be at least 1, not {count}")
        self._lost[method].extend([lost] * count)

    # ----------------------------------------------------------------- workspace state

    def message(self, channel: str, ts: str) -> Message:
        """The stored message (deleted ones included, flagged); KeyError if never posted."""
        return self._channels[channel][ts]

    def messages(self, channel: str) -> list[Message]:
        live = [m for m in self._channels[channel].values() if not m.deleted]
        return sorted(live, key=lambda m: _ts_key(m.ts))

    def thread(self, channel: str, thread_ts: str) -> list[Message]:
        """The thread's parent (if known) followed by its replies, oldest first."""
        return [m for m in self.messages(channel) if thread_ts in (m.ts, m.thread_ts)]

    def reactions(self, channel: str, ts: str) -> list[str]:
        return [name for name, users in self._reactions[(channel, ts)].items() if users]

    def assistant_status(self, channel: str, thread_ts: str) -> str | None:
        return self._assistant_status.get((channel, thread_ts))

    def assistant_title(self, channel: str, thread_ts: str) -> str | None:
        return self._assistant_titles.get((channel, thread_ts))

    def suggested_prompts(self, channel: str, thread_ts: str) -> list[JsonDict] | None:
        return self._suggested_prompts.get((channel, thread_ts))

    def add_message(
        self,
        channel: str,
        text: str,
        *,
        user: str = DEFAULT_USER_ID,
        ts: str | None = None,
        thread_ts: str | None = None,
        blocks: list[JsonDict] | None = None,
        metadata: JsonDict | None = None,
    ) -> Message:
        """Seed a message, e.g. thread history for conversations.replies.

        With ``user=slack.bot_user_id`` it is one of the bot's own posts (carrying ``bot_id``), such
        as a reply an earlier process posted before it stopped; ``metadata`` is stored as given.
        """
        message = Message(channel, ts or next_ts(), text, user, thread_ts=thread_ts, blocks=blocks or [])
        message.bot_id = self.bot_id if user == self.bot_user_id else None
        message.metadata = copy.deepcopy(metadata) if metadata else None
        self._channels[channel][message.ts] = message
        return message

    def add_user(
        self,
        user_id: str,
        *,
        name: str | None = None,
        real_name: str | None = None,
        display_name: str | None = None,
        is_bot: bool = False,
    ) -> User:
        user = User(
            id=user_id,
            name=name or user_id.lower(),
            real_name=real_name or f"User {user_id}",
            display_name=display_name if display_name is not None else name or user_id.lower(),
            team_id=self.team_id,
            is_bot=is_bot,
        )
        self._users[user_id] = user
        return user

    def add_file(
        self, name: str, data: bytes, *, mimetype: str, filetype: str | None = None, size: int | None = None
    ) -> JsonDict:
        """Keep a file; returns its object as a message event's ``files`` carries it (``size``: declared)."""
        file_id = f"F{uuid.uuid4().hex[:10].upper()}"
        self._files[file_id] = _File(file_id, name, data, mimetype)
        base = f"{self.base_url}files-pri/{self.team_id}-{file_id}"
        self._file_objects[file_id] = {
            "id": file_id, "created": int(time.time()), "timestamp": int(time.time()), "name": name, "title": name,
            "mimetype": mimetype, "filetype": filetype or name.rpartition(".")[2].lower(), "pretty_type": mimetype,
            "user": DEFAULT_USER_ID, "user_team": self.team_id, "editable": False,
            "size": len(data) if size is None else size, "mode": "hosted", "is_external": False,
            "external_type": "", "is_public": False, "public_url_shared": False, "display_as_bot": False,
            "username": "", "url_private": f"{base}/{name}", "url_private_download": f"{base}/download/{name}",
            "permalink": f"https://{_TEAM_DOMAIN}.slack.com/files/{DEFAULT_USER_ID}/{file_id}/{name}",
            "is_starred": False, "has_rich_preview": False, "file_access": "visible",
        }  # fmt: skip
        return copy.deepcopy(self._file_objects[file_id])

    @staticmethod
    def unlinked(file: JsonDict) -> JsonDict:
        """The file as events in Slack Connect channels name it: its ID alone, to look up with files.info."""
        return {"id": file["id"], "mode": "hosted", "file_access": "check_file_info"}

    def set_members(self, channel: str, users: list[str]) -> None:
        """Who is in ``channel``, as conversations.members reports it."""
        self._members[channel] = list(users)

    def event_callback(self, event: JsonDict, event_id: str | None = None) -> JsonDict:
        """Like the module-level ``event_callback`` with this workspace's ids; remembers the message."""
        self._remember_event_message(event)
        return event_callback(event, event_id, self.team_id, api_app_id=self.app_id, bot_user_id=self.bot_user_id)

    # ----------------------------------------------------------------- HTTP plumbing

    async def _handle_api(self, request: web.Request) -> web.StreamResponse:
        method = request.match_info["method"]
        args = await _read_args(request)
        token = _extract_token(request.headers, args)
        # A scripted failure refuses the call before it acts, so it leaves lost responses queued.
        lost = self._lost[method].pop(0) if self._lost[method] and not self._failures[method] else None
        status, body, headers = self._respond(method, args, token)
        recorded_headers = CIMultiDictProxy(CIMultiDict(request.headers))
        if lost is None:
            call = Call(method, args, recorded_headers, token, request.method, status, body)
            return await self._answer_then_record(request, call, headers)
        if lost.status is None:
            return self._drop_then_record(
                request, Call(method, args, recorded_headers, token, request.method, 0, {}, body)
            )
        sent = {"ok": False, "error": _default_error(lost.status)}
        call = Call(method, args, recorded_headers, token, request.method, lost.status, sent, body)
        return await self._answer_then_record(request, call)

    def _drop_then_record(self, request: web.Request, call: Call) -> web.StreamResponse:
        # Closed before any byte of a response: the client sees the server disconnect.
        if request.transport is not None:
            request.transport.abort()
        self._record(call)
        return web.Response(status=500)

    async def _answer_then_record(
        self, request: web.Request, call: Call, headers: Mapping[str, str] | None = None
    ) -> web.StreamResponse:
        # Recording only once the answer is on the wire means a test woken by next_call()
        # never tears the fake down under a client still waiting for its response.
        response = web.json_response(call.response, status=call.status, headers=headers)
        await response.prepare(request)
        await response.write_eof()
        self._record(call)
        return response

    def _respond(self, method: str, args: JsonDict, token: str | None) -> tuple[int, JsonDict, dict[str, str]]:
        failures = self._failures[method]
        if failures:
            failure = failures.pop(0)
            return failure.status, {"ok": False, "error": failure.error}, failure.headers()
        handler = self._handlers.get(method)
        if handler is None:
            return 404, {"ok": False, "error": "unknown_method", "req_method": method}, {}
        headers = {"X-OAuth-Scopes": ",".join(sorted(self.scopes))}
        try:
            _check_token(method, token)
            return 200, {"ok": True, **handler(args)}, headers
        except _ApiError as error:
            return 200, error.body, headers

    def _record(self, call: Call) -> None:
        self.calls.append(call)
        self._call_queues[call.method].put_nowait(call)

    async def _handle_response_url(self, request: web.Request) -> web.StreamResponse:
        body = await request.json() if request.can_read_body else {}
        args = {"hook": request.match_info["hook"], **(body if isinstance(body, dict) else {})}
        headers = CIMultiDictProxy(CIMultiDict(request.headers))
        call = Call("response_url", args, headers, None, request.method, 200, {"ok": True})
        return await self._answer_then_record(request, call)

    async def _handle_file(self, request: web.Request) -> web.StreamResponse:
        token = _extract_token(request.headers, {})
        file_id = request.match_info["team_file"].rpartition("-")[2]
        stored = self._files.get(file_id)
        if stored is None or stored.name != request.match_info["name"]:
            self.downloads.append(FileDownload(file_id, token, served=False))
            return web.Response(status=404, text="file not found")
        allowed = token is not None and token.startswith("xoxb-") and "files:read" in self.scopes
        self.downloads.append(FileDownload(file_id, token, served=allowed))
        if not allowed:  # Slack's answer to a download it will not serve: its sign-in page, 200
            return web.Response(text=_SIGN_IN_PAGE, content_type="text/html", charset="utf-8")
        return web.Response(body=stored.data, content_type=stored.mimetype)

    async def _handle_stray_path(self, request: web.Request) -> web.StreamResponse:
        # Most often a base_url without its trailing slash; say so instead of a bare 404.
        hint = f"FakeSlack serves the Web API under {self.api_url} (note the trailing slash)"
        return web.json_response({"ok": False, "error": "fake_slack_unknown_path", "hint": hint}, status=404)

    # ----------------------------------------------------------------- Web API methods

    def _auth_test(self, args: JsonDict) -> JsonDict:
        return {
            "url": f"https://{_TEAM_DOMAIN}.slack.com/",
            "team": self.team_name,
            "user": self.bot_name,
            "team_id": self.team_id,
            "user_id": self.bot_user_id,
            "bot_id": self.bot_id,
            "is_enterprise_install": False,
        }

    def _chat_post_message(self, args: JsonDict) -> JsonDict:
        channel = _channel(args)
        text, blocks = _text(args), _blocks(args)
        _require_content(text, blocks, args)
        thread_ts = str(args["thread_ts"]) if args.get("thread_ts") else None
        metadata, warning = _metadata(args) if "metadata" in args else (None, None)
        message = self._post_as_bot(channel, text or "", thread_ts, blocks or [])
        message.metadata = metadata
        return _with_warning({"channel": channel, "ts": message.ts, "message": self._payload(message)}, warning)

    def _chat_update(self, args: JsonDict) -> JsonDict:
        message = self._own_message(args, "cant_update_message")
        text, blocks = _text(args), _blocks(args)
        _require_content(text, blocks, args)
        metadata, warning = _metadata(args) if "metadata" in args else (message.metadata, None)
        # Slack keeps whichever of text/blocks/metadata the update leaves out (or gives it invalid).
        message.text = message.text if text is None else text
        message.blocks = message.blocks if blocks is None else blocks
        message.metadata = message.metadata if warning else metadata
        message.edited_ts = next_ts()
        # An update rewrites a finished stream into an ordinary message (the stream-expiry fallback).
        message.streamed = False
        payload = self._payload(message)
        result = {"channel": message.channel, "ts": message.ts, "text": message.text, "message": payload}
        return _with_warning(result, warning)

    def _chat_post_ephemeral(self, args: JsonDict) -> JsonDict:
        channel, user = _channel(args), _required(args, "user")
        text, blocks = _text(args), _blocks(args)
        _require_content(text, blocks, args)
        thread_ts = str(args["thread_ts"]) if args.get("thread_ts") else None
        ephemeral = EphemeralMessage(channel, user, next_ts(), text or "", blocks or [], thread_ts)
        self.ephemeral_messages.append(ephemeral)
        return {"message_ts": ephemeral.message_ts}

    def _chat_delete(self, args: JsonDict) -> JsonDict:
        message = self._own_message(args, "cant_delete_message")
        message.deleted = True
        return {"channel": message.channel, "ts": message.ts}

    def _reactions_add(self, args: JsonDict) -> JsonDict:
        users = self._reaction_users(args)
        if self.bot_user_id in users:
            raise _ApiError("already_reacted")
        users.append(self.bot_user_id)
        return {}

    def _reactions_remove(self, args: JsonDict) -> JsonDict:
        users = self._reaction_users(args)
        if self.bot_user_id not in users:
            raise _ApiError("no_reaction")
        users.remove(self.bot_user_id)
        return {}

    def _assistant_set_status(self, args: JsonDict) -> JsonDict:
        channel, thread_ts = _channel(args, "channel_id"), _required(args, "thread_ts")
        self._assistant_status[(channel, thread_ts)] = str(args.get("status", ""))
        return {}

    def _assistant_set_title(self, args: JsonDict) -> JsonDict:
        channel, thread_ts = _channel(args, "channel_id"), _required(args, "thread_ts")
        self._assistant_titles[(channel, thread_ts)] = _required(args, "title")
        return {}

    def _assistant_set_suggested_prompts(self, args: JsonDict) -> JsonDict:
        channel, thread_ts = _channel(args, "channel_id"), _required(args, "thread_ts")
        prompts = args.get("prompts")
        well_formed = isinstance(prompts, list) and all(
            isinstance(p, dict) and p.get("title") and p.get("message") for p in prompts
        )
        if not well_formed or not prompts or len(prompts) > MAX_SUGGESTED_PROMPTS:
            raise _ApiError("invalid_arguments")
        self._suggested_prompts[(channel, thread_ts)] = list(prompts)
        return {}

    def _chat_start_stream(self, args: JsonDict) -> JsonDict:
        channel, thread_ts = _channel(args), _required(args, "thread_ts")
        text, chunks = _stream_content(args)
        message = self._post_as_bot(channel, text, thread_ts, [])
        message.chunks, message.streaming, message.streamed = chunks, True, True
        return {"channel": channel, "ts": message.ts}

    def _chat_append_stream(self, args: JsonDict) -> JsonDict:
        message = self._streaming_message(args)
        text, chunks = _stream_content(args)
        message.text += text
        message.chunks += chunks
        return {"channel": message.channel, "ts": message.ts}

    def _chat_stop_stream(self, args: JsonDict) -> JsonDict:
        message = self._streaming_message(args)
        text, chunks = _stream_content(args)
        blocks = _blocks(args)
        metadata, warning = _metadata(args) if "metadata" in args else (None, None)
        message.text += text
        message.chunks += chunks
        message.blocks = blocks or []
        message.metadata = metadata
        message.streaming = False
        return _with_warning({"channel": message.channel, "ts": message.ts, "message": self._payload(message)}, warning)

    def _conversations_replies(self, args: JsonDict) -> JsonDict:
        """The thread of ``ts`` (its parent or any reply), oldest first, so the parent leads page one."""
        channel, ts = _channel(args), _required(args, "ts")
        root = self._channels[channel].get(ts)
        if root is None or root.deleted:
            raise _ApiError("thread_not_found")
        thread = _in_window(self.thread(channel, root.thread_ts or root.ts), args)
        page, next_cursor = _page(thread, args, default_limit=1000, max_limit=1000, newest_first=False)
        return self._messages_page(page, next_cursor, args)

    def _conversations_history(self, args: JsonDict) -> JsonDict:
        """A channel's top-level messages (thread parents, not their replies), newest first."""
        channel = _channel(args)
        top_level = [m for m in self.messages(channel) if m.thread_ts in (None, m.ts)]
        newest_first = list(reversed(_in_window(top_level, args)))
        page, next_cursor = _page(newest_first, args, default_limit=100, max_limit=999, newest_first=True)
        return {**self._messages_page(page, next_cursor, args), "pin_count": 0}

    def _messages_page(self, page: list[Message], next_cursor: str, args: JsonDict) -> JsonDict:
        include_all_metadata = _flag(args, "include_all_metadata")
        return {
            "messages": [self._payload(m, include_all_metadata=include_all_metadata) for m in page],
            "has_more": bool(next_cursor),
            "response_metadata": {"next_cursor": next_cursor},
        }

    def _conversations_members(self, args: JsonDict) -> JsonDict:
        """User IDs of a channel set with ``set_members``, ``limit`` per page (cursor: base64 of the offset)."""
        channel = _channel(args)
        members = self._members.get(channel)
        if members is None:
            raise _ApiError("channel_not_found")
        try:
            start = int(base64.b64decode(str(args.get("cursor") or "")).decode() or 0)
            limit = min(max(int(args.get("limit") or 100), 1), 1000)
        except ValueError:
            raise _ApiError("invalid_cursor") from None
        page, more = members[start : start + limit], start + limit < len(members)
        next_cursor = base64.b64encode(str(start + limit).encode()).decode() if more else ""
        return {"members": page, "response_metadata": {"next_cursor": next_cursor}}

    def _apps_connections_open(self, args: JsonDict) -> JsonDict:
        ticket = uuid.uuid4().hex
        self._tickets.add(ticket)
        return {"url": f"ws://127.0.0.1:{self.port}/socket?ticket={ticket}&app_id={self.app_id}"}

    def _files_info(self, args: JsonDict) -> JsonDict:
        if "files:read" not in self.scopes:
            raise _ApiError("missing_scope", needed="files:read", provided=",".join(sorted(self.scopes)))
        found = self._file_objects.get(_required(args, "file"))
        if found is None:
            raise _ApiError("file_not_found")
        return {"file": copy.deepcopy(found), "comments": [], "response_metadata": {"next_cursor": ""}}

    def _users_info(self, args: JsonDict) -> JsonDict:
        user_id = _required(args, "user")
        if user_id == USER_NOT_FOUND:
            raise _ApiError("user_not_found")
        # Any other id resolves, so tests need not seed every author they mention.
        user = self._users.get(user_id) or self.add_user(user_id)
        return {"user": user.to_api()}

    # ----------------------------------------------------------------- message helpers

    def _post_as_bot(self, channel: str, text: str, thread_ts: str | None, blocks: list[JsonDict]) -> Message:
        message = Message(channel, next_ts(), text, self.bot_user_id, thread_ts, blocks, bot_id=self.bot_id)
        self._channels[channel][message.ts] = message
        if thread_ts is not None:
            # Slack clears an assistant thread's status once the app replies in it.
            self._assistant_status.pop((channel, thread_ts), None)
        return message

    def _find(self, args: JsonDict, ts_key: str = "ts") -> Message:
        channel, ts = _channel(args), _required(args, ts_key)
        message = self._channels[channel].get(ts)
        if message is None or message.deleted:
            raise _ApiError("message_not_found")
        return message

    def _own_message(self, args: JsonDict, not_owned_error: str) -> Message:
        message = self._find(args)
        if message.user != self.bot_user_id:
            raise _ApiError(not_owned_error)
        return message

    def _streaming_message(self, args: JsonDict) -> Message:
        message = self._find(args)
        if not message.streaming:
            raise _ApiError("message_not_in_streaming_state")
        return message

    def _reaction_users(self, args: JsonDict) -> list[str]:
        # Reactions are tracked even for messages the fake never saw, to spare tests seeding.
        channel, ts, name = _channel(args), _required(args, "timestamp"), _required(args, "name")
        return self._reactions[(channel, ts)].setdefault(name, [])

    def _payload(self, message: Message, *, include_all_metadata: bool = False) -> JsonDict:
        payload: JsonDict = {
            "type": "message",
            "user": message.user,
            "text": message.text,
            "ts": message.ts,
            "team": self.team_id,
        }
        if message.bot_id:
            payload.update(bot_id=message.bot_id, app_id=self.app_id, bot_profile=self._bot_profile())
        if message.blocks:
            payload["blocks"] = message.blocks
        if message.metadata:
            # Without include_all_metadata Slack strips the payload and passes only the event_type on.
            full = copy.deepcopy(message.metadata)
            payload["metadata"] = full if include_all_metadata else {"event_type": full.get("event_type")}
        if message.edited_ts:
            payload["edited"] = {"user": message.user, "ts": message.edited_ts}
        payload.update(self._thread_fields(message))
        reactions = self._reactions[(message.channel, message.ts)]
        listed = [{"name": n, "users": list(u), "count": len(u)} for n, u in reactions.items() if u]
        if listed:
            payload["reactions"] = listed
        return payload

    def _thread_fields(self, message: Message) -> JsonDict:
        if message.thread_ts and message.thread_ts != message.ts:
            parent = self._channels[message.channel].get(message.thread_ts)
            fields: JsonDict = {"thread_ts": message.thread_ts}
            if parent is not None:
                fields["parent_user_id"] = parent.user
            return fields
        replies = [m for m in self.thread(message.channel, message.ts) if m.ts != message.ts]
        if not replies:
            return {}
        users = sorted({m.user for m in replies})
        return {
            "thread_ts": message.ts,
            "reply_count": len(replies),
            "reply_users": users,
            "reply_users_count": len(users),
            "latest_reply": replies[-1].ts,
        }

    def _bot_profile(self) -> JsonDict:
        return {
            "id": self.bot_id,
            "app_id": self.app_id,
            "name": self.bot_name,
            "deleted": False,
            "team_id": self.team_id,
        }

    def _remember_event_message(self, event: JsonDict) -> None:
        # A user message that reached the app exists on the platform; replies/reactions may target it.
        if event.get("type") not in ("message", "app_mention") or event.get("subtype"):
            return
        channel, ts = event.get("channel"), event.get("ts")
        if not channel or not ts or ts in self._channels[channel]:
            return
        message = Message(channel, ts, str(event.get("text", "")), str(event.get("user", "")), event.get("thread_ts"))
        message.bot_id = event.get("bot_id")
        self._channels[channel][ts] = message

    # ----------------------------------------------------------------- Socket Mode

    @property
    def socket_connections(self) -> int:
        """How many WebSocket connections have ever been accepted."""
        return self._socket_connections

    @property
    def open_sockets(self) -> int:
        return len(self._sockets)

    async def wait_socket_connected(self, timeout: float = 5.0, *, min_connections: int = 1) -> None:
        """Wait until a socket is open and ``min_connections`` have been accepted in total.

        After ``disconnect_sockets()``, pass ``min_connections=slack.socket_connections + 1``
        to wait for the client's reconnect rather than returning at once.
        """

        def ready() -> bool:
            return bool(self._sockets) and self._socket_connections >= min_connections

        try:
            async with asyncio.timeout(timeout):
                async with self._socket_changed:
                    await self._socket_changed.wait_for(ready)
        except TimeoutError:
            raise TimeoutError(
                f"no socket connection #{min_connections} within {timeout}s "
                f"(accepted so far: {self._socket_connections}, open: {len(self._sockets)})"
            ) from None

    async def disconnect_sockets(self, reason: str | None = None) -> int:
        """Close every open socket, as Slack does to rotate connections; returns how many.

        With ``reason`` (e.g. "refresh_requested"), Slack's ``{"type": "disconnect"}`` notice is
        sent first; slack_sdk reacts to both the notice and the close, so it may reconnect twice.
        """
        sockets = list(self._sockets)
        for ws in sockets:
            if reason is not None:
                await ws.send_json({"type": "disconnect", "reason": reason, "debug_info": {"host": "fake-slack"}})
            await ws.close(code=WSCloseCode.OK, message=b"disconnect")
        return len(sockets)

    async def send_envelope(
        self,
        envelope_type: str,
        payload: JsonDict,
        *,
        accepts_response_payload: bool = False,
        retry_attempt: int | None = None,
        retry_reason: str | None = None,
        envelope_id: str | None = None,
    ) -> str:
        """Push any Socket Mode envelope to the newest open socket; returns its envelope_id."""
        envelope = Envelope(
            envelope_id or str(uuid.uuid4()),
            envelope_type,
            payload,
            accepts_response_payload,
            retry_attempt,
            retry_reason,
        )
        if not self._sockets:
            raise RuntimeError("no Socket Mode client is connected; await wait_socket_connected() first")
        self.envelopes.append(envelope)
        self._ack_future(envelope.envelope_id)
        await self._sockets[-1].send_json(envelope.to_wire())
        return envelope.envelope_id

    async def send_event(
        self,
        event_payload: JsonDict,
        *,
        retry_attempt: int = 0,
        retry_reason: str | None = None,
        envelope_id: str | None = None,
    ) -> str:
        """Deliver an Events API payload in an ``events_api`` envelope; returns the envelope_id.

        A bare event (``{"type": "app_mention", ...}``) is wrapped with ``event_callback`` first.
        A retry (``retry_attempt`` > 0) defaults to ``retry_reason="timeout"``.
        """
        body = event_payload
        if event_payload.get("type") != "event_callback":
            body = self.event_callback(event_payload)
        else:
            self._remember_event_message(event_payload.get("event") or {})
        reason = retry_reason if retry_reason is not None else ("timeout" if retry_attempt else "")
        return await self.send_envelope(
            "events_api", body, retry_attempt=retry_attempt, retry_reason=reason, envelope_id=envelope_id
        )

    async def resend_event(self, envelope_id: str, *, retry_reason: str = "timeout") -> str:
        """Redeliver an earlier event as Slack's retry: same payload, next retry_attempt, new envelope."""
        original = next(e for e in reversed(self.envelopes) if e.envelope_id == envelope_id)
        attempt = (original.retry_attempt or 0) + 1
        return await self.send_event(original.payload, retry_attempt=attempt, retry_reason=retry_reason)

    async def send_slash_command(self, command: str = "/ask", text: str = "", **overrides: str) -> str:
        """Deliver a ``slash_commands`` envelope; its response_url points back at this fake."""
        fields = {
            "team_id": self.team_id,
            "api_app_id": self.app_id,
            "response_url": f"{self.base_url}response/{uuid.uuid4().hex}",
        }
        fields.update(overrides)
        payload = slash_command_payload(command, text, **fields)
        return await self.send_envelope("slash_commands", dict(payload), accepts_response_payload=True)

    def block_action_payload(self, channel: str, ts: str, action_id: str, *, user: str, value: str = "") -> JsonDict:
        """A ``block_actions`` payload: ``user`` clicked the button ``action_id`` of the bot's message ``ts``."""
        message = self.message(channel, ts)
        container = {"type": "message", "message_ts": ts, "channel_id": channel, "is_ephemeral": False}
        if message.thread_ts:
            container["thread_ts"] = message.thread_ts
        action = {
            "type": "button", "action_id": action_id, "block_id": "approval", "value": value,
            "action_ts": next_ts(), "text": {"type": "plain_text", "text": action_id},
        }  # fmt: skip
        return {
            "type": "block_actions",
            "user": {"id": user, "username": user, "name": user, "team_id": self.team_id},
            "api_app_id": self.app_id,
            "token": VERIFICATION_TOKEN,
            "container": container,
            "trigger_id": f"{uuid.uuid4().int % 10**12}.{uuid.uuid4().hex[:12]}",
            "team": {"id": self.team_id, "domain": "fake"},
            "enterprise": None,
            "is_enterprise_install": False,
            "channel": {"id": channel, "name": channel},
            "message": self._payload(message),
            "response_url": f"{self.base_url}response/{uuid.uuid4().hex}",
            "actions": [action],
        }

    async def send_block_action(
        self, channel: str, ts: str, action_id: str, *, user: str, value: str = "", envelope_id: str | None = None
    ) -> str:
        """Deliver a button click in an ``interactive`` envelope; returns the envelope_id.

        The same ``envelope_id`` again is Slack's redelivery of an unacknowledged click.
        """
        payload = self.block_action_payload(channel, ts, action_id, user=user, value=value)
        return await self.send_envelope("interactive", payload, envelope_id=envelope_id)

    async def wait_ack(self, envelope_id: str, timeout: float = 5.0) -> Ack:
        future = self._ack_future(envelope_id)
        try:
            async with asyncio.timeout(timeout):
                return await asyncio.shield(future)
        except TimeoutError:
            raise TimeoutError(f"no ack for envelope {envelope_id} within {timeout}s") from None

    def _ack_future(self, envelope_id: str) -> asyncio.Future[Ack]:
        if envelope_id not in self._ack_futures:
            self._ack_futures[envelope_id] = asyncio.get_running_loop().create_future()
        return self._ack_futures[envelope_id]

    async def _handle_socket(self, request: web.Request) -> web.StreamResponse:
        if request.query.get("ticket") not in self._tickets:
            return web.json_response({"ok": False, "error": "invalid_ticket"}, status=401)
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await ws.send_json(self._hello())
        await self._socket_opened(ws)
        try:
            async for frame in ws:
                if frame.type == WSMsgType.TEXT:
                    self._on_client_text(frame.data)
        finally:
            await self._socket_closed(ws)
        return ws

    def _hello(self) -> JsonDict:
        return {
            "type": "hello",
            "num_connections": len(self._sockets) + 1,
            "debug_info": {"host": "fake-slack", "build_number": 1, "approximate_connection_time": 18060},
            "connection_info": {"app_id": self.app_id},
        }

    async def _socket_opened(self, ws: web.WebSocketResponse) -> None:
        async with self._socket_changed:
            self._sockets.append(ws)
            self._socket_connections += 1
            self._socket_changed.notify_all()

    async def _socket_closed(self, ws: web.WebSocketResponse) -> None:
        async with self._socket_changed:
            self._sockets.remove(ws)
            self._socket_changed.notify_all()

    def _on_client_text(self, data: str) -> None:
        try:
            message = json.loads(data)
        except ValueError:
            return
        if not isinstance(message, dict) or "envelope_id" not in message:
            return
        ack = Ack(str(message["envelope_id"]), message.get("payload"), message)
        self.acks.append(ack)
        future = self._ack_future(ack.envelope_id)
        if not future.done():
            future.set_result(ack)
