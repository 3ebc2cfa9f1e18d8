"""`chat-gateway`: run adapters, inspect threads and token usage, list the tools, check the set-up.

The composition root: settings are read once here and everything else is built from them and passed
down. It lives in `bots/` because it wires adapters to the core (the core never imports `bots`).
Exit codes: 0 done, 1 a check failed or the store is unreachable, 2 bad flags or settings.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import logging
import sys
from collections.abc import Sequence
from typing import NoReturn

from core.errors import ConfigError
from core.logs import configure_logging
from core.profile_rules import Place, Profiles
from core.settings import Settings, load_settings
from core.store import MemoryBackend, ThreadRef, open_backend
from core.usage.budgets import last_days
from core.usage.prices import load_prices
from core.usage.report import usage_table

__all__ = ["main"]

log = logging.getLogger("chat_gateway")
ADAPTERS = ("console", "slack", "discord")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # One clear line and exit 2, instead of argparse's usage block.
        self.exit(2, f"chat-gateway: {message} (see `chat-gateway --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="chat-gateway", description="Slack and Discord gateway for LLM agents with memory.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    run = commands.add_parser("run", help="run one or more adapters on one gateway")
    run.add_argument("adapters", nargs="+", choices=ADAPTERS, metavar="ADAPTER", help="console, slack, discord")
    run.add_argument("--user", default="local", help="console: your user ID (same ID = same memory)")
    run.add_argument("--channel", default="console", help="console: the channel ID (same ID = same memory)")
    threads = commands.add_parser("threads", help="list, show or clear stored conversations")
    verbs = threads.add_subparsers(dest="verb", required=True, parser_class=_Parser)
    listing = verbs.add_parser("list", help="list stored threads (SCAN, never KEYS)")
    listing.add_argument("--namespace", help="platform: slack, discord, console")
    listing.add_argument("--match", help="glob on the thread ID, e.g. 'user_U123_*'")
    for verb in ("show", "clear"):
        one = verbs.add_parser(verb, help=f"{verb} one thread (every namespace is searched unless --namespace)")
        one.add_argument("thread_id")
        one.add_argument("--namespace", help="platform: slack, discord, console")
        if verb == "clear":
            one.add_argument("--force", action="store_true", help="clear even while a turn holds its lease")
    tooling = commands.add_parser("tools", help="the tools the model can call")
    tool_verbs = tooling.add_subparsers(dest="verb", required=True, parser_class=_Parser)
    tool_verbs.add_parser("list", help="every tool, its server and whether it needs approval (starts the servers)")
    commands.add_parser("check", help="check the store, the model and the tool servers, and say what is wrong")
    profiles = commands.add_parser("profiles", help="the per-channel profiles of PROFILES_FILE")
    profile_verbs = profiles.add_subparsers(dest="verb", required=True, parser_class=_Parser)
    show = profile_verbs.add_parser("show", help="the settings a place resolves to, and where each comes from")
    show.add_argument("--platform", required=True, help="slack, discord, console")
    show.add_argument("--channel", default="", help="the channel ID (Slack's raw C123, not team-channel)")
    show.add_argument("--name", help="the channel's name, for profiles that match names")
    place = show.add_mutually_exclusive_group()
    place.add_argument("--team", help="Slack team (workspace) ID")
    place.add_argument("--guild", help="Discord guild ID")
    show.add_argument("--dm", action="store_true", help="a direct message with the bot")
    show.add_argument("--user", default="", help="also say whether this user may talk there")
    show.add_argument("--roles", default="", help="the user's Discord role IDs (comma-separated)")
    tokens = commands.add_parser("usage", help="tokens used per user, channel or workspace over the last days (UTC)")
    tokens.add_argument("--by", choices=("user", "channel", "workspace"), default="user", help="one row per (user)")
    tokens.add_argument("--days", type=_positive, default=7, help="the last N UTC days, today included (default 7)")
    tokens.add_argument("--top", type=_positive, default=20, help="the N rows with the most tokens (default 20)")
    tokens.add_argument("--platform", help="only this platform: slack, discord, console")
    return parser


def _positive(text: str) -> int:
    value = int(text) if text.isdigit() else 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {text!r}")
    return value


async def require_store(backend: MemoryBackend) -> None:
    if not await backend.ping():
        raise SystemExit(f"chat-gateway: the store is unreachable: {describe(backend)}. Is it running?")


def describe(backend: MemoryBackend) -> str:
    describe = getattr(backend, "describe", None)
    return str(describe()) if callable(describe) else backend.kind


async def threads(settings: Settings, args: argparse.Namespace) -> None:
    backend = open_backend(settings)
    try:
        await require_store(backend)
        if args.verb == "list":
            async for ref in backend.iter_threads(args.namespace, args.match):
                print(f"{ref.namespace or '-'}\t{ref.thread_id}")
            return
        ref = await _one_conversation(backend, args.thread_id, args.namespace)
        if args.verb == "clear":
            await _clear(backend, ref, settings, force=args.force)
            return
        messages = await backend.store(ref.thread_id, ref.namespace).list_messages()
        if not messages:
            print(f"{ref.thread_id} in namespace {ref.namespace or '-'}: no messages stored (only delivery records)")
        for message in messages:
            print(f"[{message.created_at:%Y-%m-%d %H:%M:%S}] {message.role}: {message.text}")
    finally:
        await backend.aclose()


async def usage(settings: Settings, args: argparse.Namespace) -> None:
    """The table of `chat-gateway usage`; with MODEL_PRICES_FILE, a cost column."""
    prices = load_prices(settings.model_prices_file) if settings.model_prices_file else None
    backend = open_backend(settings)
    try:
        await require_store(backend)
        days = last_days(args.days)
        rows = await backend.usage().top(days, args.by, args.top, platform=args.platform)
    finally:
        await backend.aclose()
    span = days[0] if len(days) == 1 else f"{days[0]} to {days[-1]}"
    if not rows:
        print(f"No tokens used {span} (UTC).")
        return
    print(f"Tokens by {args.by}, {span} (UTC):")
    print(usage_table(rows, prices))


def show_profiles(settings: Settings, args: argparse.Namespace) -> None:
    """Print what a place resolves to, one field a line with its source.

    Raises:
        ConfigError: PROFILES_FILE is not valid.
    """
    profiles = Profiles.from_settings(settings)
    channel = args.channel or ("dm" if args.dm else "")
    place = Place(
        platform=args.platform, channel=channel, workspace=args.team or args.guild, is_dm=args.dm,
        names=(args.name.removeprefix("#"),) if args.name else (), user_id=args.user,
        roles=frozenset(r.strip() for r in args.roles.split(",") if r.strip()),
    )  # fmt: skip
    resolved = profiles.resolve(place)
    source = f"{profiles.path}" if profiles.loaded is not None else "no PROFILES_FILE (or it does not exist)"
    print(f"profiles: {source}")
    print(f"matched profile: {resolved.profile or '(none: defaults and the environment)'}")
    rows = [(name, resolved.shown(name), resolved.sources[name]) for name in resolved.sources]
    widths = [max(len(row[i]) for row in rows) for i in range(2)]
    for name, value, where in rows:
        print(f"{name.ljust(widths[0])}  {first_line(value, 60).ljust(min(widths[1], 60))}  from {where}")
    if args.user:
        verdict = "answered" if resolved.respond != "never" and resolved.permits(place) else "NOT answered"
        print(f"user {args.user}: {verdict} here")


def first_line(text: str, limit: int = 80) -> str:
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _fail(message: str, code: int) -> NoReturn:
    print(f"chat-gateway: {message}", file=sys.stderr)
    raise SystemExit(code)


async def _one_conversation(backend: MemoryBackend, thread_id: str, namespace: str | None) -> ThreadRef:
    """The one conversation `thread_id` names: in `namespace`, or the only namespace holding it."""
    found = await backend.find_conversations(thread_id)
    if namespace is not None:
        found = [ref for ref in found if ref.namespace == namespace]
    where = f" in namespace {namespace}" if namespace is not None else " in any namespace"
    if not found:
        _fail(f"nothing stored for {thread_id}{where}", 1)
    if len(found) > 1:
        names = ", ".join(sorted(ref.namespace or "-" for ref in found))
        _fail(f"{thread_id} exists in several namespaces ({names}): choose one with --namespace", 2)
    return found[0]


def _thread_flags(ref: ThreadRef) -> list[str]:
    if ref.namespace != "slack":
        return []
    incoming = importlib.import_module("bots.slack.incoming")  # loads slack-bolt only for Slack's threads
    flags: list[str] = incoming.thread_flags(ref.thread_id)
    return flags


async def _clear(backend: MemoryBackend, ref: ThreadRef, settings: Settings, *, force: bool) -> None:
    cleared = await backend.clear_conversation(
        ref, lease_seconds=settings.lock_timeout_seconds, force=force, flags=_thread_flags(ref)
    )
    if cleared.busy_seconds is not None:
        _fail(
            f"a turn is answering in {ref.thread_id} right now (its lease runs about {cleared.busy_seconds:.0f} s "
            "more); nothing was cleared. Try again, or pass --force to clear it under the running turn",
            1,
        )
    plural = "" if cleared.messages == 1 else "s"
    waiting = f", {cleared.waiting} message{'' if cleared.waiting == 1 else 's'} waiting in the inbox"
    print(f"cleared {ref.thread_id} in namespace {ref.namespace or '-'}: {cleared.messages} message{plural}{waiting}")
    for key in (*cleared.keys, *cleared.flags):
        print(f"  deleted {key}")
    if cleared.index is not None:
        print(f"  removed {ref.thread_id} from {cleared.index}")
    # As a `reset` would: platform context from before now is never seeded into this conversation again.
    inbox = backend.inbox(lease_seconds=settings.lock_timeout_seconds, keep_seconds=settings.dedupe_ttl_seconds)
    await inbox.mark_reset(ref.namespace, ref.thread_id)
    print("  kept a reset watermark: platform messages from before now are never seeded into it")


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        settings = load_settings()
    except ConfigError as exc:
        print(f"chat-gateway: invalid settings: {exc}", file=sys.stderr)
        sys.exit(2)
    # A console chat drowns in INFO lines; an explicit LOG_LEVEL still wins.
    quiet = args.command != "run" or (args.adapters == ["console"] and "log_level" not in settings.model_fields_set)
    configure_logging("WARNING" if quiet else settings.log_level, settings.log_format, secrets=settings.secret_values())
    try:
        # The model client, the tools and the adapters load only for the commands that use them (`run`,
        # `tools`, `check`): the store commands start in a third of the time.
        if args.command == "run":
            serving = importlib.import_module("bots.serving")
            asyncio.run(serving.run(settings, args))
        elif args.command == "threads":
            asyncio.run(threads(settings, args))
        elif args.command == "usage":
            asyncio.run(usage(settings, args))
        elif args.command == "tools":
            sys.exit(asyncio.run(importlib.import_module("bots.checks").tools(settings)))
        elif args.command == "profiles":
            show_profiles(settings, args)
        else:
            sys.exit(asyncio.run(importlib.import_module("bots.checks").check(settings)))
    except ConfigError as exc:
        print(f"chat-gateway: {exc}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)
