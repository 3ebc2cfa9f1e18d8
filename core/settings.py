"""Every knob of chat-gateway, read once from the environment and `.env`.

Only this module reads the environment. Build `Settings` once (the CLI does) and pass it down;
tests build `Settings(_env_file=None, ...)` so a developer's `.env` cannot leak in.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, Field, SecretStr, TypeAdapter, ValidationError, field_serializer, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from core.context import default_context_tokens
from core.errors import ConfigError
from core.redact import redact_url, url_secrets

__all__ = ["REDIS_SCHEMES", "Settings", "SuggestedPrompt", "env_example", "load_settings", "settings_table"]

REDIS_SCHEMES = ("redis", "rediss", "unix", "redis+cluster", "rediss+cluster", "redis+sentinel")
_URL_FIELDS = ("openai_base_url", "slack_api_url", "discord_api_url")
LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]
MemoryScope = Literal["user_channel", "channel", "thread"]
DmPolicy = Literal["open", "members", "off"]


class SuggestedPrompt(BaseModel):
    """One prompt a new Slack assistant thread offers: the button's `title`, the `message` it sends."""

    model_config = {"frozen": True, "extra": "forbid"}

    title: str = Field(min_length=1, max_length=75)
    message: str = Field(min_length=1, max_length=4000)


# Slack shows at most four; an empty list shows none.
_PROMPTS = TypeAdapter(list[SuggestedPrompt])
_MAX_PROMPTS = 4
_DEFAULT_PROMPTS = (  # a click sends the message as it is, so each one stands on its own
    '[{"title": "What can you do?", "message": "What can you help me with?"},'
    ' {"title": "Summarise a text", "message": "I want a short summary of a text: ask me to paste it."},'
    ' {"title": "Draft a message", "message": "Help me write a clear message: ask me who it is for and what it says."}]'
)


def _require_url(value: str | None, schemes: tuple[str, ...], name: str) -> str | None:
    if value is None or value == "":
        return None
    parts = urlsplit(value)
    if parts.scheme not in schemes:
        raise ValueError(f"must be a URL starting with one of {', '.join(s + '://' for s in schemes)}")
    if parts.scheme != "unix" and not parts.netloc:
        raise ValueError(f"{name} needs a host, as in {schemes[0]}://host:port")
    for host in parts.netloc.rpartition("@")[2].split(","):  # cluster and sentinel URLs list several
        port = host.rpartition(":")[2] if ":" in host else "0"
        if not port.isdigit() or int(port) > 65535:
            raise ValueError("has a port that is not a number from 0 to 65535")
    return value


class Settings(BaseSettings):
    """Every setting, with its environment name in capitals (REDIS_URL, MAX_MESSAGES, ...)."""

    model_config = SettingsConfigDict(
        env_file=".env", extra="ignore", frozen=True, hide_input_in_errors=True, case_sensitive=False
    )

    # Memory
    redis_url: SecretStr | None = Field(None, description="Redis URL; unset = embedded SQLite store under DATA_DIR")
    redis_cluster: bool = Field(False, description="Treat REDIS_URL as a Redis Cluster node (or use redis+cluster://)")
    redis_sentinel_master: str | None = Field(None, description="Primary's name for redis+sentinel:// URLs")
    redis_timeout_seconds: float = Field(
        2.0, gt=0, description="Redis timeout per attempt; with 3 retries an outage is reported within ~4x this"
    )
    redis_pool_size: int = Field(50, ge=1, description="Most Redis connections one process opens")
    redis_allow_eviction: bool = Field(
        False, description="Start even if Redis's maxmemory-policy may evict keys (leases, inbox, memory)"
    )
    data_dir: Path = Field(Path("data"), description="Where the embedded store keeps its SQLite file")
    key_prefix: str = Field("chat", min_length=1, pattern=r"^[^\s{}]+$", description="First part of every key")
    max_messages: int = Field(50, ge=0, description="Messages kept per conversation; 0 = unlimited")
    thread_ttl_seconds: int = Field(604800, ge=0, description="Idle conversations expire after this; 0 = never")
    memory_scope: MemoryScope = Field("user_channel", description="user_channel, channel or thread")
    context_from_platform: bool = Field(
        True, description="Seed an empty memory once from the platform's history (thread, DM, reply chain)"
    )
    truncation_notice: bool = Field(
        True, description="Say once per conversation, in the reply, that older messages were dropped"
    )

    # Model
    openai_api_key: SecretStr | None = Field(None, description="API key; with no key and no base URL: offline model")
    openai_base_url: str | None = Field(None, description="OpenAI-compatible server (Azure, Ollama, vLLM, ...)")
    openai_model: str = Field("gpt-4o-mini", min_length=1, description="Model name sent to the server")
    system_prompt: str = Field(
        "You are a helpful assistant in a team chat. Answer concisely.", description="Instructions for the model"
    )
    model_timeout_seconds: float = Field(
        60.0, gt=0, description="Longest wait for one model call, retries included (each tool round is one call)"
    )
    turn_timeout_seconds: float = Field(
        300.0, gt=0, description="Longest a whole answer may take: every model call and tool round of one message"
    )
    model_max_retries: int = Field(2, ge=0, le=10, description="SDK retries on 429/5xx/connection errors")
    max_reply_tokens: int = Field(
        1024, ge=0, description="Longest reply (max_tokens, or max_completion_tokens for o-series/gpt-5); 0 = not sent"
    )
    max_context_tokens: int | None = Field(
        None,
        ge=1,
        description="Drop oldest history to fit this estimate; unset = the model's known window less "
        "MAX_REPLY_TOKENS, or 16000 for models not known",
    )

    # Tools
    tools_module: str | None = Field(
        None, pattern=r"^[A-Za-z_][\w.]*$", description="Python module whose public annotated functions are tools"
    )
    mcp_config: Path | None = Field(None, description='JSON file of MCP servers ({"mcpServers": {...}})')
    mcp_connect_timeout_seconds: float = Field(
        30.0, gt=0, description="Longest wait for an MCP server to start and list its tools"
    )
    max_tool_steps: int = Field(8, ge=1, description="Most rounds of tool calls in one answer")
    tool_timeout_seconds: float = Field(30.0, gt=0, description="Longest one tool call may run")
    max_tool_result_chars: int = Field(
        20000, ge=100, description="Longer tool results are cut to this, with a note saying so"
    )
    approval_timeout_seconds: float = Field(
        600.0, gt=0, description="How long an approval prompt waits for a click; then the call is not run"
    )
    approvers: str = Field(
        "", description="Comma-separated user IDs who may approve any call (the requester always may)"
    )
    admins: str = Field(
        "", description="Comma-separated user IDs who may use the admin commands and are exempt from token budgets"
    )

    # Gateway
    dedupe_ttl_seconds: int = Field(86400, ge=1, description="How long a platform event ID is remembered")
    lock_timeout_seconds: float = Field(
        30.0, gt=0, description="Lease of a message being answered; renewed while its turn runs, taken over if not"
    )
    max_concurrent_turns: int = Field(
        64, ge=1, description="Turns one process runs at once; the rest wait in the inbox"
    )
    rate_limit_per_minute: int = Field(20, ge=0, description="Messages per user per minute; 0 = no limit")
    max_input_chars: int = Field(4000, ge=1, description="Longest user message accepted")
    profiles_file: Path | None = Field(
        None, description="YAML file of per-channel profiles (prompt, model, tools, who may talk); SIGHUP reloads it"
    )
    max_attachment_bytes: int = Field(
        10_000_000, ge=1, description="Largest file (image, text, PDF) downloaded from a message"
    )
    max_attachments: int = Field(4, ge=0, description="Most files of one message read; 0 = files are not read")
    max_attachment_chars: int = Field(
        20000, ge=100, description="Most characters of text from a message's files (text, code, PDF) the model gets"
    )
    max_bot_turns: int = Field(
        3, ge=0, description="Bot messages answered in a row per conversation (with *_ALLOW_BOTS); 0 = no cap"
    )

    # Usage and budgets
    daily_token_budget_per_user: int | None = Field(
        None, ge=1, description="Tokens one user may use per UTC day (ADMINS exempt); unset = no budget"
    )
    daily_token_budget_per_workspace: int | None = Field(
        None, ge=1, description="Tokens one Slack workspace or Discord guild may use per UTC day; unset = no budget"
    )
    model_prices_file: Path | None = Field(
        None, description="JSON or YAML file of USD per million prompt/completion tokens per model: cost beside tokens"
    )

    # Slack
    slack_bot_token: SecretStr | None = Field(None, description="xoxb- bot token")
    slack_app_token: SecretStr | None = Field(None, description="xapp- app token; set = Socket Mode")
    slack_signing_secret: SecretStr | None = Field(None, description="Verifies HTTP-mode requests")
    slack_api_url: str | None = Field(None, description="Slack Web API base URL; unset = Slack's")
    slack_allow_bots: bool = Field(False, description="Answer other bots' messages")
    slack_allow_user_mentions: bool = Field(
        False, description="Let replies mention users and user groups (<@U…>); @here/@channel never ping"
    )
    slack_channel_ids: str | None = Field(None, description="Answer only in these channels (comma-separated IDs)")
    slack_dm_policy: DmPolicy | None = Field(
        None,
        description="Who may DM the bot: open, members (of a SLACK_CHANNEL_IDS channel) or off; "
        "unset = members when SLACK_CHANNEL_IDS is set, else open",
    )
    host: str = Field(
        "127.0.0.1", description="Address Slack HTTP mode listens on; the image sets 0.0.0.0 for Slack's requests"
    )
    port: int = Field(3000, ge=0, le=65535, description="Slack HTTP mode listens here")
    slack_suggested_prompts: str = Field(
        _DEFAULT_PROMPTS,
        description='Prompts a new assistant thread offers: JSON list of {"title", "message"}, at most 4; [] = none',
    )

    # Discord
    discord_token: SecretStr | None = Field(None, description="Bot token")
    discord_api_url: str | None = Field(None, description="Discord REST base URL; unset = Discord's")
    discord_allow_bots: bool = Field(False, description="Answer other bots' messages")
    discord_shard_count: int | None = Field(None, ge=1, description="Run the sharded client with this many shards")
    discord_guild_ids: str | None = Field(None, description="Answer only in these guilds (comma-separated IDs)")
    discord_channel_ids: str | None = Field(None, description="Answer only in these channels (comma-separated IDs)")
    discord_dm_policy: DmPolicy | None = Field(
        None,
        description="Who may DM the bot: open, members (of a DISCORD_GUILD_IDS guild) or off; "
        "unset = members when DISCORD_GUILD_IDS is set, else open",
    )
    discord_auto_thread: bool = Field(
        False, description="A mention in a text channel opens a thread on it; the bot answers there without mentions"
    )

    # Operations
    health_port: int = Field(8080, ge=0, le=65535, description="/healthz, /readyz and /metrics; 0 = off")
    health_host: str = Field(
        "127.0.0.1", description="Address the health server listens on; the image sets 0.0.0.0 for outside probes"
    )
    shutdown_grace_seconds: float = Field(20.0, ge=0, description="On SIGTERM, how long in-flight turns may finish")
    log_level: LogLevel = Field("INFO", description="DEBUG, INFO, WARNING, ERROR or CRITICAL")
    log_format: Literal["text", "json"] = Field("text", description="text for people, json for machines")

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_log_level(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @field_validator("redis_url", mode="before")
    @classmethod
    def _check_redis_url(cls, value: Any) -> Any:
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        return _require_url(value, REDIS_SCHEMES, "REDIS_URL") if value is None or isinstance(value, str) else value

    @field_validator("slack_suggested_prompts")
    @classmethod
    def _check_prompts(cls, value: str) -> str:
        prompts = _PROMPTS.validate_json(value)  # a ValidationError names the bad entry and field
        if len(prompts) > _MAX_PROMPTS:
            raise ValueError(f"Slack shows at most {_MAX_PROMPTS} suggested prompts, got {len(prompts)}")
        return value

    @field_validator("openai_base_url", "slack_api_url", "discord_api_url")
    @classmethod
    def _check_http_url(cls, value: str | None) -> str | None:
        return _require_url(value, ("http", "https"), "the URL")

    # These URLs may carry credentials (userinfo, `?key=`): shown (repr, dumps) only redacted.
    @field_serializer("openai_base_url", "slack_api_url", "discord_api_url")
    def _shown_url(self, value: str | None) -> str | None:
        return redact_url(value) if value is not None else None

    def __repr_args__(self) -> Iterator[tuple[str | None, Any]]:
        for name, value in super().__repr_args__():
            shown = value
            if name == "redis_url" and isinstance(value, SecretStr):
                shown = redact_url(value.get_secret_value())  # where it points, without the password
            elif name in _URL_FIELDS and isinstance(value, str):
                shown = redact_url(value)
            yield name, shown

    @property
    def redis_dsn(self) -> str | None:
        """REDIS_URL itself, for the client that connects with it; show `repr(settings.redis_url)` instead."""
        return self.redis_url.get_secret_value() if self.redis_url is not None else None

    def secret_values(self) -> list[str]:
        """Every secret value these settings hold (tokens, keys, URL credentials): logs mask them all."""
        values = [
            field.get_secret_value()
            for field in (getattr(self, name) for name in type(self).model_fields)
            if isinstance(field, SecretStr)
        ]
        for url in (self.redis_dsn, *(getattr(self, name) for name in _URL_FIELDS)):
            values += url_secrets(url)
        return [value for value in values if value]

    @property
    def context_tokens(self) -> int:
        """MAX_CONTEXT_TOKENS, or the default for OPENAI_MODEL when it is not set."""
        if self.max_context_tokens is not None:
            return self.max_context_tokens
        return default_context_tokens(self.openai_model, self.max_reply_tokens)

    @property
    def approver_ids(self) -> frozenset[str]:
        """APPROVERS as a set of user IDs (blank entries dropped)."""
        return frozenset(part.strip() for part in self.approvers.split(",") if part.strip())

    @property
    def admin_ids(self) -> frozenset[str]:
        """ADMINS as a set of user IDs (blank entries dropped)."""
        return frozenset(part.strip() for part in self.admins.split(",") if part.strip())

    @property
    def suggested_prompts(self) -> list[SuggestedPrompt]:
        """SLACK_SUGGESTED_PROMPTS, parsed (it was validated when the settings were built)."""
        return _PROMPTS.validate_json(self.slack_suggested_prompts)

    @property
    def store_max_messages(self) -> int | None:
        """The store's view of MAX_MESSAGES: the setting's 0 means no cap."""
        return self.max_messages or None

    @property
    def store_ttl_seconds(self) -> int | None:
        """The store's view of THREAD_TTL_SECONDS: the setting's 0 means no expiry."""
        return self.thread_ttl_seconds or None


def _describe(error: Any) -> str:
    field = ".".join(str(part) for part in error["loc"]) or "settings"
    return f"{field.upper()}: {error['msg']}"


def load_settings(**overrides: Any) -> Settings:
    """Build `Settings`, turning validation errors into one `ConfigError` line per bad variable.

    Raises:
        ConfigError: a value is invalid; the message names each variable and what is allowed.
    """
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        raise ConfigError("; ".join(_describe(error) for error in exc.errors())) from None


def settings_table() -> str:
    """The README's settings table, generated from `Settings` so the two cannot drift."""
    rows = ["| Variable | Default | Meaning |", "|---|---|---|"]
    for name, field in Settings.model_fields.items():
        default = "" if field.default is None else str(field.default)
        rows.append(f"| `{name.upper()}` | {f'`{default}`' if default else '—'} | {field.description or ''} |")
    return "\n".join(rows)


def env_example() -> str:
    """`.env.example`: every setting with a one-line comment, commented out at its default."""
    lines = ["# chat-gateway settings: copy to .env and uncomment what you change.", ""]
    for name, field in Settings.model_fields.items():
        default = "" if field.default is None else str(field.default)
        lines += [f"# {field.description}", f"# {name.upper()}={default}", ""]
    return "\n".join(lines)
