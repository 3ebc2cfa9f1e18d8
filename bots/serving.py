"""`chat-gateway run`: the gateway, its delivery runner, the adapters and the health server in one process,
until SIGTERM or SIGINT (SIGHUP reloads the profiles)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import logging
import signal
from collections.abc import Callable, Sequence

from bots.base import Adapter
from bots.cli import describe, require_store
from bots.console import ConsoleAdapter
from core.delivery import Delivery
from core.errors import ConfigError
from core.gateway import Gateway
from core.health import HealthServer
from core.llm import model_from_settings
from core.profile_rules import Profiles
from core.settings import Settings
from core.store import MemoryBackend, RedisConnection, open_backend
from core.tools import open_toolbox

__all__ = ["PLATFORM_ADAPTERS", "build_adapter", "build_delivery", "run"]

log = logging.getLogger("chat_gateway")
PLATFORM_ADAPTERS = {"slack": "bots.slack:SlackAdapter", "discord": "bots.discord_adapter:DiscordAdapter"}


def build_adapter(
    name: str, settings: Settings, gateway: Gateway, delivery: Delivery, args: argparse.Namespace
) -> Adapter:
    if name == "console":
        return ConsoleAdapter(gateway, delivery, user_id=args.user, channel_id=args.channel)
    # Platform SDKs load only when their adapter runs: a console session never imports discord.py.
    module_name, class_name = PLATFORM_ADAPTERS[name].split(":")
    adapter_class: Callable[..., Adapter] = getattr(importlib.import_module(module_name), class_name)
    return adapter_class(settings=settings, gateway=gateway, delivery=delivery)


def build_delivery(settings: Settings, gateway: Gateway) -> Delivery:
    """The process's delivery runner on the gateway's backend (one inbox, one owner name per process)."""
    inbox = gateway.backend.inbox(lease_seconds=settings.lock_timeout_seconds, keep_seconds=settings.dedupe_ttl_seconds)
    return Delivery(gateway, inbox, max_turns=settings.max_concurrent_turns)


async def _require_no_eviction(backend: MemoryBackend, allow: bool) -> None:
    """Every gateway key has a TTL, so a `volatile-*` or `allkeys-*` policy may evict leases, dedupe records
    and inbox entries under memory pressure: refuse such a Redis unless REDIS_ALLOW_EVICTION says otherwise.

    Raises:
        ConfigError: the policy may evict and REDIS_ALLOW_EVICTION is not set.
    """
    if not isinstance(backend, RedisConnection):
        return
    policy = await backend.maxmemory_policy()
    if policy is None:
        log.warning(
            "could not check maxmemory-policy (CONFIG is not allowed on this Redis): make sure it is noeviction, "
            "or Redis may evict leases, inbox entries and conversations under memory pressure"
        )
    elif policy != "noeviction" and not allow:
        raise ConfigError(
            f"Redis maxmemory-policy is {policy}: under memory pressure Redis would evict leases, inbox entries "
            "and conversations. Set it to noeviction (CONFIG SET maxmemory-policy noeviction, or your service's "
            "parameter group), or set REDIS_ALLOW_EVICTION=true to run anyway"
        )
    elif policy != "noeviction":
        log.warning(
            "Redis maxmemory-policy is %s and REDIS_ALLOW_EVICTION=true: running, but Redis may evict leases, "
            "inbox entries and conversations under memory pressure", policy,
        )  # fmt: skip


async def run(settings: Settings, args: argparse.Namespace) -> None:
    profiles = Profiles.from_settings(settings)  # a bad file stops the start here: one line, exit 2
    # With profiles, each commit trims its conversation to its own max_messages: the inbox then reads whole
    # histories (each as long as its profile keeps it) and the gateway cuts them to the profile's.
    backend = open_backend(settings.model_copy(update={"max_messages": 0}) if settings.profiles_file else settings)
    model = model_from_settings(settings)
    async with contextlib.AsyncExitStack() as stack:
        stack.push_async_callback(backend.aclose)
        stack.push_async_callback(model.aclose)
        await require_store(backend)
        await _require_no_eviction(backend, settings.redis_allow_eviction)
        toolbox = await open_toolbox(settings)  # MCP servers start once per process, here
        stack.push_async_callback(toolbox.aclose)
        gateway = Gateway(settings, backend, model, tools=toolbox, profiles=profiles)
        delivery = build_delivery(settings, gateway)
        adapters = [build_adapter(name, settings, gateway, delivery, args) for name in dict.fromkeys(args.adapters)]
        # A terminal chat serves no probes unless HEALTH_PORT is set explicitly.
        console_only = [a.name for a in adapters] == ["console"] and "health_port" not in settings.model_fields_set
        if settings.health_port and not console_only:
            health = HealthServer(
                backend=backend, metrics=gateway.metrics, adapters=adapters,
                host=settings.health_host, port=settings.health_port,
            )  # fmt: skip
            await health.start()
            stack.push_async_callback(health.stop)
        log.info(
            "starting %s on %s with model %s", ", ".join(a.name for a in adapters), describe(backend), model.model_id
        )
        await _serve(adapters, delivery, settings.shutdown_grace_seconds, profiles)


async def _serve(
    adapters: Sequence[Adapter], delivery: Delivery, grace_seconds: float, profiles: Profiles | None = None
) -> None:
    """Run the adapters until one ends or SIGTERM/SIGINT; then let turns finish and stop them all.

    Turns still running when SHUTDOWN_GRACE_SECONDS is over give their lease back: their messages stay
    in the inbox, and a live replica (or the next process) answers them. SIGHUP reloads the profiles:
    turns running keep the profile they started with; a bad file keeps the old profiles (and says why).
    """
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    if profiles is not None:
        loop.add_signal_handler(signal.SIGHUP, profiles.reload)  # a small file: read on the loop, at once
    try:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(adapter.run(), name=adapter.name) for adapter in adapters]
            for task in tasks:
                task.add_done_callback(lambda _: stop.set())  # one adapter ending (console EOF) ends the run
            runner = group.create_task(delivery.run(), name="delivery")
            await stop.wait()
            log.info("stopping: letting turns in flight finish (up to %ss)", grace_seconds)
            await delivery.drain(grace_seconds)
            runner.cancel()
            for task in tasks:
                task.cancel()
    except* ConfigError as group_error:
        raise group_error.exceptions[0] from None  # one clear line, not an exception group
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(signum)
