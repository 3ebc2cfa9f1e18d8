"""`chat-gateway tools` and `chat-gateway check`: what the model is offered, and whether every part answers."""

from __future__ import annotations

from bots.cli import describe, first_line
from core.errors import ConfigError, ModelError
from core.llm import OfflineChatModel, OpenAIChatModel, model_from_settings
from core.messages import ChatMessage
from core.redact import Redactor
from core.settings import Settings
from core.store import RedisConnection, open_backend
from core.tools import open_toolbox

__all__ = ["check", "tools"]


async def tools(settings: Settings) -> int:
    """Print every tool the model sees; 1 when a configured server offers nothing right now."""
    toolbox = await open_toolbox(settings)
    try:
        specs = toolbox.specs()
        if not toolbox.sources and not toolbox.misconfigured:
            print("no tools: set TOOLS_MODULE or MCP_CONFIG")
            return 0
        rows = [("TOOL", "SERVER", "APPROVAL", "DESCRIPTION")]
        rows += [(name, spec.server, "yes" if spec.needs_approval else "no", first_line(spec.tool.description))
                 for name, spec in specs.items()]  # fmt: skip
        widths = [max(len(row[i]) for row in rows) for i in range(3)]
        for row in rows:
            print("  ".join(cell.ljust(width) for cell, width in zip(row[:3], widths, strict=True)), row[3])
        failed = [status for status in toolbox.status() if not status.ok]
        for status in failed:
            print(f"server {status.name}: FAILED ({status.detail})")
        return 1 if failed else 0
    finally:
        await toolbox.aclose()


async def check(settings: Settings) -> int:
    """Print one line per part; 0 when everything answers."""
    failures = 0
    backend = open_backend(settings)
    policy: str | None = None
    try:
        store_ok = await backend.ping()
        if store_ok and isinstance(backend, RedisConnection):
            policy = await backend.maxmemory_policy()
    finally:
        await backend.aclose()
    print(f"store: {'ok' if store_ok else 'UNREACHABLE'} ({describe(backend)})")
    failures += not store_ok
    if isinstance(backend, RedisConnection) and store_ok:
        evicts = policy not in (None, "noeviction")
        shown = policy or "not checked (CONFIG is not allowed)"
        print(f"maxmemory-policy: {shown}{' (may evict: set noeviction)' if evicts else ''}")
        failures += evicts and not settings.redis_allow_eviction
    model = model_from_settings(settings)
    try:
        if isinstance(model, OfflineChatModel):
            print("model: offline stand-in (set OPENAI_API_KEY or OPENAI_BASE_URL for a real model)")
        else:
            failures += not await _check_model(model, Redactor(settings.secret_values()))
    finally:
        await model.aclose()
    failures += await _check_tools(settings)
    for name, needed in (("slack", ("slack_bot_token",)), ("discord", ("discord_token",))):
        missing = [n.upper() for n in needed if getattr(settings, n) is None]
        print(f"{name}: {'not configured (set ' + ', '.join(missing) + ')' if missing else 'token set'}")
    return 1 if failures else 0


async def _check_model(model: OpenAIChatModel, redact: Redactor) -> bool:
    try:
        await model.complete([ChatMessage(role="user", text="Reply with the word: ok")])
    except ModelError as exc:  # its text names the server's URL, credentials and all
        print(redact(f"model: FAILED ({model.model_id}): {exc}"))
        return False
    print(redact(f"model: ok ({model.model_id} at {model.client.base_url})"))
    return True


async def _check_tools(settings: Settings) -> int:
    """One line per tool source; the number that failed."""
    if settings.tools_module is None and settings.mcp_config is None:
        print("tools: none configured (TOOLS_MODULE, MCP_CONFIG)")
        return 0
    try:
        toolbox = await open_toolbox(settings)
    except ConfigError as exc:
        print(f"tools: FAILED ({exc})")
        return 1
    try:
        statuses = toolbox.status()
        for status in statuses:
            label = "tools python" if status.kind == "python" else f"mcp {status.name}"
            print(f"{label}: {'ok' if status.ok else 'FAILED'} ({status.detail})")
        return sum(not status.ok for status in statuses)
    finally:
        await toolbox.aclose()
