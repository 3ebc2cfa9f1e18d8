"""Slack: slack-bolt's AsyncApp on the shared gateway (Socket Mode or signed HTTP)."""

from bots.slack.adapter import SlackAdapter

__all__ = ["SlackAdapter"]
