"""The admin commands typed in a chat by users in ADMINS: `admin reset <user>`, `admin pause`, `admin resume`.

Anyone else who types them gets the normal answer path: the words go to the model like any message, so
nothing hints that the commands exist. A pause is a flag per channel in the store (core.store.keys
`paused_flag`, no TTL: it lasts until `admin resume`, across restarts and for every process); while
it is set the gateway answers nothing there but an admin's commands.

Every turn asks whether its channel is paused, so the answer is remembered per channel for
PAUSE_CHECK_SECONDS: a Redis round trip before each answer would be one more on the way to its first
post. The process that runs `admin pause` or `admin resume` knows at once; the others within that time.
With ADMINS empty nobody can pause, and nothing is asked.
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass

from core.errors import GatewayError
from core.store.base import MemoryBackend, ThreadRef
from core.store.keys import paused_flag
from core.threads import thread_id_for
from core.turns import IncomingMessage

__all__ = ["ADMIN_VERBS", "PAUSE_CHECK_SECONDS", "AdminCommand", "AdminCommands", "parse_admin"]

log = logging.getLogger(__name__)

# `admin usage` (the usage feature) adds its verb here and its branch in AdminCommands.run.
ADMIN_VERBS = ("reset", "pause", "resume")
PAUSE_CHECK_SECONDS = 5.0
_PAUSES_REMEMBERED = 10_000  # channels; past it the memory starts again (a bound, not an eviction policy)
_ADMIN = re.compile(r"^[!/]?admin\s+([a-z]+)(?:\s+(.*))?$", re.IGNORECASE | re.DOTALL)
# A user as Slack (<@U123>, <@U123|name>) or Discord (<@123>, <@!123>) writes a mention, or a bare ID.
_USER = re.compile(r"^<@!?([A-Za-z0-9]+)(?:\|[^>]*)?>$|^([A-Za-z0-9]+)$")


@dataclass(frozen=True, slots=True)
class AdminCommand:
    verb: str
    args: tuple[str, ...] = ()


def parse_admin(text: str) -> AdminCommand | None:
    """The admin command the whole message is (`admin pause`, `admin reset <@U1>`), else None."""
    match = _ADMIN.fullmatch(text.strip())
    if match is None or match.group(1).lower() not in ADMIN_VERBS:
        return None
    verb, rest = match.group(1).lower(), (match.group(2) or "").split()
    if verb == "reset" and len(rest) != 1:
        return None  # `admin reset` names exactly one user; anything else is ordinary text
    if verb in ("pause", "resume") and rest:
        return None
    return AdminCommand(verb, tuple(rest))


def target_user(arg: str) -> str | None:
    match = _USER.fullmatch(arg)
    return (match.group(1) or match.group(2)) if match else None


class AdminCommands:
    """Runs one admin command of one channel on the process's backend."""

    def __init__(
        self, backend: MemoryBackend, admin_ids: frozenset[str], *, lease_seconds: float, keep_seconds: int
    ) -> None:
        self._backend = backend
        self._admins = admin_ids
        self._lease_seconds = lease_seconds
        self._keep_seconds = keep_seconds
        self._pauses: dict[str, tuple[bool, float]] = {}  # flag -> (paused, monotonic time it was read)

    def command(self, incoming: IncomingMessage) -> AdminCommand | None:
        """The admin command in `incoming` when an admin (a person, never a bot) wrote one."""
        if incoming.from_bot or incoming.user_id not in self._admins:
            return None
        return parse_admin(incoming.text)

    async def paused(self, incoming: IncomingMessage) -> bool:
        """Whether an admin paused the channel; a store that does not answer counts as not paused."""
        if not self._admins:
            return False
        flag = paused_flag(incoming.platform, incoming.channel_id)
        now = time.monotonic()
        known = self._pauses.get(flag)
        if known is not None and now - known[1] < PAUSE_CHECK_SECONDS:
            return known[0]
        try:
            paused = await self._backend.has_flag(flag)
        except GatewayError as exc:
            log.warning("pause flag not read, answering as if not paused: %s", exc)
            return False
        self._remember(flag, paused)
        return paused

    def _remember(self, flag: str, paused: bool) -> None:
        if len(self._pauses) >= _PAUSES_REMEMBERED:
            self._pauses.clear()
        self._pauses[flag] = (paused, time.monotonic())

    async def run(
        self, command: AdminCommand, incoming: IncomingMessage, thread_id: str, scope: str
    ) -> tuple[str, bool]:
        """The reply, and whether the turn's own conversation is cleared with its commit."""
        flag = paused_flag(incoming.platform, incoming.channel_id)
        if command.verb == "pause":
            await self._backend.set_flag(flag, None)
            self._remember(flag, True)
            log.info("channel paused by an admin", extra={"admin": incoming.user_id, "outcome": "paused"})
            return "Paused: I'll stay quiet in this channel until an admin writes `admin resume`.", False
        if command.verb == "resume":
            was = await self._backend.clear_flag(flag)
            self._remember(flag, False)
            log.info("channel resumed by an admin", extra={"admin": incoming.user_id, "outcome": "resumed"})
            return ("Resumed: I'm answering in this channel again." if was else "I wasn't paused here."), False
        return await self._reset(command.args[0], incoming, thread_id, scope)

    async def _reset(self, arg: str, incoming: IncomingMessage, thread_id: str, scope: str) -> tuple[str, bool]:
        user = target_user(arg)
        if user is None:
            return f"`{arg}` is not a user: write `admin reset @someone` or their user ID.", False
        if scope != "user_channel":
            return (
                f"Here memory is shared (memory scope `{scope}`), so one person's part cannot be forgotten alone: "
                "`reset` forgets the shared conversation."
            ), False
        target = thread_id_for(user, incoming.channel_id)
        if target == thread_id:  # the admin's own conversation: this very turn holds its lease
            return f"Done: I've forgotten `{user}`'s conversation with me in this channel.", True
        ref = ThreadRef(incoming.platform, target)
        cleared = await self._backend.clear_conversation(ref, lease_seconds=self._lease_seconds)
        if cleared.busy_seconds is not None:
            return f"I'm answering `{user}` right now; try `admin reset` again in a few seconds.", False
        # As a `reset` would: platform context from before now is never seeded into it again.
        inbox = self._backend.inbox(lease_seconds=self._lease_seconds, keep_seconds=self._keep_seconds)
        await inbox.mark_reset(incoming.platform, target)
        log.info("conversation reset by an admin", extra={"admin": incoming.user_id, "cleared_thread": target})
        count = cleared.messages
        if not count and not cleared.keys:
            return f"There was nothing to forget of `{user}` in this channel.", False
        plural = "" if count == 1 else "s"
        return f"Done: I've forgotten the {count} message{plural} of `{user}`'s conversation in this channel.", False
