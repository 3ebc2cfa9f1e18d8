"""MCP_CONFIG: the JSON file naming the MCP servers, in the shape other MCP clients use.

    {"mcpServers": {
        "orders": {"command": "python", "args": ["-m", "orders_server"], "env": {"API_KEY": "..."}},
        "docs":   {"url": "https://mcp.example.com/mcp", "headers": {"Authorization": "Bearer ..."},
                   "requireApproval": ["delete_page"]}}}

`env` values and `headers` are secrets: kept as `SecretStr`, never logged or printed. A file that
cannot be read or is not this shape is a setting to fix (ConfigError); one entry that is wrong is
reported by its server's name and skipped, and the other servers still start.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator

from core.errors import ConfigError

__all__ = ["McpConfig", "McpServerConfig", "load_mcp_config", "redact_url"]

ApprovalRule = bool | list[str] | None


class McpServerConfig(BaseModel):
    """One server: `command` (stdio) or `url` (streamable HTTP)."""

    model_config = ConfigDict(frozen=True, extra="ignore", populate_by_name=True)

    name: str
    command: str | None = None
    args: list[str] = Field(default_factory=list, repr=False)  # may carry a token: never shown
    env: dict[str, SecretStr] = Field(default_factory=dict)
    cwd: str | None = None
    url: str | None = Field(None, repr=False)  # may carry credentials: shown only through redact_url
    headers: dict[str, SecretStr] = Field(default_factory=dict)
    require_approval: ApprovalRule = Field(None, alias="requireApproval")
    disabled: bool = False

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and (urlsplit(value).scheme not in ("http", "https") or not urlsplit(value).netloc):
            raise ValueError("url must be an http:// or https:// URL")
        return value

    @model_validator(mode="after")
    def _one_transport(self) -> McpServerConfig:
        if (self.command is None) == (self.url is None):
            raise ValueError('needs either "command" (stdio) or "url" (streamable HTTP), not both or neither')
        return self

    @property
    def transport(self) -> Literal["stdio", "http"]:
        return "stdio" if self.command is not None else "http"

    def describe(self) -> str:
        """Where the server is, for logs: the command without its arguments, or the URL without credentials."""
        return f"stdio: {self.command}" if self.command is not None else f"http: {redact_url(self.url or '')}"

    def needs_approval(self, tool: str, *, destructive: bool) -> bool:
        """`requireApproval` true/false decides for every tool; a list adds tools to the destructive ones."""
        rule = self.require_approval
        if isinstance(rule, bool):
            return rule
        return destructive or (rule is not None and tool in rule)


class McpConfig(BaseModel):
    """The servers that parsed, and the reason for each entry that did not."""

    servers: list[McpServerConfig] = Field(default_factory=list)
    invalid: dict[str, str] = Field(default_factory=dict)


def load_mcp_config(path: Path) -> McpConfig:
    """Read MCP_CONFIG.

    Raises:
        ConfigError: the file is missing, not JSON, or has no "mcpServers" object.
    """
    try:
        data: Any = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"MCP_CONFIG={path} cannot be read: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise ConfigError(f"MCP_CONFIG={path} is not JSON: {exc}") from None
    servers = data.get("mcpServers") if isinstance(data, dict) else None
    if not isinstance(servers, dict):
        raise ConfigError(f'MCP_CONFIG={path} needs an object "mcpServers": {{"<name>": {{...}}}}')
    config = McpConfig()
    for name, entry in servers.items():
        if not isinstance(entry, dict):
            config.invalid[name] = "the entry is not a JSON object"
            continue
        try:
            server = McpServerConfig.model_validate({**entry, "name": name})
        except ValidationError as exc:
            # Only field names and messages: the input may hold a secret (hide_input_in_errors' reason).
            problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'entry'}: {e['msg']}" for e in exc.errors())
            config.invalid[name] = problems
            continue
        if not server.disabled:
            config.servers.append(server)
    return config


def redact_url(url: str) -> str:
    """`url` without userinfo and query, which may carry credentials."""
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    return parts._replace(netloc=host, query="", fragment="").geturl()
