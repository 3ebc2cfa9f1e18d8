"""Where the bot answers on Slack and who may DM it: SLACK_CHANNEL_IDS and SLACK_DM_POLICY.

With SLACK_CHANNEL_IDS set, channel messages (mentions, thread follow-ups, slash commands) are answered
in those channels only. Direct messages follow SLACK_DM_POLICY: `open` (anyone in the workspace),
`off`, or `members`: members of a listed channel (the default when the list is set, so the list limits
DMs too). Members come from conversations.members (the channels:read / groups:read scopes), fetched
for all listed channels at once and remembered for `ttl_seconds`; concurrent DMs share one fetch, and
a failed fetch refuses the DM without remembering, so the next one asks again.
"""

from __future__ import annotations

__all__ = ["SlackAccess", "parse_channel_ids"]

import asyncio
import logging
import time
from collections.abc import Callable, Collection

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bots.slack.writer import TRANSPORT_ERRORS, error_code
from core.errors import ConfigError
from core.settings import DmPolicy

log = logging.getLogger(__name__)

_MEMBERS_PAGE = 1000


def parse_channel_ids(value: str | None) -> frozenset[str]:
    """SLACK_CHANNEL_IDS as channel IDs ("C01, G02 C03").

    Raises:
        ConfigError: an entry is not a Slack channel ID.
    """
    ids = frozenset((value or "").replace(",", " ").split())
    bad = sorted(i for i in ids if not (i[:1] in "CGD" and i[1:].isalnum() and i.upper() == i))
    if bad:
        example = "like C0123ABCD: the channel's details, About"
        raise ConfigError(f"SLACK_CHANNEL_IDS: {bad[0]!r} is not a channel ID ({example})")
    return ids


class SlackAccess:
    """The allow-list and the DM policy, shared by every listener of one adapter."""

    def __init__(
        self,
        client: AsyncWebClient,
        *,
        channel_ids: Collection[str] = (),
        dm_policy: DmPolicy | None = None,
        ttl_seconds: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client
        self._channels = frozenset(channel_ids)
        self.dm_policy: DmPolicy = dm_policy or ("members" if self._channels else "open")
        self._ttl = ttl_seconds
        self._clock = clock
        self._members: frozenset[str] = frozenset()
        self._fetched_at = float("-inf")
        self._fetching: asyncio.Task[frozenset[str] | None] | None = None

    async def allows(self, *, channel: str, user: str, is_dm: bool) -> bool:
        if not is_dm:
            return not self._channels or channel in self._channels
        if self.dm_policy == "members":
            return user in await self._listed_members()
        return self.dm_policy == "open"

    async def _listed_members(self) -> frozenset[str]:
        if self._clock() - self._fetched_at < self._ttl:
            return self._members
        if self._fetching is None:
            self._fetching = asyncio.create_task(self._fetch(), name="slack-channel-members")
        fetched = await asyncio.shield(self._fetching)
        return fetched if fetched is not None else frozenset()

    async def _fetch(self) -> frozenset[str] | None:
        try:
            members: set[str] = set()
            for channel in sorted(self._channels):
                cursor = ""
                while True:
                    page = await self._client.conversations_members(channel=channel, limit=_MEMBERS_PAGE, cursor=cursor)
                    members.update(str(user) for user in page.get("members") or [])
                    cursor = str((page.get("response_metadata") or {}).get("next_cursor") or "")
                    if not cursor:
                        break
        except SlackApiError as exc:
            log.warning("slack channel members not read, DMs refused for now: %s", error_code(exc),
                        extra={"platform": "slack", "slack_error": error_code(exc)})  # fmt: skip
            return None
        except TRANSPORT_ERRORS as exc:
            log.warning("slack channel members not read, DMs refused for now: %s", type(exc).__name__,
                        extra={"platform": "slack"})  # fmt: skip
            return None
        finally:
            self._fetching = None
        self._members, self._fetched_at = frozenset(members), self._clock()
        return self._members
