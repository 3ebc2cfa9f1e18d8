"""A fake Discord platform (REST API + gateway WebSocket) for driving a real discord.py client in tests.

Everything listens on 127.0.0.1 on an OS-chosen port; nothing ever leaves loopback.

Protocol subset (API v10, as discord.py 2.7 speaks it):

REST, under ``/api/v10`` (``Authorization: Bot <token>`` required except for interaction and webhook routes;
a wrong token gets 401, which discord.py turns into ``LoginFailure``):
    GET    /users/@me, /users/{uid}                      the bot user, any configured user
    POST   /users/@me/channels                           open (or return) a DM channel
    GET    /gateway, /gateway/bot                        the fake's ws URL, shard count, session_start_limit
    GET    /oauth2/applications/@me                      application info (flags follow the allowed intents)
    GET    /channels/{cid}                               guild text channels, threads and DMs the fake knows
    GET    /channels/{cid}/messages[/{mid}]              stored messages; the list pages newest first with limit
                                                         (1-100, default 50) and one of around/before/after
    POST   /channels/{cid}/messages                      JSON or multipart (payload_json + files[n]); nonce +
                                                         enforce_nonce return the author's earlier message
    PATCH  /channels/{cid}/messages/{mid}                only the bot's own messages (else 403 50005)
    DELETE /channels/{cid}/messages/{mid}
    POST   /channels/{cid}/typing                        204
    POST   /channels/{cid}/messages/{mid}/threads        a public thread on a text channel's message: its ID is the
                                                         message's, THREAD_CREATE is dispatched; a second one for
                                                         the same message 400 code 160004, a name over 100 chars 50035
    PUT    /channels/{cid}/messages/{mid}/reactions/{emoji}/@me
    GET|PUT /applications/{app}/commands, /applications/{app}/guilds/{gid}/commands   (bulk overwrite)
    POST   /interactions/{iid}/{token}/callback          honours ?with_response=1 like Discord
    POST   /webhooks/{app}/{token}                       interaction follow-ups (?wait=1 returns the message)
    PATCH  /webhooks/{app}/{token}/messages/@original    edit the interaction's original response
CDN, outside the API prefix and without auth, like Discord's signed attachment URLs:
    GET    /attachments/{aid}/{filename}                 the bytes of a user's attachment (FakeAttachment); 404
                                                         for one not known (an expired link)
Message content over 2,000 characters gets 400 code 50035, an empty message 400 code 50006. Failures can be
scripted per route with :meth:`FakeDiscord.fail_next`; a 429 carries the body and headers discord.py needs
before it retries (``retry_after``, ``global``, ``X-RateLimit-*`` and a ``Via`` header: without ``Via``
discord.py assumes a Cloudflare ban and raises instead of retrying). :meth:`FakeDiscord.lose_responses` and
:meth:`FakeDiscord.drop_responses` let a request take effect and then lose its answer.

Nonces (Create Message docs, discord-api-docs#6647): a ``nonce`` is an integer or a string of at most 25
characters, echoed in the create answer and the MESSAGE_CREATE dispatch but not kept on the stored message.
With ``enforce_nonce`` a nonce the same author used within ``nonce_window_seconds`` (Discord says "a few
minutes"; default 300) returns that message, 200, and creates and dispatches nothing; if that message was
deleted since, 404 code 10008 Unknown Message. discord.py 2.5+ sends every ``Messageable.send`` with a
nonce (a random 64-bit one unless given) and ``enforce_nonce: true``.

Gateway, at ``/gateway`` (and ``/gateway-resume``, advertised as ``resume_gateway_url`` so tests can see that a
client resumed where it was told to):
    * query ``v`` (9 or 10, else close 4012), ``encoding=json`` and ``compress`` = absent (text frames),
      ``zlib-stream`` (one zlib context per connection, every message Z_SYNC_FLUSHed so it ends with
      ``00 00 ff ff``) or ``zstd-stream`` (one zstd stream, a flushed block per message);
    * HELLO (op 10) -> IDENTIFY (op 2) -> READY (guilds unavailable) + GUILD_CREATE per guild of the shard;
    * IDENTIFY with a wrong token closes 4004, with privileged intents the app may not use 4014, an invalid
      shard 4010; anything but HEARTBEAT before IDENTIFY/RESUME closes 4003;
    * HEARTBEAT (op 1) -> HEARTBEAT_ACK (op 11); REQUEST_GUILD_MEMBERS (op 8) -> GUILD_MEMBERS_CHUNK;
    * RESUME (op 6) replays every dispatch after the client's ``seq`` then sends RESUMED; an unknown session
      gets INVALID_SESSION (op 9, ``d: false``). Sessions survive any close except a client close with
      1000/1001, which (as on Discord) invalidates them;
    * dispatches respect intents: guild messages need GUILD_MESSAGES, DMs DIRECT_MESSAGES, and without
      MESSAGE_CONTENT the content/embeds/attachments are blanked unless the bot is mentioned, it is a DM or
      the bot wrote it. The bot's own REST messages and edits are echoed as MESSAGE_CREATE/MESSAGE_UPDATE.
"""

from __future__ import annotations

__all__ = [
    "DEFAULT_TOKEN",
    "EPHEMERAL",
    "FakeAttachment",
    "MAX_CONTENT_LENGTH",
    "MAX_NONCE_LENGTH",
    "MAX_THREAD_NAME_LENGTH",
    "CommandSync",
    "DeduplicatedSend",
    "Dispatch",
    "FakeDiscord",
    "GatewayConnection",
    "Identify",
    "Intent",
    "InteractionResponse",
    "LostResponse",
    "MessageEdit",
    "RecordedRequest",
    "SentInteraction",
    "SentMessage",
    "point_discord_at",
]

import asyncio
import contextlib
import copy
import enum
import importlib
import json
import math
import re
import secrets
import time
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Final, Protocol, TypeAlias, TypeVar

import yarl
from aiohttp import BodyPartReader, web
from discord.gateway import DiscordWebSocket
from discord.http import Route

JSONObject: TypeAlias = dict[str, Any]
_T = TypeVar("_T")

DEFAULT_TOKEN: Final = "fake-bot-token"
DEFAULT_BOT_USER_ID: Final = 1_100_000_000_000_000_001
MAX_CONTENT_LENGTH: Final = 2000
MAX_THREAD_NAME_LENGTH: Final = 100
MAX_NONCE_LENGTH: Final = 25
EPHEMERAL: Final = 1 << 6
_LOADING: Final = 1 << 7
_DISCORD_EPOCH_MS: Final = 1_420_070_400_000
_API_PREFIX: Final = "/api/v10"
_GATEWAY_PATH: Final = "/gateway"
_RESUME_GATEWAY_PATH: Final = "/gateway-resume"
_WS_CLOSE_TIMEOUT: Final = 2.0

# VIEW_CHANNEL, SEND_MESSAGES, EMBED_LINKS, ATTACH_FILES, READ_MESSAGE_HISTORY, ADD_REACTIONS,
# USE_APPLICATION_COMMANDS, CREATE_PUBLIC_THREADS, SEND_MESSAGES_IN_THREADS: what a chat bot needs, no more.
_EVERYONE_PERMISSIONS: Final = sum(1 << bit for bit in (10, 11, 14, 15, 16, 6, 31, 35, 38))

_CHANNEL_GUILD_TEXT: Final = 0
_CHANNEL_DM: Final = 1
_CHANNEL_PUBLIC_THREAD: Final = 11
_CHANNEL_PRIVATE_THREAD: Final = 12

_USER_MENTION = re.compile(r"<@!?(\d+)>")
_COMMAND_NAME = re.compile(r"^[-_\w]{1,32}$")


class Intent(enum.IntFlag):
    """The gateway intent bits the fake understands."""

    GUILDS = 1 << 0
    GUILD_MEMBERS = 1 << 1
    GUILD_PRESENCES = 1 << 8
    GUILD_MESSAGES = 1 << 9
    DIRECT_MESSAGES = 1 << 12
    MESSAGE_CONTENT = 1 << 15


PRIVILEGED_INTENTS: Final = Intent.GUILD_MEMBERS | Intent.GUILD_PRESENCES | Intent.MESSAGE_CONTENT


class _Op(enum.IntEnum):
    DISPATCH = 0
    HEARTBEAT = 1
    IDENTIFY = 2
    PRESENCE_UPDATE = 3
    VOICE_STATE_UPDATE = 4
    RESUME = 6
    RECONNECT = 7
    REQUEST_GUILD_MEMBERS = 8
    INVALID_SESSION = 9
    HELLO = 10
    HEARTBEAT_ACK = 11


# ---------------------------------------------------------------------------------------------------------------------
# Records handed to tests


@dataclass(frozen=True)
class FakeAttachment:
    """A file a user attaches: served at its CDN URL. ``size`` overrides the declared size (default: the data's);
    ``content_type`` None leaves the field out, as Discord does for types it does not recognise."""

    filename: str
    data: bytes = b""
    content_type: str | None = None
    size: int | None = None


@dataclass(frozen=True)
class RecordedRequest:
    """One REST request as received; ``path`` is relative to ``/api/v10``."""

    method: str
    path: str
    query: Mapping[str, str]
    body: Any
    authorization: str | None


@dataclass(frozen=True)
class SentMessage:
    """A message the bot created, through the channel API or as an interaction follow-up."""

    id: int
    channel_id: int
    content: str
    payload: JSONObject
    message_reference: JSONObject | None
    allowed_mentions: JSONObject | None
    flags: int
    pinged_user_ids: tuple[int, ...]
    attachments: tuple[str, ...] = ()
    interaction_token: str | None = None

    @property
    def ephemeral(self) -> bool:
        return bool(self.flags & EPHEMERAL)

    @property
    def nonce(self) -> str | None:
        nonce = self.payload.get("nonce")
        return None if nonce is None else str(nonce)


@dataclass(frozen=True)
class DeduplicatedSend:
    """A create with ``enforce_nonce`` that Discord answered with the author's earlier message."""

    message_id: int
    channel_id: int
    nonce: str


@dataclass(frozen=True)
class LostResponse:
    """A request that took effect but whose answer never reached the client.

    ``status`` is what the client got instead (None: the connection was closed without a response);
    ``lost_status`` and ``lost_body`` are the answer the fake had computed, a created message's JSON say.
    """

    method: str
    path: str
    status: int | None
    lost_status: int
    lost_body: Any


@dataclass(frozen=True)
class MessageEdit:
    """An edit of a bot message; ``interaction_token`` is set for ``@original`` interaction edits."""

    message_id: int
    channel_id: int
    content: str | None
    payload: JSONObject
    allowed_mentions: JSONObject | None
    interaction_token: str | None = None


@dataclass(frozen=True)
class InteractionResponse:
    """The initial response to an interaction (``POST /interactions/{id}/{token}/callback``)."""

    interaction_id: int
    token: str
    type: int
    data: JSONObject

    @property
    def content(self) -> str | None:
        content = self.data.get("content")
        return content if isinstance(content, str) else None

    @property
    def flags(self) -> int:
        return int(self.data.get("flags") or 0)

    @property
    def ephemeral(self) -> bool:
        return bool(self.flags & EPHEMERAL)


@dataclass(frozen=True)
class SentInteraction:
    """What :meth:`FakeDiscord.send_interaction` dispatched."""

    id: int
    token: str
    command_id: int
    name: str


@dataclass(frozen=True)
class CommandSync:
    """One bulk overwrite of application commands; ``guild_id`` is None for global commands."""

    guild_id: int | None
    commands: tuple[JSONObject, ...]


@dataclass(frozen=True)
class Dispatch:
    """A logical gateway event (the same one may reach several shards' sessions, each with its own seq)."""

    event: str
    data: JSONObject
    guild_id: int | None


@dataclass(frozen=True)
class Identify:
    """An IDENTIFY payload as received, accepted or not."""

    token: str | None
    intents: int
    shard: tuple[int, int] | None
    payload: JSONObject


@dataclass
class GatewayConnection:
    """One WebSocket connection; when it ends, ``close_code`` is the code of whichever side closed first."""

    path: str
    query: Mapping[str, str]
    close_code: int | None = None
    closed_by_server: bool = False


# ---------------------------------------------------------------------------------------------------------------------
# World model


@dataclass
class _User:
    id: int
    username: str
    global_name: str | None = None
    bot: bool = False

    def to_json(self) -> JSONObject:
        return {
            "id": str(self.id),
            "username": self.username,
            "discriminator": "0",
            "global_name": self.global_name,
            "avatar": None,
            "bot": self.bot,
            "public_flags": 0,
        }


@dataclass
class _Guild:
    id: int
    name: str
    owner_id: int
    nicks: dict[int, str | None] = field(default_factory=dict)  # member id -> nick, in join order
    channel_ids: list[int] = field(default_factory=list)
    joined_at: str = ""


@dataclass
class _Channel:
    id: int
    type: int
    name: str | None = None
    guild_id: int | None = None
    parent_id: int | None = None
    recipient_id: int | None = None
    owner_id: int | None = None
    topic: str | None = None
    created_at: str = ""
    last_message_id: int | None = None

    @property
    def is_thread(self) -> bool:
        return self.type in (_CHANNEL_PUBLIC_THREAD, _CHANNEL_PRIVATE_THREAD)


@dataclass
class _Interaction:
    id: int
    token: str
    channel_id: int
    guild_id: int | None
    responded: bool = False
    original_message_id: int | None = None
    message_id: int | None = None  # a component interaction: the message whose button was clicked


@dataclass(frozen=True)
class _Failure:
    method: str
    pattern: re.Pattern[str]
    template: str
    status: int
    retry_after: float
    is_global: bool
    code: int | None
    message: str | None


@dataclass(frozen=True)
class _Lost:
    method: str
    pattern: re.Pattern[str]
    status: int | None  # None: close the connection without answering


@dataclass(frozen=True)
class _Body:
    json: Any
    files: tuple[tuple[str, int], ...]  # (filename, size) per uploaded file


class _ApiError(Exception):
    """Raised by handlers; the middleware renders it as Discord's JSON error body."""

    def __init__(self, status: int, code: int, message: str, errors: JSONObject | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.errors = errors

    def response(self) -> web.Response:
        body: JSONObject = {"message": self.message, "code": self.code}
        if self.errors is not None:
            body["errors"] = self.errors
        return _json_response(body, status=self.status)


def _json_response(body: Any, *, status: int = 200, headers: Mapping[str, str] | None = None) -> web.Response:
    # discord.py parses a body only if Content-Type is exactly "application/json", as Discord sends it;
    # aiohttp's json_response appends "; charset=utf-8", which would turn every payload into a str.
    return web.Response(
        body=json.dumps(body).encode(), status=status, headers={**(headers or {}), "Content-Type": "application/json"}
    )


def _form_error(field_name: str, code: str, message: str) -> _ApiError:
    errors = {field_name: {"_errors": [{"code": code, "message": message}]}}
    return _ApiError(400, 50035, "Invalid Form Body", errors)


_BODY_KEY: Final = web.RequestKey("fake_discord_body", _Body)


# ---------------------------------------------------------------------------------------------------------------------
# Gateway transport


class _Encoder(Protocol):
    def encode(self, text: str) -> bytes | str: ...


class _PlainEncoder:
    def encode(self, text: str) -> bytes | str:
        return text


class _ZlibStreamEncoder:
    """One deflate stream per connection, flushed per message: the client keeps one inflater for its lifetime."""

    def __init__(self) -> None:
        self._compressor = zlib.compressobj()

    def encode(self, text: str) -> bytes | str:
        return self._compressor.compress(text.encode()) + self._compressor.flush(zlib.Z_SYNC_FLUSH)


class _ZstdStreamEncoder:
    """One zstd frame per connection, a flushed block per message (discord.py never expects the frame to end)."""

    def __init__(self) -> None:
        # Imported dynamically: neither zstd binding is a dependency, and discord.py only asks for zstd-stream
        # when one of them is importable, so the fake can always match what the client in the same process has.
        try:
            stdlib = importlib.import_module("compression.zstd")
        except ImportError:
            third_party = importlib.import_module("zstandard")
            stream = third_party.ZstdCompressor().compressobj()
            flush_block = third_party.COMPRESSOBJ_FLUSH_BLOCK
            self._encode: Callable[[bytes], bytes] = lambda data: bytes(
                stream.compress(data) + stream.flush(flush_block)
            )
        else:
            compressor = stdlib.ZstdCompressor()
            mode = stdlib.ZstdCompressor.FLUSH_BLOCK
            self._encode = lambda data: bytes(compressor.compress(data, mode=mode))

    def encode(self, text: str) -> bytes | str:
        return self._encode(text.encode())


def _make_encoder(compress: str | None) -> _Encoder:
    if compress is None:
        return _PlainEncoder()
    if compress == "zlib-stream":
        return _ZlibStreamEncoder()
    if compress == "zstd-stream":
        return _ZstdStreamEncoder()
    raise ValueError(f"unsupported gateway compression {compress!r}")


@dataclass(frozen=True)
class _Close:
    code: int
    reason: str


class _Connection:
    """A gateway socket plus a single writer task, so frames (and the compression stream) stay in order."""

    def __init__(self, ws: web.WebSocketResponse, encoder: _Encoder, record: GatewayConnection) -> None:
        self.ws = ws
        self.record = record
        self.session: _Session | None = None
        self.closing = False
        self.close_code: int | None = None
        self._encoder = encoder
        self._outbox: asyncio.Queue[JSONObject | _Close] = asyncio.Queue()
        self._writer = asyncio.create_task(self._write_loop(), name=f"fake-discord-writer:{record.path}")

    def send(self, frame: JSONObject) -> None:
        if not self.closing:
            self._outbox.put_nowait(frame)

    def close(self, code: int, reason: str = "") -> None:
        if not self.closing:
            self.closing = True
            self.close_code = code
            self._outbox.put_nowait(_Close(code, reason))

    async def flushed(self, timeout: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._outbox.join(), timeout)

    async def stop(self) -> None:
        # A close we asked for is still waiting for the client's close frame: give it that long before cancelling.
        if self.closing:
            await asyncio.wait({self._writer}, timeout=_WS_CLOSE_TIMEOUT)
        self._writer.cancel()
        await asyncio.wait({self._writer})
        while not self._outbox.empty():
            self._outbox.get_nowait()
            self._outbox.task_done()

    async def _write_loop(self) -> None:
        while True:
            item = await self._outbox.get()
            try:
                if isinstance(item, _Close):
                    await self.ws.close(code=item.code, message=item.reason.encode())
                    return
                await self._write(item)
            except (ConnectionError, RuntimeError):
                # The peer vanished mid-write. Discord drops the frame too; the session history keeps it for RESUME.
                self.closing = True
            finally:
                self._outbox.task_done()

    async def _write(self, frame: JSONObject) -> None:
        if self.ws.closed:
            return
        encoded = self._encoder.encode(json.dumps(frame, separators=(",", ":")))
        if isinstance(encoded, bytes):
            await self.ws.send_bytes(encoded)
        else:
            await self.ws.send_str(encoded)


@dataclass
class _Session:
    id: str
    token: str
    intents: int
    shard: tuple[int, int]
    conn: _Connection | None
    history: list[JSONObject] = field(default_factory=list)
    rewind: int = 0

    def push(self, event: str, data: JSONObject) -> None:
        frame: JSONObject = {"op": _Op.DISPATCH, "t": event, "s": len(self.history) + 1, "d": data}
        self.history.append(frame)
        if self.conn is not None:
            self.conn.send(frame)


def _op_frame(op: _Op, data: Any = None) -> JSONObject:
    return {"op": op, "d": data, "s": None, "t": None}


# ---------------------------------------------------------------------------------------------------------------------
# Small helpers


def _iso(moment: datetime | None = None) -> str:
    return (moment or datetime.now(UTC)).isoformat()


def _as_int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _truthy_query(value: str | None) -> bool:
    return value is not None and value.lower() in ("1", "true")


def _route_pattern(template: str) -> re.Pattern[str]:
    parts = re.split(r"\{[^}/]+\}", template)
    return re.compile("[^/]+".join(re.escape(part) for part in parts) + "/?")


async def _wait_queue(queue: asyncio.Queue[_T], timeout: float, what: str) -> _T:
    try:
        return await asyncio.wait_for(queue.get(), timeout)
    except TimeoutError:
        raise TimeoutError(f"fake Discord: no {what} within {timeout}s") from None


# ---------------------------------------------------------------------------------------------------------------------
# The fake


class FakeDiscord:
    """Discord's REST API and gateway on loopback. Use as ``async with FakeDiscord(...) as fake:``."""

    def __init__(
        self,
        *,
        bot_user_id: int = DEFAULT_BOT_USER_ID,
        application_id: int | None = None,
        token: str = DEFAULT_TOKEN,
        bot_username: str = "fake-bot",
        heartbeat_interval_ms: int = 41_250,
        shard_count: int = 1,
        allowed_privileged_intents: int = PRIVILEGED_INTENTS,
        echo_bot_messages: bool = True,
        event_flush_timeout: float = 5.0,
        nonce_window_seconds: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.bot_user_id = bot_user_id
        # Applications created since 2019 share their id with their bot user.
        self.application_id = application_id if application_id is not None else bot_user_id
        self.token = token
        self.heartbeat_interval_ms = heartbeat_interval_ms
        self.shard_count = shard_count
        self.allowed_privileged_intents = allowed_privileged_intents
        self.echo_bot_messages = echo_bot_messages
        self.event_flush_timeout = event_flush_timeout
        self.nonce_window_seconds = nonce_window_seconds
        self._clock = clock  # only nonce expiry reads it; tests pass their own to step past the window

        self._last_snowflake = 0
        self._port: int | None = None
        self._runner: web.AppRunner | None = None
        self._users: dict[int, _User] = {bot_user_id: _User(bot_user_id, bot_username, bot=True)}
        self._guilds: dict[int, _Guild] = {}
        self._channels: dict[int, _Channel] = {}
        self._interactions: dict[int, _Interaction] = {}
        self._sessions: dict[str, _Session] = {}
        self._connections: set[_Connection] = set()
        self._failures: list[_Failure] = []
        self._lost: list[_Lost] = []
        self._nonces: dict[tuple[int, str], tuple[int, float]] = {}  # (author, nonce) -> (message id, created)
        self._identify_rejections: list[_Close] = []
        self._changed = asyncio.Event()

        self.messages: dict[int, JSONObject] = {}
        self.global_commands: dict[str, JSONObject] = {}
        self.guild_commands: dict[int, dict[str, JSONObject]] = {}
        self.requests: list[RecordedRequest] = []
        self.unhandled_requests: list[RecordedRequest] = []
        self.sent_messages: list[SentMessage] = []
        self.deduplicated_sends: list[DeduplicatedSend] = []
        self.lost_responses: list[LostResponse] = []
        self.typing_calls: list[int] = []
        self.created_threads: list[int] = []  # thread IDs created through the API, in order
        self.attachment_files: dict[int, FakeAttachment] = {}
        self.downloads: list[str] = []  # attachment URLs paths fetched, in order
        self.reactions: list[tuple[int, int, str]] = []
        self.deleted_messages: list[tuple[int, int]] = []
        self.presence_updates: list[JSONObject] = []
        self.dispatches: list[Dispatch] = []
        self.identifies: list[Identify] = []
        self.connections: list[GatewayConnection] = []
        self.posted: asyncio.Queue[SentMessage] = asyncio.Queue()
        self.followups: asyncio.Queue[SentMessage] = asyncio.Queue()
        self.edits: asyncio.Queue[MessageEdit] = asyncio.Queue()
        self.interaction_responses: asyncio.Queue[InteractionResponse] = asyncio.Queue()
        self.command_syncs: asyncio.Queue[CommandSync] = asyncio.Queue()
        self.typing: asyncio.Queue[int] = asyncio.Queue()
        self.ready_count = 0
        self.resume_count = 0
        self.heartbeat_count = 0

    # -- lifecycle ------------------------------------------------------------------------------------------------

    async def __aenter__(self) -> FakeDiscord:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def start(self) -> None:
        app = web.Application(middlewares=[self._api_middleware], client_max_size=32 * 1024 * 1024)
        self._add_routes(app)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=_WS_CLOSE_TIMEOUT)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self._port = site.port

    async def close(self) -> None:
        for conn in list(self._connections):
            conn.close(1001, "fake Discord shutting down")
        await asyncio.gather(*(conn.stop() for conn in list(self._connections)))
        self._sessions.clear()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("FakeDiscord is not started")
        return self._port

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}{_API_PREFIX}"

    @property
    def gateway_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}{_GATEWAY_PATH}"

    @property
    def resume_gateway_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}{_RESUME_GATEWAY_PATH}"

    # -- world configuration --------------------------------------------------------------------------------------

    def add_user(
        self, user_id: int, username: str | None = None, *, global_name: str | None = None, bot: bool = False
    ) -> None:
        self._users[user_id] = _User(user_id, username or f"user{user_id}", global_name, bot)

    def add_guild(self, guild_id: int, name: str = "Test Guild", *, owner_id: int | None = None) -> None:
        """Add a guild the bot is in; a GUILD_CREATE follows if a client is already connected."""
        if owner_id is None:
            owner_id = self._next_snowflake()
            self.add_user(owner_id, "guild-owner")
        guild = _Guild(guild_id, name, owner_id, joined_at=_iso())
        guild.nicks[owner_id] = None
        guild.nicks[self.bot_user_id] = None
        self._guilds[guild_id] = guild
        self._announce("GUILD_CREATE", guild_id, lambda: self._guild_json(guild))

    def add_member(self, guild_id: int, user_id: int, *, nick: str | None = None) -> None:
        guild = self._guilds[guild_id]
        self._ensure_user(user_id)
        guild.nicks[user_id] = nick
        self._announce(
            "GUILD_MEMBER_ADD", guild_id, lambda: {**self._member_json(guild, user_id), "guild_id": str(guild_id)}
        )

    def add_text_channel(
        self, channel_id: int, guild_id: int, name: str = "general", *, topic: str | None = None
    ) -> None:
        channel = _Channel(channel_id, _CHANNEL_GUILD_TEXT, name, guild_id, topic=topic)
        self._add_guild_channel(channel, "CHANNEL_CREATE")

    def add_thread(
        self,
        thread_id: int,
        parent_id: int,
        name: str = "thread",
        *,
        owner_id: int | None = None,
        private: bool = False,
    ) -> None:
        parent = self._channels[parent_id]
        kind = _CHANNEL_PRIVATE_THREAD if private else _CHANNEL_PUBLIC_THREAD
        owner = owner_id if owner_id is not None else self.bot_user_id
        thread = _Channel(thread_id, kind, name, parent.guild_id, parent_id=parent_id, owner_id=owner)
        self._add_guild_channel(thread, "THREAD_CREATE")

    def add_dm_channel(self, channel_id: int, user_id: int) -> None:
        self._ensure_user(user_id)
        self._channels[channel_id] = _Channel(channel_id, _CHANNEL_DM, recipient_id=user_id, created_at=_iso())

    def _add_guild_channel(self, channel: _Channel, event: str) -> None:
        assert channel.guild_id is not None
        guild = self._guilds[channel.guild_id]
        channel.created_at = _iso()
        self._channels[channel.id] = channel
        guild.channel_ids.append(channel.id)
        self._announce(event, guild.id, lambda: {**self._channel_json(channel), "guild_id": str(guild.id)})

    def _ensure_user(self, user_id: int) -> _User:
        if user_id not in self._users:
            self.add_user(user_id)
        return self._users[user_id]

    def _announce(self, event: str, guild_id: int, build: Callable[[], JSONObject]) -> None:
        """Tell already-connected clients about a change; before anyone connects READY will carry it."""
        if self._sessions_for(guild_id):
            self._emit(Dispatch(event, build(), guild_id))

    # -- scripted behaviour ---------------------------------------------------------------------------------------

    def fail_next(
        self,
        method: str,
        path: str,
        *,
        status: int,
        retry_after: float = 1.0,
        is_global: bool = False,
        code: int | None = None,
        message: str | None = None,
        times: int = 1,
    ) -> None:
        """Make the next ``times`` requests matching ``method`` and ``path`` fail with ``status``.

        ``path`` is relative to ``/api/v10`` and may use ``{placeholders}`` (``/channels/{id}/messages``).
        """
        template = path.removeprefix(_API_PREFIX)
        failure = _Failure(
            method.upper(), _route_pattern(template), template, status, retry_after, is_global, code, message
        )
        self._failures.extend([failure] * times)

    def lose_responses(self, method: str, path: str, count: int = 1, *, status: int = 500) -> None:
        """Let the next ``count`` requests matching ``method`` and ``path`` take effect, then answer ``status``.

        The request is handled as usual (a create stores the message, queues it on ``posted`` and dispatches
        MESSAGE_CREATE; an edit applies; an error stays an error) and its answer, whatever it was, is replaced
        by Discord's JSON error for ``status``.
        ``lost_responses`` records each. discord.py retries 500, 502, 504 and 524 itself after sleeping
        1 + 2*try seconds, and raises ``DiscordServerError`` at once for 503. A request ``fail_next`` refuses
        uses up no lost response.
        """
        self._queue_lost(method, path, count, status)

    def drop_responses(self, method: str, path: str, count: int = 1) -> None:
        """Like :meth:`lose_responses`, but close the connection without any HTTP response.

        discord.py does not retry that: its ``send``/``edit`` raise aiohttp's ``ServerDisconnectedError``.
        """
        self._queue_lost(method, path, count, None)

    def _queue_lost(self, method: str, path: str, count: int, status: int | None) -> None:
        if count < 1:
            raise ValueError(f"count must be at least 1, not {count}")
        lost = _Lost(method.upper(), _route_pattern(path.removeprefix(_API_PREFIX)), status)
        self._lost.extend([lost] * count)

    def reject_next_identify(self, code: int, reason: str = "") -> None:
        """Close the connection of the next IDENTIFY with ``code`` (e.g. 4004, 4014) whatever it contains."""
        self._identify_rejections.append(_Close(code, reason or _CLOSE_REASONS.get(code, "")))

    # -- gateway controls -----------------------------------------------------------------------------------------

    @property
    def identify_count(self) -> int:
        return len(self.identifies)

    @property
    def connected(self) -> bool:
        return any(session.conn is not None for session in self._sessions.values())

    def sequence(self, shard_id: int = 0) -> int:
        """The last sequence number sent (or buffered) on the newest session of ``shard_id``."""
        sessions = [s for s in self._sessions.values() if s.shard[0] == shard_id]
        if not sessions:
            raise LookupError(f"fake Discord: no session for shard {shard_id}")
        return len(sessions[-1].history)

    async def wait_ready(self, timeout: float = 5.0, *, count: int = 1) -> None:
        """Wait until ``count`` READYs (IDENTIFY accepted, READY and GUILD_CREATEs queued) have been sent."""
        await self._wait_until(lambda: self.ready_count >= count, timeout, f"READY #{count}")

    async def wait_for_resume(self, timeout: float = 5.0, *, count: int = 1) -> None:
        await self._wait_until(lambda: self.resume_count >= count, timeout, f"RESUME #{count}")

    async def wait_for_heartbeats(self, count: int, timeout: float = 5.0) -> None:
        await self._wait_until(lambda: self.heartbeat_count >= count, timeout, f"{count} heartbeats")

    async def wait_disconnected(self, timeout: float = 5.0) -> None:
        await self._wait_until(lambda: not self._connections, timeout, "all gateway connections to end")

    async def request_reconnect(self, *, rewind: int = 0) -> None:
        """Send op 7 RECONNECT to every connected session.

        ``rewind`` makes the following RESUME replay that many already-delivered dispatches as well, the way
        Discord occasionally re-delivers events, so duplicate handling can be tested.
        """
        for session in self._live_sessions():
            session.rewind = rewind
            assert session.conn is not None
            session.conn.send(_op_frame(_Op.RECONNECT))
        await self._flush()

    async def invalidate_session(self, *, resumable: bool = False) -> None:
        """Send op 9 INVALID_SESSION; a non-resumable session is forgotten so the client must IDENTIFY again."""
        for session in self._live_sessions():
            assert session.conn is not None
            session.conn.send(_op_frame(_Op.INVALID_SESSION, resumable))
            if not resumable:
                self._sessions.pop(session.id, None)
        await self._flush()

    async def close_gateway(self, code: int = 4000, reason: str = "") -> None:
        """Close every gateway connection from the server side (sessions stay resumable)."""
        for conn in list(self._connections):
            conn.close(code, reason)
        await self._flush()

    async def request_heartbeat(self) -> None:
        """Send op 1, which obliges the client to heartbeat immediately."""
        for session in self._live_sessions():
            assert session.conn is not None
            session.conn.send(_op_frame(_Op.HEARTBEAT))
        await self._flush()

    # -- dispatching events ---------------------------------------------------------------------------------------

    async def send_dispatch(self, event: str, data: JSONObject, *, guild_id: int | None = None) -> Dispatch:
        """Dispatch an arbitrary event to the session(s) that own ``guild_id`` (shard 0 when None)."""
        dispatch = Dispatch(event, data, guild_id)
        self._emit(dispatch, require_session=True)
        await self._flush()
        return dispatch

    async def replay(self, dispatch: Dispatch | int) -> None:
        """Send a dispatch again with a fresh sequence number; an int means the MESSAGE_CREATE with that id."""
        if isinstance(dispatch, int):
            dispatch = self._message_dispatch(dispatch)
        self._emit(Dispatch(dispatch.event, copy.deepcopy(dispatch.data), dispatch.guild_id), require_session=True)
        await self._flush()

    async def send_message_create(
        self,
        *,
        channel_id: int,
        author_id: int,
        content: str,
        mentions: Sequence[int] = (),
        guild_id: int | None = None,
        message_reference: int | None = None,
        author_bot: bool = False,
        reply_ping: bool = True,
        attachments: Sequence[str | FakeAttachment] = (),
    ) -> int:
        """Dispatch MESSAGE_CREATE for a message a user wrote; returns the new message id.

        ``guild_id`` defaults to the channel's guild; ``message_reference`` is the id of a message (usually one
        of the bot's) being replied to, whose author is pinged unless ``reply_ping`` is False, as in Discord.
        """
        channel = self._require_known_channel(channel_id)
        guild_id = self._check_guild(channel, guild_id)
        author = self._ensure_user(author_id)
        if guild_id is not None and author_id not in self._guilds[guild_id].nicks:
            self.add_member(guild_id, author_id)
        message = self._user_message_json(channel, author, content, author_bot, attachments)
        pinged = list(mentions)
        if message_reference is not None:
            replied_author = self._attach_reference(message, channel, guild_id, message_reference)
            if reply_ping and replied_author is not None and replied_author != author_id:
                pinged.append(replied_author)
        message["mentions"] = [self._mention_json(guild_id, user_id) for user_id in dict.fromkeys(pinged)]
        self._store_message(message, channel)
        self._emit(Dispatch("MESSAGE_CREATE", self._gateway_message(message, guild_id), guild_id), require_session=True)
        await self._flush()
        return int(message["id"])

    async def send_interaction(
        self,
        name: str,
        *,
        channel_id: int,
        user_id: int,
        guild_id: int | None = None,
        options: Mapping[str, str | int | float | bool] | None = None,
    ) -> SentInteraction:
        """Dispatch INTERACTION_CREATE for a registered chat-input command (guild commands win over global)."""
        channel = self._require_known_channel(channel_id)
        guild_id = self._check_guild(channel, guild_id)
        command = self._find_command(name, guild_id)
        user = self._ensure_user(user_id)
        if guild_id is not None and user_id not in self._guilds[guild_id].nicks:
            self.add_member(guild_id, user_id)
        interaction = _Interaction(
            self._next_snowflake(), f"fake-interaction-{secrets.token_urlsafe(24)}", channel_id, guild_id
        )
        self._interactions[interaction.id] = interaction
        payload = self._interaction_json(interaction, command, self._command_options(command, options or {}), user)
        self._emit(Dispatch("INTERACTION_CREATE", payload, guild_id), require_session=True)
        await self._flush()
        return SentInteraction(interaction.id, interaction.token, int(command["id"]), name)

    async def send_component_interaction(
        self, message_id: int, custom_id: str, *, user_id: int, token: str | None = None,
        interaction_id: int | None = None, as_seen: JSONObject | None = None,
    ) -> SentInteraction:  # fmt: skip
        """Dispatch INTERACTION_CREATE for a click on the button ``custom_id`` of the bot's message ``message_id``.

        Passing the ``interaction_id`` and ``token`` of an earlier click replays it (Discord refuses its response).
        ``as_seen`` is the message as the user's client showed it (a copy taken earlier): a second click of a
        double click was made on the prompt before the first click's edit reached the user.
        """
        message = as_seen if as_seen is not None else self.messages[message_id]
        channel = self._channels[int(message["channel_id"])]
        guild_id = channel.guild_id
        user = self._ensure_user(user_id)
        if guild_id is not None and user_id not in self._guilds[guild_id].nicks:
            self.add_member(guild_id, user_id)
        interaction = self._interactions.get(interaction_id or 0) or _Interaction(
            self._next_snowflake(), token or f"fake-interaction-{secrets.token_urlsafe(24)}", channel.id, guild_id,
            message_id=message_id,
        )  # fmt: skip
        self._interactions[interaction.id] = interaction
        payload: JSONObject = {
            "id": str(interaction.id), "application_id": str(self.application_id), "type": 3,
            "token": interaction.token, "version": 1, "data": {"custom_id": custom_id, "component_type": 2},
            "message": self._gateway_message(message, guild_id), "channel_id": str(channel.id),
            "channel": self._channel_json(channel), "locale": "en-US", "app_permissions": str(_EVERYONE_PERMISSIONS),
            "entitlements": [], "attachment_size_limit": 10 * 1024 * 1024,
        }  # fmt: skip
        if guild_id is None:
            payload.update(user=user.to_json(), context=1, authorizing_integration_owners={"1": str(user.id)})
        else:
            member = {**self._member_json(self._guilds[guild_id], user.id), "permissions": str(_EVERYONE_PERMISSIONS)}
            payload.update(
                guild_id=str(guild_id), guild={"id": str(guild_id), "locale": "en-US", "features": []},
                guild_locale="en-US", member=member, context=0, authorizing_integration_owners={"0": str(guild_id)},
            )  # fmt: skip
        self._emit(Dispatch("INTERACTION_CREATE", payload, guild_id), require_session=True)
        await self._flush()
        return SentInteraction(interaction.id, interaction.token, 0, custom_id)

    # -- waiting for what the bot did -----------------------------------------------------------------------------

    async def next_message(self, timeout: float = 5.0) -> SentMessage:
        return await _wait_queue(self.posted, timeout, "message posted")

    async def next_followup(self, timeout: float = 5.0) -> SentMessage:
        return await _wait_queue(self.followups, timeout, "interaction follow-up")

    async def next_edit(self, timeout: float = 5.0) -> MessageEdit:
        return await _wait_queue(self.edits, timeout, "message edit")

    async def next_interaction_response(self, timeout: float = 5.0) -> InteractionResponse:
        return await _wait_queue(self.interaction_responses, timeout, "interaction response")

    async def next_command_sync(self, timeout: float = 5.0) -> CommandSync:
        return await _wait_queue(self.command_syncs, timeout, "command sync")

    async def next_typing(self, timeout: float = 5.0) -> int:
        return await _wait_queue(self.typing, timeout, "typing call")

    def requests_to(self, method: str, path: str) -> list[RecordedRequest]:
        """Recorded requests matching ``method`` and a path template like ``/channels/{id}/messages``."""
        pattern = _route_pattern(path.removeprefix(_API_PREFIX))
        return [r for r in self.requests if r.method == method.upper() and pattern.fullmatch(r.path)]

    # -- internals: notification --------------------------------------------------------------------------------

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def _wait_until(self, predicate: Callable[[], bool], timeout: float, what: str) -> None:
        try:
            async with asyncio.timeout(timeout):
                while not predicate():
                    await self._changed.wait()
        except TimeoutError:
            raise TimeoutError(f"fake Discord: no {what} within {timeout}s") from None

    def _next_snowflake(self) -> int:
        candidate = (int(time.time() * 1000) - _DISCORD_EPOCH_MS) << 22
        self._last_snowflake = max(candidate, self._last_snowflake + 1)
        return self._last_snowflake

    # -- internals: sessions and dispatch -----------------------------------------------------------------------

    def _live_sessions(self) -> list[_Session]:
        return [session for session in self._sessions.values() if session.conn is not None]

    def _sessions_for(self, guild_id: int | None) -> list[_Session]:
        # Discord's shard formula; DMs always go to shard 0.
        def owns(session: _Session) -> bool:
            shard_id, count = session.shard
            return shard_id == ((guild_id >> 22) % count if guild_id is not None else 0)

        return [session for session in self._sessions.values() if owns(session)]

    def _emit(self, dispatch: Dispatch, *, require_session: bool = False) -> None:
        sessions = self._sessions_for(dispatch.guild_id)
        if require_session and not sessions:
            raise RuntimeError(f"fake Discord: no gateway session receives {dispatch.event}; await wait_ready() first")
        self.dispatches.append(dispatch)
        for session in sessions:
            self._deliver(session, dispatch)

    def _deliver(self, session: _Session, dispatch: Dispatch) -> None:
        data = self._visible_data(session, dispatch)
        if data is not None:
            session.push(dispatch.event, data)

    def _visible_data(self, session: _Session, dispatch: Dispatch) -> JSONObject | None:
        """What this session may see of a dispatch, given its intents (None: not delivered)."""
        if dispatch.event in ("GUILD_CREATE", "GUILD_MEMBER_ADD"):
            return self._visible_guild_data(session, dispatch)
        if dispatch.event not in ("MESSAGE_CREATE", "MESSAGE_UPDATE", "MESSAGE_DELETE"):
            return dispatch.data
        needed = Intent.GUILD_MESSAGES if dispatch.guild_id is not None else Intent.DIRECT_MESSAGES
        if not session.intents & needed:
            return None
        data = copy.deepcopy(dispatch.data)
        if dispatch.event != "MESSAGE_DELETE" and not self._content_visible(session, dispatch):
            data.update(content="", embeds=[], attachments=[], components=[])
        return data

    def _visible_guild_data(self, session: _Session, dispatch: Dispatch) -> JSONObject | None:
        if session.intents & Intent.GUILD_MEMBERS:
            return dispatch.data
        if dispatch.event == "GUILD_MEMBER_ADD":
            return None
        # Without GUILD_MEMBERS Discord's GUILD_CREATE lists only a few members (the bot among them).
        bot = str(self.bot_user_id)
        return {**dispatch.data, "members": [m for m in dispatch.data["members"] if m["user"]["id"] == bot]}

    def _content_visible(self, session: _Session, dispatch: Dispatch) -> bool:
        if session.intents & Intent.MESSAGE_CONTENT or dispatch.guild_id is None:
            return True
        data = dispatch.data
        bot = str(self.bot_user_id)
        return data.get("author", {}).get("id") == bot or any(m.get("id") == bot for m in data.get("mentions", []))

    async def _flush(self) -> None:
        """Return once queued frames are on the wire, so callers' next step happens-after delivery."""
        conns = [session.conn for session in self._live_sessions() if session.conn is not None]
        await asyncio.gather(*(conn.flushed(self.event_flush_timeout) for conn in conns))

    def _message_dispatch(self, message_id: int) -> Dispatch:
        for dispatch in reversed(self.dispatches):
            if dispatch.event == "MESSAGE_CREATE" and dispatch.data.get("id") == str(message_id):
                return dispatch
        raise KeyError(f"no MESSAGE_CREATE dispatched for message {message_id}")

    # -- internals: gateway protocol ----------------------------------------------------------------------------

    async def _gateway(self, request: web.Request) -> web.StreamResponse:
        query = request.query
        if query.get("encoding", "json") != "json":
            raise web.HTTPBadRequest(text="fake Discord speaks encoding=json only")
        try:
            encoder = _make_encoder(query.get("compress"))
        except (ValueError, ImportError) as exc:
            raise web.HTTPBadRequest(text=str(exc)) from exc
        # discord.py connects with compress=0; per-message deflate would only hide bugs in the stream compression.
        ws = web.WebSocketResponse(compress=False, timeout=_WS_CLOSE_TIMEOUT, max_msg_size=0)
        await ws.prepare(request)
        record = GatewayConnection(request.path, dict(query))
        self.connections.append(record)
        conn = _Connection(ws, encoder, record)
        self._connections.add(conn)
        try:
            await self._serve(conn, query.get("v"))
        finally:
            record.closed_by_server = conn.close_code is not None
            record.close_code = conn.close_code if conn.close_code is not None else ws.close_code
            self._detach(conn)
            await conn.stop()
            self._connections.discard(conn)
            self._notify()
        return ws

    async def _serve(self, conn: _Connection, version: str | None) -> None:
        if version in ("9", "10"):
            conn.send(_op_frame(_Op.HELLO, {"heartbeat_interval": self.heartbeat_interval_ms, "_trace": ["fake"]}))
        else:
            conn.close(4012, "Invalid API version")
        async for msg in conn.ws:
            if msg.type is web.WSMsgType.TEXT:
                self._on_frame(conn, msg.data)
            else:
                conn.close(4002, "Error while decoding payload.")

    def _detach(self, conn: _Connection) -> None:
        session = conn.session
        if session is None or session.conn is not conn:
            return
        session.conn = None
        # A client closing with 1000/1001 ends its session on Discord; any other close keeps it resumable.
        if not conn.closing and conn.ws.close_code in (1000, 1001):
            self._sessions.pop(session.id, None)

    def _on_frame(self, conn: _Connection, text: str) -> None:
        try:
            frame = json.loads(text)
            op, data = frame["op"], frame.get("d")
        except (ValueError, KeyError, TypeError):
            conn.close(4002, "Error while decoding payload.")
            return
        if op == _Op.HEARTBEAT:
            self.heartbeat_count += 1
            conn.send(_op_frame(_Op.HEARTBEAT_ACK))
            self._notify()
        elif op == _Op.IDENTIFY:
            self._identify(conn, data if isinstance(data, dict) else {})
        elif op == _Op.RESUME:
            self._resume(conn, data if isinstance(data, dict) else {})
        elif conn.session is None:
            conn.close(4003, "Not authenticated.")
        elif op == _Op.REQUEST_GUILD_MEMBERS:
            self._send_member_chunk(conn.session, data if isinstance(data, dict) else {})
        elif op == _Op.PRESENCE_UPDATE:
            self.presence_updates.append(data)
        elif op != _Op.VOICE_STATE_UPDATE:
            conn.close(4001, "Unknown opcode.")

    def _identify(self, conn: _Connection, data: JSONObject) -> None:
        if conn.session is not None:
            conn.close(4005, "Already authenticated.")
            return
        shard_raw = data.get("shard")
        shard = (int(shard_raw[0]), int(shard_raw[1])) if isinstance(shard_raw, list) and len(shard_raw) == 2 else None
        intents = int(data.get("intents") or 0)
        token = data.get("token")
        self.identifies.append(Identify(token, intents, shard, data))
        self._notify()
        rejection = self._identify_rejection(token, intents, shard)
        if rejection is not None:
            conn.close(rejection.code, rejection.reason)
            return
        session = _Session(secrets.token_hex(16), self.token, intents, shard or (0, 1), conn)
        self._sessions[session.id] = session
        conn.session = session
        session.push("READY", self._ready_json(session, shard))
        if intents & Intent.GUILDS:
            for guild in self._guilds_of(session):
                self._deliver(session, Dispatch("GUILD_CREATE", self._guild_json(guild), guild.id))
        self.ready_count += 1
        self._notify()

    def _identify_rejection(self, token: Any, intents: int, shard: tuple[int, int] | None) -> _Close | None:
        if self._identify_rejections:
            return self._identify_rejections.pop(0)
        if token != self.token:
            return _Close(4004, _CLOSE_REASONS[4004])
        if shard is not None and not 0 <= shard[0] < shard[1]:
            return _Close(4010, _CLOSE_REASONS[4010])
        if intents & PRIVILEGED_INTENTS & ~self.allowed_privileged_intents:
            return _Close(4014, _CLOSE_REASONS[4014])
        return None

    def _resume(self, conn: _Connection, data: JSONObject) -> None:
        session = self._sessions.get(str(data.get("session_id")))
        seq = _as_int(data.get("seq")) or 0
        if session is None or data.get("token") != session.token or seq > len(session.history):
            conn.send(_op_frame(_Op.INVALID_SESSION, False))
            return
        if session.conn is not None and session.conn is not conn:
            session.conn.close(4000, "Session resumed elsewhere.")
        start = max(0, seq - session.rewind)
        session.rewind = 0
        session.conn = conn
        conn.session = session
        for frame in session.history[start:]:
            conn.send(frame)
        session.push("RESUMED", {"_trace": ["fake"]})
        self.resume_count += 1
        self._notify()

    def _send_member_chunk(self, session: _Session, data: JSONObject) -> None:
        guild = self._guilds.get(_as_int(data.get("guild_id")) or 0)
        if guild is None:
            return
        wanted = [int(u) for u in data.get("user_ids") or []]
        query = str(data.get("query") or "").lower()
        member_ids = [u for u in guild.nicks if (u in wanted if wanted else self._users[u].username.startswith(query))]
        chunk: JSONObject = {
            "guild_id": str(guild.id),
            "members": [self._member_json(guild, user_id) for user_id in member_ids],
            "chunk_index": 0,
            "chunk_count": 1,
            "not_found": [str(u) for u in wanted if u not in guild.nicks],
        }
        if data.get("nonce"):
            chunk["nonce"] = data["nonce"]
        session.push("GUILD_MEMBERS_CHUNK", chunk)

    def _guilds_of(self, session: _Session) -> list[_Guild]:
        shard_id, count = session.shard
        return [guild for guild in self._guilds.values() if (guild.id >> 22) % count == shard_id]

    # -- internals: JSON builders --------------------------------------------------------------------------------

    @property
    def _bot(self) -> _User:
        return self._users[self.bot_user_id]

    @property
    def application_flags(self) -> int:
        """GATEWAY_*_LIMITED flags matching ``allowed_privileged_intents``, as an unverified app would have."""
        flags = 1 << 23  # APPLICATION_COMMAND_BADGE
        for intent, flag in ((Intent.GUILD_PRESENCES, 13), (Intent.GUILD_MEMBERS, 15), (Intent.MESSAGE_CONTENT, 19)):
            if self.allowed_privileged_intents & intent:
                flags |= 1 << flag
        return flags

    def _bot_user_json(self) -> JSONObject:
        return {**self._bot.to_json(), "verified": True, "mfa_enabled": False, "flags": 0, "email": None}

    def _application_json(self) -> JSONObject:
        return {
            "id": str(self.application_id),
            "name": self._bot.username,
            "description": "",
            "icon": None,
            "bot_public": True,
            "bot_require_code_grant": False,
            "owner": self._users[self.bot_user_id].to_json(),
            "team": None,
            "verify_key": "0" * 64,
            "flags": self.application_flags,
            "bot": self._bot.to_json(),
            "interactions_endpoint_url": None,
            "redirect_uris": [],
            "tags": [],
        }

    def _ready_json(self, session: _Session, shard: tuple[int, int] | None) -> JSONObject:
        ready: JSONObject = {
            "v": 10,
            "user": self._bot_user_json(),
            "guilds": [{"id": str(guild.id), "unavailable": True} for guild in self._guilds_of(session)],
            "session_id": session.id,
            "session_type": "normal",
            "resume_gateway_url": self.resume_gateway_url,
            "application": {"id": str(self.application_id), "flags": self.application_flags},
            "private_channels": [],
            "relationships": [],
            "presences": [],
            "guild_join_requests": [],
            "user_settings": {},
            "_trace": ["fake"],
        }
        if shard is not None:
            ready["shard"] = list(shard)
        return ready

    def _member_json(self, guild: _Guild, user_id: int, *, with_user: bool = True) -> JSONObject:
        member: JSONObject = {
            "nick": guild.nicks.get(user_id),
            "roles": [],
            "joined_at": guild.joined_at,
            "deaf": False,
            "mute": False,
            "flags": 0,
            "pending": False,
            "avatar": None,
        }
        if with_user:
            member["user"] = self._users[user_id].to_json()
        return member

    def _guild_json(self, guild: _Guild) -> JSONObject:
        channels = [self._channels[cid] for cid in guild.channel_ids]
        return {
            "id": str(guild.id),
            "name": guild.name,
            "icon": None,
            "owner_id": str(guild.owner_id),
            "unavailable": False,
            "large": False,
            "joined_at": guild.joined_at,
            # Equal to len(members) so a client with GUILD_MEMBERS considers the guild chunked and skips op 8.
            "member_count": len(guild.nicks),
            "members": [self._member_json(guild, user_id) for user_id in guild.nicks],
            "roles": [self._everyone_role(guild)],
            "channels": [self._channel_json(c) for c in channels if not c.is_thread],
            "threads": [{**self._channel_json(c), "guild_id": str(guild.id)} for c in channels if c.is_thread],
            "presences": [],
            "voice_states": [],
            "emojis": [],
            "stickers": [],
            "features": [],
            "stage_instances": [],
            "guild_scheduled_events": [],
            "soundboard_sounds": [],
            "preferred_locale": "en-US",
            "verification_level": 0,
            "default_message_notifications": 1,
            "explicit_content_filter": 0,
            "mfa_level": 0,
            "nsfw_level": 0,
            "premium_tier": 0,
            "system_channel_flags": 0,
            "afk_timeout": 300,
        }

    def _everyone_role(self, guild: _Guild) -> JSONObject:
        return {
            "id": str(guild.id),
            "name": "@everyone",
            "permissions": str(_EVERYONE_PERMISSIONS),
            "position": 0,
            "color": 0,
            "hoist": False,
            "managed": False,
            "mentionable": False,
            "flags": 0,
        }

    def _channel_json(self, channel: _Channel) -> JSONObject:
        last = str(channel.last_message_id) if channel.last_message_id else None
        if channel.type == _CHANNEL_DM:
            assert channel.recipient_id is not None
            return {
                "id": str(channel.id),
                "type": _CHANNEL_DM,
                "last_message_id": last,
                "flags": 0,
                "recipients": [self._users[channel.recipient_id].to_json()],
            }
        base: JSONObject = {
            "id": str(channel.id),
            "type": channel.type,
            "name": channel.name,
            "last_message_id": last,
            "rate_limit_per_user": 0,
            "flags": 0,
            "guild_id": str(channel.guild_id),
        }
        if channel.is_thread:
            return {
                **base,
                "parent_id": str(channel.parent_id),
                "owner_id": str(channel.owner_id),
                "message_count": 0,
                "member_count": 1,
                "total_message_sent": 0,
                "thread_metadata": {
                    "archived": False,
                    "auto_archive_duration": 1440,
                    "locked": False,
                    "archive_timestamp": channel.created_at,
                    "create_timestamp": channel.created_at,
                },
            }
        return {
            **base,
            "position": len(self._channels),
            "permission_overwrites": [],
            "nsfw": False,
            "parent_id": None,
            "topic": channel.topic,
        }

    def _mention_json(self, guild_id: int | None, user_id: int) -> JSONObject:
        user = self._ensure_user(user_id).to_json()
        guild = self._guilds.get(guild_id) if guild_id is not None else None
        if guild is not None and user_id in guild.nicks:
            user["member"] = self._member_json(guild, user_id, with_user=False)
        return user

    def _base_message_json(self, channel: _Channel, author: _User, content: str) -> JSONObject:
        return {
            "id": str(self._next_snowflake()),
            "type": 0,
            "channel_id": str(channel.id),
            "author": author.to_json(),
            "content": content,
            "timestamp": _iso(),
            "edited_timestamp": None,
            "tts": False,
            "mention_everyone": False,
            "mentions": [],
            "mention_roles": [],
            "attachments": [],
            "embeds": [],
            "components": [],
            "pinned": False,
            "flags": 0,
        }

    def _user_message_json(
        self,
        channel: _Channel,
        author: _User,
        content: str,
        author_bot: bool,
        attachments: Sequence[str | FakeAttachment],
    ) -> JSONObject:
        message = self._base_message_json(channel, author, content)
        message["author"]["bot"] = author.bot or author_bot
        message["attachments"] = [self._user_attachment_json(item) for item in attachments]
        return message

    def _user_attachment_json(self, item: str | FakeAttachment) -> JSONObject:
        if isinstance(item, str):
            return self._attachment_json(item, 0)
        size = item.size if item.size is not None else len(item.data)
        attachment = self._attachment_json(item.filename, size)
        if item.content_type is not None:
            attachment["content_type"] = item.content_type
        self.attachment_files[int(attachment["id"])] = item
        return attachment

    def _attachment_json(self, filename: str, size: int) -> JSONObject:
        attachment_id = self._next_snowflake()
        url = f"http://127.0.0.1:{self.port}/attachments/{attachment_id}/{filename}"
        return {"id": str(attachment_id), "filename": filename, "size": size, "url": url, "proxy_url": url}

    async def _get_attachment(self, request: web.Request) -> web.StreamResponse:
        self.downloads.append(request.path)
        item = self.attachment_files.get(int(request.match_info["attachment_id"]))
        if item is None or item.filename != request.match_info["filename"]:
            return web.Response(status=404, text="This content is no longer available.")
        return web.Response(body=item.data, headers={"Content-Type": item.content_type or "application/octet-stream"})

    def _attach_reference(
        self, message: JSONObject, channel: _Channel, guild_id: int | None, referenced_id: int
    ) -> int | None:
        """Turn ``message`` into a reply; returns the referenced author's id if the message is known."""
        reference: JSONObject = {"type": 0, "message_id": str(referenced_id), "channel_id": str(channel.id)}
        if guild_id is not None:
            reference["guild_id"] = str(guild_id)
        referenced = self.messages.get(referenced_id)
        message["type"] = 19
        message["message_reference"] = reference
        # Discord sends null for a referenced message that no longer exists.
        message["referenced_message"] = copy.deepcopy(referenced)
        return int(referenced["author"]["id"]) if referenced is not None else None

    def _gateway_message(self, message: JSONObject, guild_id: int | None) -> JSONObject:
        """REST message objects lack guild_id/member; gateway ones carry both."""
        data = copy.deepcopy(message)
        if guild_id is not None:
            data["guild_id"] = str(guild_id)
            guild = self._guilds[guild_id]
            author_id = int(data["author"]["id"])
            if author_id in guild.nicks:
                data["member"] = self._member_json(guild, author_id, with_user=False)
        return data

    def _store_message(self, message: JSONObject, channel: _Channel) -> None:
        message_id = int(message["id"])
        self.messages[message_id] = message
        channel.last_message_id = message_id

    # -- internals: REST plumbing ---------------------------------------------------------------------------------

    def _add_routes(self, app: web.Application) -> None:
        for path in (_GATEWAY_PATH, f"{_GATEWAY_PATH}/", _RESUME_GATEWAY_PATH, f"{_RESUME_GATEWAY_PATH}/"):
            app.router.add_get(path, self._gateway)
        api = _API_PREFIX
        routes: list[tuple[str, str, Callable[[web.Request], Any]]] = [
            ("GET", "/users/@me", self._get_me),
            ("POST", "/users/@me/channels", self._create_dm),
            ("GET", "/users/{user_id}", self._get_user),
            ("GET", "/guilds/{guild_id}/members/{user_id}", self._get_member),
            ("GET", "/gateway", self._get_gateway),
            ("GET", "/gateway/bot", self._get_gateway_bot),
            ("GET", "/oauth2/applications/@me", self._get_application),
            ("GET", "/channels/{channel_id}", self._get_channel),
            ("GET", "/channels/{channel_id}/messages", self._get_messages),
            ("POST", "/channels/{channel_id}/messages", self._post_message),
            ("GET", "/channels/{channel_id}/messages/{message_id}", self._get_message),
            ("PATCH", "/channels/{channel_id}/messages/{message_id}", self._edit_message),
            ("DELETE", "/channels/{channel_id}/messages/{message_id}", self._delete_message),
            ("PUT", "/channels/{channel_id}/messages/{message_id}/reactions/{emoji}/@me", self._add_reaction),
            ("POST", "/channels/{channel_id}/typing", self._typing),
            ("POST", "/channels/{channel_id}/messages/{message_id}/threads", self._start_thread_from_message),
            ("GET", "/applications/{application_id}/commands", self._get_commands),
            ("PUT", "/applications/{application_id}/commands", self._put_commands),
            ("GET", "/applications/{application_id}/guilds/{guild_id}/commands", self._get_commands),
            ("PUT", "/applications/{application_id}/guilds/{guild_id}/commands", self._put_commands),
            ("POST", "/interactions/{interaction_id}/{token}/callback", self._interaction_callback),
            ("POST", "/webhooks/{application_id}/{token}", self._followup),
            ("PATCH", "/webhooks/{application_id}/{token}/messages/@original", self._edit_original),
        ]
        for method, path, handler in routes:
            app.router.add_route(method, api + path, handler)
        app.router.add_get("/attachments/{attachment_id:\\d+}/{filename}", self._get_attachment)

    @web.middleware
    async def _api_middleware(self, request: web.Request, handler: Callable[[web.Request], Any]) -> web.StreamResponse:
        if not request.path.startswith(_API_PREFIX + "/"):
            response: web.StreamResponse = await handler(request)
            return response
        path = request.path.removeprefix(_API_PREFIX)
        body = await self._read_body(request)
        record = RecordedRequest(
            request.method, path, dict(request.query), body.json, request.headers.get("Authorization")
        )
        self.requests.append(record)
        lost: _Lost | None = None
        try:
            self._check_auth(path, record.authorization)
            failure = self._take_failure(request.method, path)
            if failure is not None:
                return self._failure_response(failure)
            lost = self._take_lost(request.method, path)
            request[_BODY_KEY] = body
            response = await handler(request)
        except _ApiError as exc:
            response = exc.response()
        except web.HTTPException as exc:
            if exc.status == 404:
                self.unhandled_requests.append(record)
            response = _json_response({"message": f"{exc.status}: {exc.reason}", "code": 0}, status=exc.status)
        if lost is None:
            return response
        return self._lose(request, record, lost, response)

    def _take_lost(self, method: str, path: str) -> _Lost | None:
        for index, lost in enumerate(self._lost):
            if lost.method == method and lost.pattern.fullmatch(path):
                return self._lost.pop(index)
        return None

    def _lose(
        self, request: web.Request, record: RecordedRequest, lost: _Lost, response: web.StreamResponse
    ) -> web.StreamResponse:
        lost_body: Any = None
        if isinstance(response, web.Response) and isinstance(response.body, bytes) and response.body:
            with contextlib.suppress(ValueError):
                lost_body = json.loads(response.body)
        self.lost_responses.append(LostResponse(record.method, record.path, lost.status, response.status, lost_body))
        if lost.status is None:
            if request.transport is not None:
                request.transport.abort()
            return web.Response(status=500)
        message = _STATUS_MESSAGES.get(lost.status, f"{lost.status}: Error")
        return _json_response({"message": message, "code": 0}, status=lost.status)

    async def _read_body(self, request: web.Request) -> _Body:
        if not request.body_exists:
            return _Body(None, ())
        if request.content_type.startswith("multipart/"):
            return await self._read_multipart(request)
        try:
            return _Body(await request.json(), ())
        except ValueError:
            return _Body(None, ())

    async def _read_multipart(self, request: web.Request) -> _Body:
        payload: Any = None
        files: list[tuple[str, int]] = []
        reader = await request.multipart()
        async for part in reader:
            if not isinstance(part, BodyPartReader):
                continue
            data = await part.read()
            if part.name == "payload_json":
                payload = json.loads(data)
            elif part.filename:
                files.append((part.filename, len(data)))
        return _Body(payload, tuple(files))

    def _check_auth(self, path: str, authorization: str | None) -> None:
        # Interaction callbacks and webhooks authenticate by the token in the URL, as on Discord.
        if path.startswith(("/interactions/", "/webhooks/")):
            return
        if authorization != f"Bot {self.token}":
            raise _ApiError(401, 0, "401: Unauthorized")

    def _take_failure(self, method: str, path: str) -> _Failure | None:
        for index, failure in enumerate(self._failures):
            if failure.method == method and failure.pattern.fullmatch(path):
                return self._failures.pop(index)
        return None

    def _failure_response(self, failure: _Failure) -> web.Response:
        if failure.status != 429:
            message = failure.message or _STATUS_MESSAGES.get(failure.status, f"{failure.status}: Error")
            code = failure.code if failure.code is not None else _STATUS_CODES.get(failure.status, 0)
            return _json_response({"message": message, "code": code}, status=failure.status)
        body = {
            "message": failure.message or "You are being rate limited.",
            "retry_after": failure.retry_after,
            "global": failure.is_global,
            "code": failure.code or 0,
        }
        headers = {
            "Retry-After": str(math.ceil(failure.retry_after)),
            "X-RateLimit-Limit": "5",
            "X-RateLimit-Remaining": "0",
            "X-RateLimit-Reset": f"{time.time() + failure.retry_after:.3f}",
            "X-RateLimit-Reset-After": f"{failure.retry_after:.3f}",
            "X-RateLimit-Bucket": f"fake-{abs(hash((failure.method, failure.template))):x}",
            "X-RateLimit-Scope": "global" if failure.is_global else "user",
            # discord.py treats a 429 without Via as a Cloudflare ban and raises instead of retrying.
            "Via": "1.1 google",
        }
        if failure.is_global:
            headers["X-RateLimit-Global"] = "true"
        return _json_response(body, status=429, headers=headers)

    @staticmethod
    def _body(request: web.Request) -> _Body:
        return request[_BODY_KEY]

    def _json_object(self, request: web.Request) -> JSONObject:
        body = self._body(request).json
        if not isinstance(body, dict):
            raise _ApiError(400, 50109, "The request body contains invalid JSON.")
        return body

    def _require_channel(self, request: web.Request) -> _Channel:
        channel = self._channels.get(_as_int(request.match_info["channel_id"]) or 0)
        if channel is None:
            raise _ApiError(404, 10003, "Unknown Channel")
        return channel

    def _require_message(self, request: web.Request, channel: _Channel) -> JSONObject:
        message = self.messages.get(_as_int(request.match_info["message_id"]) or 0)
        if message is None or message["channel_id"] != str(channel.id):
            raise _ApiError(404, 10008, "Unknown Message")
        return message

    def _require_known_channel(self, channel_id: int) -> _Channel:
        channel = self._channels.get(channel_id)
        if channel is None:
            raise ValueError(f"fake Discord: channel {channel_id} is not configured (add_text_channel/add_dm_channel)")
        return channel

    def _check_guild(self, channel: _Channel, guild_id: int | None) -> int | None:
        if guild_id is not None and guild_id != channel.guild_id:
            raise ValueError(f"fake Discord: channel {channel.id} is not in guild {guild_id}")
        return channel.guild_id

    # -- REST handlers: users, gateway, application ---------------------------------------------------------------

    async def _get_me(self, request: web.Request) -> web.Response:
        return _json_response(self._bot_user_json())

    async def _get_user(self, request: web.Request) -> web.Response:
        user = self._users.get(_as_int(request.match_info["user_id"]) or 0)
        if user is None:
            raise _ApiError(404, 10013, "Unknown User")
        return _json_response(user.to_json())

    async def _get_member(self, request: web.Request) -> web.Response:
        """Get Guild Member: a bot may ask about any user of a guild it is in, with no privileged intent."""
        guild = self._guilds.get(_as_int(request.match_info["guild_id"]) or 0)
        if guild is None:
            raise _ApiError(404, 10004, "Unknown Guild")
        user_id = _as_int(request.match_info["user_id"]) or 0
        if user_id not in guild.nicks:
            raise _ApiError(404, 10007, "Unknown Member")
        return _json_response(self._member_json(guild, user_id))

    async def _create_dm(self, request: web.Request) -> web.Response:
        recipient = _as_int(self._json_object(request).get("recipient_id"))
        if recipient is None or recipient not in self._users:
            raise _form_error("recipient_id", "USER_NOT_FOUND", "Unknown User")
        for channel in self._channels.values():
            if channel.type == _CHANNEL_DM and channel.recipient_id == recipient:
                return _json_response(self._channel_json(channel))
        channel_id = self._next_snowflake()
        self.add_dm_channel(channel_id, recipient)
        return _json_response(self._channel_json(self._channels[channel_id]))

    async def _get_gateway(self, request: web.Request) -> web.Response:
        return _json_response({"url": self.gateway_url})

    async def _get_gateway_bot(self, request: web.Request) -> web.Response:
        limit = {"total": 1000, "remaining": 999, "reset_after": 86_400_000, "max_concurrency": 1}
        return _json_response({"url": self.gateway_url, "shards": self.shard_count, "session_start_limit": limit})

    async def _get_application(self, request: web.Request) -> web.Response:
        return _json_response(self._application_json())

    # -- REST handlers: channels and messages ---------------------------------------------------------------------

    async def _get_channel(self, request: web.Request) -> web.Response:
        return _json_response(self._channel_json(self._require_channel(request)))

    async def _get_messages(self, request: web.Request) -> web.Response:
        """Newest first, like Discord. ``before``/``after``/``around`` are exclusive; given several, the fake
        honours around, else before, else after. ``after`` pages forward: the ``limit`` messages right after
        it (still newest first, so discord.py takes ``[0]`` as the next ``after``). ``around`` takes
        ``limit // 2`` newer messages and the rest from it and older."""
        channel = self._require_channel(request)
        query = request.query
        limit = _query_int(query, "limit", 50)
        if limit is None or limit < 1:
            raise _form_error("limit", "NUMBER_TYPE_MIN", "int value should be greater than or equal to 1.")
        if limit > 100:
            raise _form_error("limit", "NUMBER_TYPE_MAX", "int value should be less than or equal to 100.")
        around, before, after = (_query_int(query, key) for key in ("around", "before", "after"))
        ids = sorted(
            mid
            for mid, m in self.messages.items()
            if m["channel_id"] == str(channel.id) and not int(m["flags"]) & EPHEMERAL
        )
        if around is not None:
            newer = [mid for mid in ids if mid > around][: limit // 2]
            selected = [mid for mid in ids if mid <= around][len(newer) - limit :] + newer
        elif before is not None:
            selected = [mid for mid in ids if mid < before][-limit:]
        elif after is not None:
            selected = [mid for mid in ids if mid > after][:limit]
        else:
            selected = ids[-limit:]
        return _json_response([self.messages[mid] for mid in reversed(selected)])

    async def _get_message(self, request: web.Request) -> web.Response:
        channel = self._require_channel(request)
        return _json_response(self._require_message(request, channel))

    async def _post_message(self, request: web.Request) -> web.Response:
        channel = self._require_channel(request)
        body = self._json_object(request)
        files = self._body(request).files
        nonce = _nonce(body)
        if nonce is not None and body.get("enforce_nonce"):
            earlier = self._message_for_nonce(nonce)
            if earlier is not None:
                self.deduplicated_sends.append(DeduplicatedSend(int(earlier["id"]), int(earlier["channel_id"]), nonce))
                return _json_response({**earlier, "nonce": nonce})
        _validate_message_body(body, files)
        message = self._bot_message_json(channel, body, files)
        if nonce is not None:
            self._nonces[(self.bot_user_id, nonce)] = (int(message["id"]), self._clock())
        sent = self._record_sent(message, body, files)
        self.posted.put_nowait(sent)
        self._echo("MESSAGE_CREATE", message, channel, nonce=nonce)
        return _json_response(message if nonce is None else {**message, "nonce": nonce})

    def _message_for_nonce(self, nonce: str) -> JSONObject | None:
        """The bot's message created with ``nonce`` within the window; 404 10008 if it was deleted since."""
        key = (self.bot_user_id, nonce)
        entry = self._nonces.get(key)
        if entry is None:
            return None
        message_id, created = entry
        if self._clock() - created > self.nonce_window_seconds:
            del self._nonces[key]
            return None
        message = self.messages.get(message_id)
        if message is None:
            raise _ApiError(404, 10008, "Unknown Message")
        return message

    async def _edit_message(self, request: web.Request) -> web.Response:
        channel = self._require_channel(request)
        message = self._require_message(request, channel)
        if message["author"]["id"] != str(self.bot_user_id):
            raise _ApiError(403, 50005, "Cannot edit a message authored by another user")
        body = self._json_object(request)
        self._apply_edit(message, body)
        self.edits.put_nowait(
            MessageEdit(int(message["id"]), channel.id, body.get("content"), body, body.get("allowed_mentions"))
        )
        self._echo("MESSAGE_UPDATE", message, channel)
        return _json_response(message)

    async def _delete_message(self, request: web.Request) -> web.Response:
        channel = self._require_channel(request)
        message = self._require_message(request, channel)
        del self.messages[int(message["id"])]
        self.deleted_messages.append((channel.id, int(message["id"])))
        if self._sessions_for(channel.guild_id):
            data: JSONObject = {"id": message["id"], "channel_id": str(channel.id)}
            if channel.guild_id is not None:
                data["guild_id"] = str(channel.guild_id)
            self._emit(Dispatch("MESSAGE_DELETE", data, channel.guild_id))
        return web.Response(status=204)

    async def _add_reaction(self, request: web.Request) -> web.Response:
        channel = self._require_channel(request)
        message = self._require_message(request, channel)
        self.reactions.append((channel.id, int(message["id"]), request.match_info["emoji"]))
        return web.Response(status=204)

    async def _typing(self, request: web.Request) -> web.Response:
        channel = self._require_channel(request)
        self.typing_calls.append(channel.id)
        self.typing.put_nowait(channel.id)
        return web.Response(status=204)

    async def _start_thread_from_message(self, request: web.Request) -> web.Response:
        channel = self._require_channel(request)
        message = self._require_message(request, channel)
        if channel.type != _CHANNEL_GUILD_TEXT:
            raise _ApiError(400, 50024, "Cannot execute action on this channel type")
        name = str(self._json_object(request).get("name") or "")
        if not 1 <= len(name) <= MAX_THREAD_NAME_LENGTH:
            raise _form_error(
                "name", "BASE_TYPE_BAD_LENGTH", f"Must be between 1 and {MAX_THREAD_NAME_LENGTH} in length."
            )
        thread_id = int(message["id"])  # Discord gives a thread started from a message that message's ID
        if thread_id in self._channels:
            raise _ApiError(400, 160004, "A thread has already been created for this message")
        thread = _Channel(
            thread_id, _CHANNEL_PUBLIC_THREAD, name, channel.guild_id, parent_id=channel.id, owner_id=self.bot_user_id
        )
        self._add_guild_channel(thread, "THREAD_CREATE")
        self.created_threads.append(thread_id)
        self._notify()
        return _json_response({**self._channel_json(thread), "guild_id": str(channel.guild_id)}, status=201)

    def _bot_message_json(self, channel: _Channel, body: JSONObject, files: Sequence[tuple[str, int]]) -> JSONObject:
        message = self._base_message_json(channel, self._bot, str(body.get("content") or ""))
        replied_author = None
        if isinstance(body.get("message_reference"), dict):
            replied_author = self._bot_reply_reference(message, channel, body["message_reference"])
        pinged, everyone = _resolve_pings(message["content"], body.get("allowed_mentions"), replied_author)
        message["mentions"] = [self._mention_json(channel.guild_id, user_id) for user_id in pinged]
        message["mention_everyone"] = everyone
        message["embeds"] = list(body.get("embeds") or [])
        message["components"] = list(body.get("components") or [])
        message["attachments"] = [self._attachment_json(name, size) for name, size in files]
        message["flags"] = int(body.get("flags") or 0)
        self._store_message(message, channel)
        return message

    def _bot_reply_reference(self, message: JSONObject, channel: _Channel, reference: JSONObject) -> int | None:
        referenced_id = _as_int(reference.get("message_id"))
        known = referenced_id is not None and referenced_id in self.messages
        if not known and reference.get("fail_if_not_exists", True):
            raise _form_error("message_reference", "MESSAGE_REFERENCE_UNKNOWN_MESSAGE", "Unknown message")
        if not known or referenced_id is None:
            return None
        return self._attach_reference(message, channel, channel.guild_id, referenced_id)

    def _record_sent(
        self,
        message: JSONObject,
        body: JSONObject,
        files: Sequence[tuple[str, int]],
        interaction_token: str | None = None,
    ) -> SentMessage:
        sent = SentMessage(
            id=int(message["id"]),
            channel_id=int(message["channel_id"]),
            content=message["content"],
            payload=body,
            message_reference=body.get("message_reference"),
            allowed_mentions=body.get("allowed_mentions"),
            flags=int(message["flags"]),
            pinged_user_ids=tuple(int(m["id"]) for m in message["mentions"]),
            attachments=tuple(name for name, _ in files),
            interaction_token=interaction_token,
        )
        self.sent_messages.append(sent)
        return sent

    def _apply_edit(self, message: JSONObject, body: JSONObject) -> None:
        if "content" in body:
            content = body["content"] or ""
            if len(content) > MAX_CONTENT_LENGTH:
                raise _content_too_long()
            message["content"] = content
        for key in ("embeds", "components", "flags"):
            if key in body and body[key] is not None:
                message[key] = body[key]
        message["edited_timestamp"] = _iso()

    def _echo(self, event: str, message: JSONObject, channel: _Channel, *, nonce: str | None = None) -> None:
        """Discord tells the bot's own gateway about its own messages and edits too."""
        if self.echo_bot_messages and self._sessions_for(channel.guild_id) and not message["flags"] & EPHEMERAL:
            data = self._gateway_message(message, channel.guild_id)
            if nonce is not None:
                data["nonce"] = nonce
            self._emit(Dispatch(event, data, channel.guild_id))

    # -- REST handlers: application commands and interactions -----------------------------------------------------

    def _check_application(self, request: web.Request) -> None:
        if _as_int(request.match_info["application_id"]) != self.application_id:
            raise _ApiError(403, 50001, "Missing Access")

    def _command_store(self, request: web.Request) -> tuple[int | None, dict[str, JSONObject]]:
        self._check_application(request)
        guild_id = _as_int(request.match_info.get("guild_id"))
        if guild_id is None:
            return None, self.global_commands
        if guild_id not in self._guilds:
            raise _ApiError(403, 50001, "Missing Access")
        return guild_id, self.guild_commands.setdefault(guild_id, {})

    async def _get_commands(self, request: web.Request) -> web.Response:
        _, store = self._command_store(request)
        return _json_response(list(store.values()))

    async def _put_commands(self, request: web.Request) -> web.Response:
        guild_id, store = self._command_store(request)
        body = self._body(request).json
        if not isinstance(body, list):
            raise _ApiError(400, 50035, "Invalid Form Body")
        for index, command in enumerate(body):
            _validate_command(index, command)
        old = {(c["name"], c["type"]): c for c in store.values()}
        new = [self._stored_command(command, guild_id, old) for command in body]
        store.clear()
        store.update((c["name"], c) for c in new)
        self.command_syncs.put_nowait(CommandSync(guild_id, tuple(new)))
        return _json_response(new)

    def _stored_command(
        self, command: JSONObject, guild_id: int | None, old: Mapping[tuple[str, int], JSONObject]
    ) -> JSONObject:
        kind = int(command.get("type") or 1)
        previous = old.get((command["name"], kind))
        # A bulk overwrite keeps the id of a command whose name and type are unchanged, like Discord.
        stored: JSONObject = {
            "description": "",
            "options": [],
            "default_member_permissions": None,
            "nsfw": False,
            **command,
            "id": previous["id"] if previous else str(self._next_snowflake()),
            "application_id": str(self.application_id),
            "type": kind,
            "version": str(self._next_snowflake()),
        }
        if guild_id is not None:
            stored["guild_id"] = str(guild_id)
        return stored

    def _find_command(self, name: str, guild_id: int | None) -> JSONObject:
        scoped = self.guild_commands.get(guild_id, {}) if guild_id is not None else {}
        command = scoped.get(name) or self.global_commands.get(name)
        if command is None:
            raise ValueError(f"fake Discord: /{name} is not registered; sync the command tree first")
        return command

    @staticmethod
    def _command_options(command: JSONObject, values: Mapping[str, str | int | float | bool]) -> list[JSONObject]:
        declared = {option["name"]: option for option in command.get("options") or []}
        unknown = set(values) - set(declared)
        if unknown:
            raise ValueError(f"fake Discord: /{command['name']} has no options {sorted(unknown)}")
        return [{"name": name, "type": declared[name]["type"], "value": value} for name, value in values.items()]

    def _interaction_json(
        self, interaction: _Interaction, command: JSONObject, options: list[JSONObject], user: _User
    ) -> JSONObject:
        data: JSONObject = {"id": command["id"], "name": command["name"], "type": command["type"]}
        if options:
            data["options"] = options
        if "guild_id" in command:
            data["guild_id"] = command["guild_id"]
        channel = self._channels[interaction.channel_id]
        payload: JSONObject = {
            "id": str(interaction.id),
            "application_id": str(self.application_id),
            "type": 2,
            "token": interaction.token,
            "version": 1,
            "data": data,
            "channel_id": str(channel.id),
            "channel": self._channel_json(channel),
            "locale": "en-US",
            "app_permissions": str(_EVERYONE_PERMISSIONS),
            "entitlements": [],
            "attachment_size_limit": 10 * 1024 * 1024,
        }
        guild_id = interaction.guild_id
        if guild_id is None:
            payload.update(user=user.to_json(), context=1, authorizing_integration_owners={"1": str(user.id)})
            return payload
        member = {**self._member_json(self._guilds[guild_id], user.id), "permissions": str(_EVERYONE_PERMISSIONS)}
        payload.update(
            guild_id=str(guild_id),
            guild={"id": str(guild_id), "locale": "en-US", "features": []},
            guild_locale="en-US",
            member=member,
            context=0,
            authorizing_integration_owners={"0": str(guild_id)},
        )
        return payload

    def _require_interaction(self, interaction_id: int | None, token: str) -> _Interaction:
        interaction = self._interactions.get(interaction_id or 0)
        if interaction is None or interaction.token != token:
            raise _ApiError(404, 10062, "Unknown interaction")
        return interaction

    def _interaction_by_token(self, request: web.Request) -> _Interaction:
        self._check_application(request)
        token = request.match_info["token"]
        for interaction in self._interactions.values():
            if interaction.token == token and interaction.responded:
                return interaction
        raise _ApiError(404, 10015, "Unknown Webhook")

    async def _interaction_callback(self, request: web.Request) -> web.Response:
        interaction = self._require_interaction(
            _as_int(request.match_info["interaction_id"]), request.match_info["token"]
        )
        if interaction.responded:
            raise _ApiError(400, 40060, "Interaction has already been acknowledged.")
        body = self._json_object(request)
        response_type = int(body.get("type") or 0)
        data = body.get("data")
        if not isinstance(data, dict):
            data = {}
        if len(str(data.get("content") or "")) > MAX_CONTENT_LENGTH:
            raise _content_too_long()
        interaction.responded = True
        self.interaction_responses.put_nowait(
            InteractionResponse(interaction.id, interaction.token, response_type, data)
        )
        message = self._original_response(interaction, response_type, data)
        if response_type == 7 and interaction.message_id in self.messages:  # UPDATE_MESSAGE: the clicked message
            clicked = self.messages[interaction.message_id]
            self._apply_edit(clicked, data)
            self.edits.put_nowait(
                MessageEdit(int(clicked["id"]), interaction.channel_id, data.get("content"), data,
                            data.get("allowed_mentions"), interaction.token)
            )  # fmt: skip
            self._echo("MESSAGE_UPDATE", clicked, self._channels[interaction.channel_id])
            message = clicked
        if not _truthy_query(request.query.get("with_response")):
            return web.Response(status=204)
        return _json_response(self._callback_json(interaction, response_type, message))

    def _original_response(self, interaction: _Interaction, response_type: int, data: JSONObject) -> JSONObject | None:
        # Types 4 (message) and 5 (deferred, "thinking...") create the original response message.
        if response_type not in (4, 5):
            return None
        channel = self._channels[interaction.channel_id]
        flags = int(data.get("flags") or 0) | (_LOADING if response_type == 5 else 0)
        body = {**data, "flags": flags}
        message = self._bot_message_json(channel, body, ())
        message["type"] = 20  # CHAT_INPUT_COMMAND
        message["webhook_id"] = str(self.application_id)
        message["application_id"] = str(self.application_id)
        interaction.original_message_id = int(message["id"])
        if response_type == 4:
            self._echo("MESSAGE_CREATE", message, channel)
        return message

    def _callback_json(self, interaction: _Interaction, response_type: int, message: JSONObject | None) -> JSONObject:
        summary: JSONObject = {"id": str(interaction.id), "type": 2}
        resource: JSONObject = {"type": response_type}
        if message is not None:
            summary.update(
                response_message_id=message["id"],
                response_message_loading=response_type == 5,
                response_message_ephemeral=bool(message["flags"] & EPHEMERAL),
            )
            resource["message"] = message
        return {"interaction": summary, "resource": resource}

    async def _followup(self, request: web.Request) -> web.Response:
        interaction = self._interaction_by_token(request)
        body = self._json_object(request)
        files = self._body(request).files
        _validate_message_body(body, files)
        channel = self._channels[interaction.channel_id]
        message = self._bot_message_json(channel, body, files)
        message["webhook_id"] = str(self.application_id)
        self.followups.put_nowait(self._record_sent(message, body, files, interaction.token))
        self._echo("MESSAGE_CREATE", message, channel)
        if not _truthy_query(request.query.get("wait")):
            return web.Response(status=204)
        return _json_response(message)

    async def _edit_original(self, request: web.Request) -> web.Response:
        interaction = self._interaction_by_token(request)
        message = self.messages.get(interaction.original_message_id or 0)
        if message is None:
            raise _ApiError(404, 10008, "Unknown Message")
        body = self._json_object(request)
        self._apply_edit(message, body)
        message["flags"] = int(message["flags"]) & ~_LOADING
        self.edits.put_nowait(
            MessageEdit(
                int(message["id"]),
                interaction.channel_id,
                body.get("content"),
                body,
                body.get("allowed_mentions"),
                interaction.token,
            )
        )
        self._echo("MESSAGE_UPDATE", message, self._channels[interaction.channel_id])
        return _json_response(message)


# ---------------------------------------------------------------------------------------------------------------------
# Validation and mention resolution


_CLOSE_REASONS: Final = {
    4004: "Authentication failed.",
    4010: "Invalid shard.",
    4011: "Sharding required.",
    4013: "Invalid intent(s).",
    4014: "Disallowed intent(s).",
}
_STATUS_MESSAGES: Final = {
    403: "Missing Permissions",
    404: "404: Not Found",
    500: "500: Internal Server Error",
    502: "502: Bad Gateway",
    503: "503: Service Unavailable",
}
_STATUS_CODES: Final = {403: 50013}


def _content_too_long() -> _ApiError:
    return _form_error("content", "BASE_TYPE_MAX_LENGTH", f"Must be {MAX_CONTENT_LENGTH} or fewer in length.")


def _query_int(query: Mapping[str, str], name: str, default: int | None = None) -> int | None:
    if name not in query:
        return default
    value = _as_int(query[name])
    if value is None:
        raise _form_error(name, "NUMBER_TYPE_COERCE", f'Value "{query[name]}" is not int.')
    return value


def _nonce(body: JSONObject) -> str | None:
    """The create's nonce as a string (integers and strings are the same nonce), checked like Discord's."""
    nonce = body.get("nonce")
    if nonce is None:
        return None
    if isinstance(nonce, bool) or not isinstance(nonce, str | int):
        raise _form_error("nonce", "BASE_TYPE_STRING", "Must be an integer or a string.")
    if len(str(nonce)) > MAX_NONCE_LENGTH:
        raise _form_error("nonce", "BASE_TYPE_MAX_LENGTH", f"Must be {MAX_NONCE_LENGTH} or fewer in length.")
    return str(nonce)


def _validate_message_body(body: JSONObject, files: Sequence[tuple[str, int]]) -> None:
    content = body.get("content")
    if content is not None and not isinstance(content, str):
        raise _form_error("content", "BASE_TYPE_STRING", "Must be a string.")
    if content is not None and len(content) > MAX_CONTENT_LENGTH:
        raise _content_too_long()
    if not (
        content or body.get("embeds") or files or body.get("sticker_ids") or body.get("components") or body.get("poll")
    ):
        raise _ApiError(400, 50006, "Cannot send an empty message")


def _validate_command(index: int, command: Any) -> None:
    if not isinstance(command, dict):
        raise _form_error(str(index), "DICT_TYPE_CONVERT", "Only dictionaries may be used in a DictType")
    name = command.get("name")
    kind = int(command.get("type") or 1)
    if not isinstance(name, str) or not _COMMAND_NAME.fullmatch(name) or (kind == 1 and name != name.lower()):
        raise _form_error(f"{index}.name", "APPLICATION_COMMAND_INVALID_NAME", "Command name is invalid")
    description = command.get("description") or ""
    if kind == 1 and not 1 <= len(description) <= 100:
        raise _form_error(f"{index}.description", "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 100 in length.")


def _resolve_pings(content: str, allowed: Any, replied_author: int | None) -> tuple[list[int], bool]:
    """Who Discord would actually ping: users from ``<@id>`` in content filtered by allowed_mentions, plus the
    replied-to author when pinging it is allowed. Returns (user ids, mention_everyone)."""
    in_content = [int(match) for match in _USER_MENTION.findall(content)]
    everyone = "@everyone" in content or "@here" in content
    if not isinstance(allowed, dict):
        # No allowed_mentions: everything in the content pings, and so does a reply.
        users, replied, everyone_ok = in_content, True, True
    else:
        parse = allowed.get("parse") or []
        explicit = {int(u) for u in allowed.get("users") or []}
        users = in_content if "users" in parse else [u for u in in_content if u in explicit]
        replied = bool(allowed.get("replied_user", False))
        everyone_ok = "everyone" in parse
    if replied and replied_author is not None:
        users = [*users, replied_author]
    return list(dict.fromkeys(users)), everyone and everyone_ok


# ---------------------------------------------------------------------------------------------------------------------
# Pointing discord.py at the fake


@contextlib.contextmanager
def point_discord_at(fake: FakeDiscord) -> Iterator[None]:
    """Point discord.py's REST base and default gateway at ``fake`` for the duration of the block.

    Both are process-wide class attributes (``Route.BASE`` is read whenever a Route is built, webhook and
    interaction routes included; ``DEFAULT_GATEWAY`` is dialled by plain ``Client`` and after INVALID_SESSION),
    so only one fake can be targeted at a time.
    """
    old_base, old_gateway = Route.BASE, DiscordWebSocket.DEFAULT_GATEWAY
    Route.BASE = fake.api_url
    DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(fake.gateway_url)
    try:
        yield
    finally:
        Route.BASE = old_base
        DiscordWebSocket.DEFAULT_GATEWAY = old_gateway
