"""The Slack adapter: slack-bolt's AsyncApp on the shared gateway, in Socket Mode or signed HTTP mode.

Socket Mode when SLACK_APP_TOKEN (xapp-...) is set; otherwise HTTP on HOST:PORT at `/slack/events`,
under http_server's limits on idle, slow and too many connections, where bolt checks every request's
signature against SLACK_SIGNING_SECRET before anything else runs (a forged, stale or unsigned request
gets 401). Every Web API call, Socket Mode's
`apps.connections.open` included, goes through one `AsyncWebClient` on SLACK_API_URL.

Credentials: missing ones raise `ConfigError` from the constructor (which does no I/O), rejected
ones from `run()`, before anything is served; each names the variable to set.
"""

from __future__ import annotations

__all__ = ["EVENTS_PATH", "SlackAdapter", "api_base_url"]

import asyncio
import logging
from typing import Any, Literal

import aiohttp
from pydantic import SecretStr
from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler
from slack_bolt.app.async_app import AsyncApp
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncRateLimitErrorRetryHandler,
    AsyncServerErrorRetryHandler,
)
from slack_sdk.http_retry.request import HttpRequest
from slack_sdk.http_retry.state import RetryState
from slack_sdk.web.async_client import AsyncWebClient

from bots.slack.access import SlackAccess, parse_channel_ids
from bots.slack.approvals import ApprovalClicks
from bots.slack.assistant import AssistantThreads
from bots.slack.files import SlackFiles
from bots.slack.http_server import HttpLimits, LimitedHttpServer
from bots.slack.incoming import PLATFORM
from bots.slack.listeners import SlackListeners, SlackWriters
from bots.slack.writer import error_code
from core.delivery import Delivery, OutcomeHook
from core.errors import ConfigError
from core.gateway import Gateway
from core.settings import Settings

log = logging.getLogger(__name__)

EVENTS_PATH = "/slack/events"
_DEFAULT_API_URL = "https://slack.com/api/"
# Errors that mean the token itself is wrong, not that Slack is having a bad minute.
_REJECTED = frozenset(
    {
        "not_authed",
        "invalid_auth",
        "account_inactive",
        "token_revoked",
        "token_expired",
        "not_allowed_token_type",
        "invalid_token_type",
        "no_permission",
        "missing_scope",
        "team_access_not_granted",
    }
)


def api_base_url(url: str | None) -> str:
    """SLACK_API_URL with its trailing slash: slack_sdk joins method names with urljoin, which drops
    the last path segment ("api") of a base URL without one."""
    return (url or _DEFAULT_API_URL).rstrip("/") + "/"


class _RetryUnlessPost(AsyncServerErrorRetryHandler):
    """Slack's 5xx retry for every call but a post: a 5xx may come after Slack stored the message, so
    only the writer, which can look for it first, decides whether to post again."""

    _POSTS = ("chat.postMessage", "chat.startStream")

    async def _can_retry_async(self, *, state: RetryState, request: HttpRequest, **kwargs: Any) -> bool:
        if request.url.rstrip("/").endswith(self._POSTS):
            return False
        return await super()._can_retry_async(state=state, request=request, **kwargs)


class _ConnectionRetryUnlessPost(AsyncConnectionErrorRetryHandler):
    """The same for a connection lost mid-call."""

    async def _can_retry_async(self, *, state: RetryState, request: HttpRequest, **kwargs: Any) -> bool:
        if request.url.rstrip("/").endswith(_RetryUnlessPost._POSTS):
            return False
        return await super()._can_retry_async(state=state, request=request, **kwargs)


def _secret(value: SecretStr | None) -> str:
    return value.get_secret_value().strip() if value is not None else ""


class SlackAdapter:
    """One Slack app connection; `SlackAdapter(settings=..., gateway=...)`, then `await run()`.

    Args:
        settings: SLACK_* settings, PORT (HTTP mode) and THREAD_TTL_SECONDS (thread memory).
        gateway: the process's shared gateway; its backend remembers the threads the bot is in.
        delivery: the process's delivery runner: messages go into its inbox, replies come out of it.
        host: the interface HTTP mode listens on; None: the HOST setting.
        http_limits: keep-alive, header and body timeouts and the connection cap of HTTP mode.
        on_outcome: called with each event that is ignored here (tests wait on it; the delivery
            runner reports the rest).

    Raises:
        ConfigError: SLACK_BOT_TOKEN is missing or no xoxb- token, SLACK_APP_TOKEN is no xapp-
            token, HTTP mode lacks SLACK_SIGNING_SECRET, or SLACK_CHANNEL_IDS holds no channel ID.
    """

    name = PLATFORM

    def __init__(
        self,
        *,
        settings: Settings,
        gateway: Gateway,
        delivery: Delivery,
        host: str | None = None,
        http_limits: HttpLimits | None = None,
        on_outcome: OutcomeHook | None = None,
    ) -> None:
        bot_token = _secret(settings.slack_bot_token)
        self._app_token = _secret(settings.slack_app_token)
        signing_secret = _secret(settings.slack_signing_secret)
        if not bot_token.startswith("xoxb-"):
            what = "is not set" if not bot_token else "is not a bot token"
            raise ConfigError(f"SLACK_BOT_TOKEN {what}: set it to the app's xoxb- Bot User OAuth Token")
        if self._app_token and not self._app_token.startswith("xapp-"):
            raise ConfigError(
                "SLACK_APP_TOKEN is not an app-level token: set an xapp- token, or unset it for HTTP mode"
            )
        if not self._app_token and not signing_secret:
            raise ConfigError(
                "SLACK_SIGNING_SECRET is not set: HTTP mode needs it to verify Slack's requests "
                "(or set SLACK_APP_TOKEN for Socket Mode)"
            )
        self.mode: Literal["socket", "http"] = "socket" if self._app_token else "http"
        self._host = host or settings.host
        self._http_limits = http_limits or HttpLimits()
        self._port = settings.port
        self._delivery = delivery
        base_url = api_base_url(settings.slack_api_url)
        self._bot_token, self._base_url = bot_token, base_url
        self.client = AsyncWebClient(
            token=bot_token,
            base_url=base_url,
            retry_handlers=[
                _ConnectionRetryUnlessPost(),
                AsyncRateLimitErrorRetryHandler(max_retry_count=2),  # a 429 did nothing: always safe to retry
                _RetryUnlessPost(max_retry_count=2),
            ],
        )
        # Progress updates pause on a rate limit instead of waiting it out (replies.py says why).
        self._progress_client = progress_client = AsyncWebClient(
            token=bot_token, base_url=base_url, retry_handlers=[_ConnectionRetryUnlessPost()]
        )
        # Given the client and the secret, bolt uses neither SLACK_BOT_TOKEN nor SLACK_SIGNING_SECRET
        # from the environment (it only warns when the first is set). process_before_response: bolt
        # acknowledges an event only once its listener stored it (listeners.py).
        self.app = AsyncApp(
            name="chat-gateway", client=self.client, signing_secret=signing_secret, process_before_response=True
        )
        self._writers = SlackWriters(
            client=self.client, progress_client=progress_client, flags=gateway.backend,
            thread_ttl_seconds=settings.store_ttl_seconds, allow_user_mentions=settings.slack_allow_user_mentions,
        )  # fmt: skip
        access = SlackAccess(
            self.client, channel_ids=parse_channel_ids(settings.slack_channel_ids), dm_policy=settings.slack_dm_policy
        )
        SlackListeners(
            delivery=delivery, writers=self._writers, flags=gateway.backend, allow_bots=settings.slack_allow_bots,
            access=access, on_outcome=on_outcome, approvals=ApprovalClicks(gateway.approvals, self.client),
            assistant=AssistantThreads(client=self.client, prompts=settings.suggested_prompts, access=access),
        ).register(self.app)  # fmt: skip
        self._socket: AsyncSocketModeHandler | None = None
        self._http: LimitedHttpServer | None = None
        self.port: int | None = None  # HTTP mode: the port actually bound (PORT may be 0)
        self.ready = asyncio.Event()  # set once events can arrive

    @property
    def connected(self) -> bool:
        """True while the Socket Mode session is open, or the HTTP site listens."""
        if self._socket is not None:
            session = self._socket.client.current_session
            return not self._socket.client.closed and session is not None and not session.closed
        return self._http is not None

    @property
    def addresses(self) -> list[tuple[str, int]]:
        """HTTP mode: the (host, port) pairs it listens on."""
        return self._http.addresses if self._http is not None else []

    @property
    def open_connections(self) -> int:
        """HTTP mode: connections open right now."""
        return self._http.open_connections if self._http is not None else 0

    async def run(self) -> None:
        """Check the tokens, serve events until cancelled, then let turns in flight finish.

        Raises:
            ConfigError: Slack rejected SLACK_BOT_TOKEN or SLACK_APP_TOKEN, or PORT cannot be bound.
        """
        # One keep-alive session for every Web API call: slack_sdk otherwise opens a connection (and in
        # production a TLS handshake) per call. It needs the running loop, so it is made here.
        async with aiohttp.ClientSession() as session:
            self.client.session = self._progress_client.session = session
            await self._check_bot_token()
            files = SlackFiles(session, self.client, token=self._bot_token, api_url=self._base_url)
            self._delivery.serve(PLATFORM, self._writers, files=files)
            try:
                if self.mode == "socket":
                    await self._serve_socket_mode()
                else:
                    await self._serve_http()
            finally:
                self.ready.clear()
                self.client.session = self._progress_client.session = None

    async def _check_bot_token(self) -> None:
        try:
            identity = await self.client.auth_test()
        except SlackApiError as exc:
            if error_code(exc) not in _REJECTED:
                raise
            raise ConfigError(
                f"SLACK_BOT_TOKEN was rejected by Slack ({error_code(exc)}): set the app's current xoxb- token"
            ) from None
        log.info(
            "slack bot identified",
            extra={"platform": PLATFORM, "team_id": identity.get("team_id"), "bot_user_id": identity.get("user_id")},
        )

    async def _serve_socket_mode(self) -> None:
        # Built here, not in __init__: the Socket Mode client needs the running loop.
        handler = AsyncSocketModeHandler(self.app, app_token=self._app_token, web_client=self.client)
        self._socket = handler
        try:
            try:
                # The first URL is asked for here so that a rejected app token stops start-up
                # instead of sending the client into its endless reconnect loop.
                handler.client.wss_uri = await handler.client.issue_new_wss_url()
            except SlackApiError as exc:
                if error_code(exc) not in _REJECTED:
                    raise
                raise ConfigError(
                    f"SLACK_APP_TOKEN was rejected by Slack ({error_code(exc)}): set an xapp- token "
                    "with the connections:write scope"
                ) from None
            await handler.connect_async()  # type: ignore[no-untyped-call]  # bolt leaves it unannotated
            self._serving()
            await asyncio.Event().wait()  # serve until cancelled
        finally:
            self._socket = None
            await handler.close_async()  # type: ignore[no-untyped-call]  # bolt leaves it unannotated

    async def _serve_http(self) -> None:
        web_app = self.app.web_app(path=EVENTS_PATH, port=self._port)
        server = LimitedHttpServer(web_app, host=self._host, port=self._port, limits=self._http_limits)
        try:
            await server.start()
        except OSError as exc:
            raise ConfigError(f"PORT {self._port} cannot be bound on HOST {self._host} ({exc.strerror})") from None
        try:
            self._http = server
            self.port = server.addresses[0][1]
            self._serving()
            await asyncio.Event().wait()  # serve until cancelled
        finally:
            self._http = None
            await server.stop()

    def _serving(self) -> None:
        self.ready.set()
        log.info("slack connected", extra={"platform": PLATFORM, "mode": self.mode, "port": self.port})
