"""Per-place profiles (PROFILES_FILE): the schema, loading it, and the one line that says what is wrong.

The file holds `defaults` and a list of `profiles`, each with a `match` (platform, Slack team or
Discord guild, a channel ID-or-name glob, DM or not) and the settings it changes. The first profile
whose match fits a message wins over `defaults`, which win over the environment (core.profile_rules
resolves a place). Every model forbids unknown keys and every glob is checked here, at load: a
mistake is one `ConfigError` line naming the file, the profile and the field (the CLI exits 2).
"""

from __future__ import annotations

import fnmatch
import logging
from pathlib import Path
from typing import Any, Literal

import yaml  # type: ignore[import-untyped]  # PyYAML ships no type stubs
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from core.errors import ConfigError
from core.settings import MemoryScope

__all__ = ["PROFILE_FIELDS", "Match", "Profile", "ProfileFile", "ProfileSettings", "Respond", "load_profiles"]

log = logging.getLogger(__name__)

Respond = Literal["mention", "always", "never"]


def check_glob(pattern: str) -> str:
    """`pattern` if fnmatch reads it as meant; a ValueError saying why not (fnmatch itself never refuses)."""
    if not pattern.strip():
        raise ValueError("a glob must not be empty")
    i = 0
    while i < len(pattern):
        if pattern[i] == "[":  # fnmatch's rule: a `]` right after `[` or `[!` belongs to the set
            j = i + 1 + (pattern[i + 1 : i + 2] == "!")
            j += pattern[j : j + 1] == "]"
            close = pattern.find("]", j)
            if close == -1:
                raise ValueError(f"bad glob {pattern!r}: '[' is never closed")
            i = close
        i += 1
    if "(?!)" in fnmatch.translate(pattern):  # a range such as [z-a]: fnmatch turns it into "never"
        raise ValueError(f"bad glob {pattern!r}: a [...] range that matches nothing")
    return pattern


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class Match(_Strict):
    """Where a profile applies; every field left out matches anything."""

    platform: str | None = None
    team: str | None = Field(default=None, description="Slack team (workspace) ID")
    guild: str | None = Field(default=None, description="Discord guild ID")
    channel: str | None = Field(default=None, description="glob on the channel's ID or name (#name or name)")
    dm: bool | None = None

    @field_validator("channel")
    @classmethod
    def _glob(cls, value: str | None) -> str | None:
        return check_glob(value.removeprefix("#")) if value is not None else None

    @field_validator("team", "guild", "channel", mode="before")
    @classmethod
    def _id_text(cls, value: Any) -> Any:
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else value  # YAML reads 123 as int

    @model_validator(mode="after")
    def _one_platform(self) -> Match:
        if self.team is not None and self.guild is not None:
            raise ValueError("team is Slack's and guild is Discord's: a match names at most one of them")
        implied = "slack" if self.team is not None else "discord" if self.guild is not None else None
        if implied and self.platform not in (None, implied):
            raise ValueError(f"{'team' if implied == 'slack' else 'guild'} needs platform {implied}")
        return self


def _ids(value: Any) -> Any:
    if isinstance(value, list):
        return [str(v) if isinstance(v, int) and not isinstance(v, bool) else v for v in value]
    return value


class ProfileSettings(_Strict):
    """What `defaults` and a profile may set; None (left out) falls through to the next level."""

    system_prompt: str | None = None
    model: str | None = Field(default=None, min_length=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    max_messages: int | None = Field(default=None, ge=0)
    ttl_seconds: int | None = Field(default=None, ge=0)
    memory_scope: MemoryScope | None = None
    tools: list[str] | None = None  # an allow-list of tool names; [] offers none
    allow: list[str] | None = None  # user IDs or Discord role IDs; set: nobody else is answered
    deny: list[str] | None = None
    respond: Respond | None = None
    rate_limit_per_minute: int | None = Field(default=None, ge=0)
    daily_token_budget_per_user: int | None = Field(default=None, ge=0)
    daily_token_budget_per_workspace: int | None = Field(default=None, ge=0)

    @field_validator("temperature", mode="before")
    @classmethod
    def _number(cls, value: Any) -> Any:
        return float(value) if isinstance(value, int) and not isinstance(value, bool) else value

    @field_validator("allow", "deny", mode="before")
    @classmethod
    def _id_texts(cls, value: Any) -> Any:
        return _ids(value)


PROFILE_FIELDS = tuple(ProfileSettings.model_fields)


class Profile(ProfileSettings):
    name: str | None = Field(default=None, min_length=1)
    match: Match = Match()


class ProfileFile(_Strict):
    """The whole file."""

    defaults: ProfileSettings = ProfileSettings()
    profiles: list[Profile] = []

    def label(self, index: int) -> str:
        profile = self.profiles[index]
        return profile.name or f"profiles[{index}]"


def _where(path: Path, raw: Any, loc: tuple[int | str, ...]) -> str:
    """`<file>: profile "<name>" (profiles[i]), field <a.b>` for a pydantic error location."""
    if loc and loc[0] == "profiles" and len(loc) > 1 and isinstance(loc[1], int):
        entries = raw.get("profiles") if isinstance(raw, dict) else None
        entry = entries[loc[1]] if isinstance(entries, list) and loc[1] < len(entries) else None
        name = entry.get("name") if isinstance(entry, dict) else None
        who = f'profile "{name}" (profiles[{loc[1]}])' if isinstance(name, str) else f"profile profiles[{loc[1]}]"
        rest = loc[2:]
    elif loc and loc[0] == "defaults":
        who, rest = "defaults", loc[1:]
    else:
        who, rest = "top level", loc
    field = ".".join(str(part) for part in rest) if rest else "(the entry itself)"
    return f"{path}: {who}, field {field}"


def _message(error: Any) -> str:
    if error["type"] == "extra_forbidden":
        return "unknown key"
    text = str(error["msg"]).removeprefix("Value error, ")
    given = error.get("input")
    if error["type"].endswith(("_type", "_parsing", "literal_error", "enum")) and not isinstance(given, dict | list):
        shown = repr(given) if len(repr(given)) <= 40 else repr(given)[:39] + "…"
        text += f" (got {type(given).__name__} {shown})"
    return text


def parse_profiles(text: str, path: Path) -> ProfileFile:
    """The profiles in YAML `text` read from `path`.

    Raises:
        ConfigError: not YAML, or a key, glob or type is wrong: one line naming the file, profile and field.
    """
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "not valid YAML"
        raise ConfigError(f"{path}: not valid YAML{where}: {problem}") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: top level, field (the file): expected a mapping with defaults and profiles")
    try:
        loaded = ProfileFile.model_validate(raw)
    except ValidationError as exc:
        errors = exc.errors()
        first = errors[0]
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise ConfigError(f"{_where(path, raw, tuple(first['loc']))}: {_message(first)}{more}") from None
    return loaded


def load_profiles(path: Path | None) -> ProfileFile | None:
    """The profiles in `path`; None when no file is configured or it does not exist (today's behaviour).

    Raises:
        ConfigError: the file cannot be read, or is not valid (see `parse_profiles`).
    """
    if path is None:
        return None
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        log.warning("PROFILES_FILE %s does not exist: no profiles, the environment's settings everywhere", path)
        return None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot be read: {exc.strerror or exc}") from None
    return parse_profiles(text, path)
