"""Who may use the bot by direct message: DISCORD_DM_POLICY.

`open`: anyone who can DM the bot. `off`: nobody. `members`: members of a guild in DISCORD_GUILD_IDS
(the default when that list is set: the allow-lists then limit DMs too, not only guild traffic).
Membership is asked of Discord's REST API (Get Guild Member needs no privileged intent; without the
members intent discord.py caches no members) and remembered for `ttl_seconds`, yes or no, so a DM
costs at most one lookup per allowed guild every few minutes. Concurrent messages of one user share one
lookup and go on in the order they came, so the lookup never reorders a conversation's messages.
"""

from __future__ import annotations

__all__ = ["DmPolicy", "GuildMembers", "dm_policy"]

import asyncio
import logging
import time
from collections.abc import Callable, Collection

import aiohttp
import discord

from core.settings import DmPolicy

log = logging.getLogger(__name__)

_MAX_REMEMBERED = 10_000


def dm_policy(setting: DmPolicy | None, guild_ids: Collection[int]) -> DmPolicy:
    """DISCORD_DM_POLICY, or its default: `members` when a guild allow-list is set, else `open`."""
    return setting or ("members" if guild_ids else "open")


class GuildMembers:
    """Whether a user is a member of one of `guild_ids`, as far as the bot can see (guilds it is in)."""

    def __init__(
        self,
        client: discord.Client,
        guild_ids: Collection[int],
        *,
        ttl_seconds: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client
        self._guild_ids = sorted(guild_ids)
        self._ttl = ttl_seconds
        self._clock = clock
        self._known: dict[int, tuple[bool, float]] = {}  # user -> (member?, when asked)
        self._asking: dict[int, asyncio.Task[bool]] = {}

    async def is_member(self, user_id: int) -> bool:
        known = self._known.get(user_id)
        if known is not None and self._clock() - known[1] < self._ttl:
            return known[0]
        task = self._asking.get(user_id)
        if task is None:
            task = self._asking[user_id] = asyncio.create_task(self._ask(user_id), name="discord-member-lookup")
            task.add_done_callback(lambda _: self._asking.pop(user_id, None))
        return await asyncio.shield(task)

    async def _ask(self, user_id: int) -> bool:
        try:
            member = await self._lookup(user_id)
        except (discord.HTTPException, aiohttp.ClientError, TimeoutError) as exc:
            # Not remembered: the next message asks again. Refusing meanwhile is the safe side.
            log.warning("discord member lookup failed, DM refused for now: %s", type(exc).__name__)
            return False
        if len(self._known) >= _MAX_REMEMBERED:
            self._known.pop(next(iter(self._known)))
        self._known[user_id] = (member, self._clock())
        return member

    async def _lookup(self, user_id: int) -> bool:
        for guild_id in self._guild_ids:
            guild = self._client.get_guild(guild_id)
            if guild is None:  # the bot is not in it: it cannot tell, and nobody is a member there for it
                continue
            if guild.get_member(user_id) is not None:
                return True
            try:
                await guild.fetch_member(user_id)
            except discord.NotFound:
                continue
            return True
        return False
