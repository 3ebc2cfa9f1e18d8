"""The Discord adapter (issue #6). Named `discord_adapter` so it never shadows the `discord` library."""

from bots.discord_adapter.adapter import DiscordAdapter

__all__ = ["DiscordAdapter"]
