"""Which profile a message's place gets, what it resolves to, and where each value came from.

`Profiles` is the process's live set (one per process, built by the CLI): `resolve(place)` walks the
profiles in file order and the first whose match fits wins; each field then comes from that profile,
else `defaults`, else the environment (Settings). `reload()` reads the file again and swaps the set
in one assignment: a turn that already resolved keeps its `Resolved`, a bad file keeps the old set.
"""

from __future__ import annotations

import fnmatch
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.agent_turn import TurnOptions
from core.errors import ConfigError
from core.profiles import PROFILE_FIELDS, Match, ProfileFile, ProfileSettings, Respond, load_profiles
from core.settings import MemoryScope, Settings
from core.turns import IncomingMessage

__all__ = ["ENVIRONMENT", "Place", "Profiles", "Resolved"]

log = logging.getLogger(__name__)

ENVIRONMENT = "environment"
_MAX_CACHED = 10_000
BUILT_IN = "built-in"
# Where a field comes from when neither a profile nor `defaults` sets it: the setting of the same meaning,
_FROM_SETTINGS = {
    "system_prompt": "system_prompt",
    "model": "openai_model",
    "max_messages": "max_messages",
    "ttl_seconds": "thread_ttl_seconds",
    "memory_scope": "memory_scope",
    "rate_limit_per_minute": "rate_limit_per_minute",
    # The budgets' settings are the budget feature's; until it exists they are simply not set.
    "daily_token_budget_per_user": "daily_token_budget_per_user",
    "daily_token_budget_per_workspace": "daily_token_budget_per_workspace",
}
# or, for what has no setting, a built-in value.
_BUILT_IN: dict[str, Any] = {"temperature": None, "tools": None, "allow": None, "deny": [], "respond": "mention"}


@dataclass(frozen=True, slots=True)
class Place:
    """Where a message was written and by whom: what a profile's match and allow/deny look at."""

    platform: str
    channel: str
    workspace: str | None = None
    is_dm: bool = False
    names: tuple[str, ...] = ()  # the channel's name (and its parent's, for a Discord thread), where known
    parents: tuple[str, ...] = ()  # the parent channel's ID of a platform thread that is a channel (Discord)
    user_id: str = ""
    roles: frozenset[str] = frozenset()

    @classmethod
    def of(cls, incoming: IncomingMessage) -> Place:
        """The place of `incoming`: adapters put the raw channel, its name and the roles in metadata."""
        meta = incoming.metadata
        channel = meta.get("channel") or meta.get("channel_id") or incoming.channel_id
        names = tuple(n for n in (meta.get("channel_name"), meta.get("parent_channel_name")) if n)
        parent = meta.get("parent_channel_id")
        return cls(
            platform=incoming.platform, channel=channel, workspace=incoming.workspace_id, is_dm=incoming.is_dm,
            names=names, parents=(parent,) if parent else (), user_id=incoming.user_id,
            roles=frozenset(meta.get("role_ids", "").split()),
        )  # fmt: skip


def matches(match: Match, place: Place) -> bool:
    if match.platform is not None and match.platform != place.platform:
        return False
    if match.team is not None and (place.platform != "slack" or match.team != place.workspace):
        return False
    if match.guild is not None and (place.platform != "discord" or match.guild != place.workspace):
        return False
    if match.dm is not None and match.dm != place.is_dm:
        return False
    if match.channel is None:
        return True
    pattern = match.channel
    ids = (place.channel, *place.parents)
    return any(fnmatch.fnmatchcase(i, pattern) for i in ids) or any(
        fnmatch.fnmatchcase(name.lower(), pattern.lower()) for name in place.names
    )


@dataclass(frozen=True, slots=True)
class Resolved:
    """The effective settings of one place; `sources[field]` says where each came from."""

    system_prompt: str
    model: str
    temperature: float | None
    max_messages: int  # 0: unlimited, as MAX_MESSAGES
    ttl_seconds: int  # 0: never expire, as THREAD_TTL_SECONDS
    memory_scope: MemoryScope
    tools: frozenset[str] | None  # None: every tool
    allow: frozenset[str] | None  # None: everyone
    deny: frozenset[str]
    respond: Respond
    rate_limit_per_minute: int
    daily_token_budget_per_user: int | None
    daily_token_budget_per_workspace: int | None
    profile: str | None = None  # the profile that matched
    sources: Mapping[str, str] = field(default_factory=dict)

    def from_file(self, name: str) -> bool:
        """Whether a profile or `defaults` set `name` (not the environment, nor the built-in default)."""
        source = self.sources.get(name, BUILT_IN)
        return source != BUILT_IN and not source.startswith(ENVIRONMENT)

    def turn_options(self) -> TurnOptions:
        """What the turn changes from the agent's own: only the values a profile (or `defaults`) sets. The agent
        was built from the same environment, and its model may be named otherwise than OPENAI_MODEL says."""
        return TurnOptions(
            instructions=self.system_prompt if self.from_file("system_prompt") else None,
            model=self.model if self.from_file("model") else None,
            temperature=self.temperature if self.from_file("temperature") else None,
            tool_names=self.tools if self.from_file("tools") else None,
        )

    def permits(self, place: Place) -> bool:
        """Whether the sender may talk here: not denied (by ID or role), and allowed when there is a list."""
        who = {place.user_id, *place.roles}
        if not who.isdisjoint(self.deny):
            return False
        return self.allow is None or not who.isdisjoint(self.allow)

    def shown(self, name: str) -> str:
        value = getattr(self, name)
        if isinstance(value, frozenset):
            return "[" + ", ".join(sorted(value)) + "]"
        if value is None:
            return {"tools": "(every tool)", "allow": "(everyone)", "temperature": "(the model's default)"}.get(
                name, "(not set)"
            )
        return str(value)


def resolve(settings: Settings, loaded: ProfileFile | None, place: Place) -> Resolved:
    """`place`'s settings: the first matching profile's, else `defaults`', else the environment's."""
    chosen: tuple[str, ProfileSettings] | None = None
    if loaded is not None:
        for index, profile in enumerate(loaded.profiles):
            if matches(profile.match, place):
                chosen = (f'profile "{loaded.label(index)}"', profile)
                break
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for name in PROFILE_FIELDS:
        levels = [chosen] if chosen is not None else []
        if loaded is not None:
            levels.append(("defaults", loaded.defaults))
        found = next(((label, getattr(s, name)) for label, s in levels if getattr(s, name) is not None), None)
        if found is not None:
            sources[name], values[name] = found
        elif name in _FROM_SETTINGS:
            setting = _FROM_SETTINGS[name]
            sources[name], values[name] = f"{ENVIRONMENT} ({setting.upper()})", getattr(settings, setting, None)
        else:
            sources[name], values[name] = BUILT_IN, _BUILT_IN[name]
    for name in ("tools", "allow", "deny"):
        if values[name] is not None:
            values[name] = frozenset(values[name])
    name_of = chosen[0].removeprefix("profile ").strip('"') if chosen is not None else None
    return Resolved(**values, profile=name_of, sources=sources)


class Profiles:
    """The process's profiles from PROFILES_FILE (none: the environment everywhere)."""

    def __init__(self, settings: Settings, loaded: ProfileFile | None = None, *, path: Path | None = None) -> None:
        self._settings = settings
        self._loaded = loaded
        self.path = path
        # A place resolves the same until the next reload (the sender only matters to `permits`): a message
        # is resolved several times on its way (intake, the adapter's question, its turn).
        self._resolved: dict[tuple[object, ...], Resolved] = {}

    @classmethod
    def from_settings(cls, settings: Settings) -> Profiles:
        """Raises: ConfigError: PROFILES_FILE is not valid (one line: file, profile, field)."""
        return cls(settings, load_profiles(settings.profiles_file), path=settings.profiles_file)

    @property
    def loaded(self) -> ProfileFile | None:
        return self._loaded

    @property
    def matches_channels(self) -> bool:
        """Whether some profile matches on `channel` (then adapters look up names they do not have)."""
        return self._loaded is not None and any(p.match.channel is not None for p in self._loaded.profiles)

    def resolve(self, place: Place | IncomingMessage) -> Resolved:
        where = place if isinstance(place, Place) else Place.of(place)
        key = (where.platform, where.channel, where.workspace, where.is_dm, where.names, where.parents)
        loaded, cache = self._loaded, self._resolved  # one read of each: a reload swaps both
        found = cache.get(key)
        if found is None:
            found = resolve(self._settings, loaded, where)
            if len(cache) >= _MAX_CACHED:
                cache.clear()
            cache[key] = found
        return found

    def reload(self) -> bool:
        """Read PROFILES_FILE again; on any error keep the current profiles, log why, and return False."""
        if self.path is None:
            log.info("nothing to reload: PROFILES_FILE is not set")
            return True
        try:
            fresh = load_profiles(self.path)
        except ConfigError as exc:
            log.error("profiles not reloaded, the previous ones stay: %s", exc)  # noqa: TRY400 -- one line, no trace
            return False
        self._loaded, self._resolved = fresh, {}  # a turn that resolved before keeps its Resolved
        count = len(fresh.profiles) if fresh is not None else 0
        log.info("profiles reloaded from %s: %d profiles", self.path, count)
        return True
