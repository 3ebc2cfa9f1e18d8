"""Slack: slack-bolt's AsyncApp on the shared gateway (Socket Mode or signed HTTP), issue #5."""

from bots.slack.adapter import SlackAdapter
from bots.slack.turns import TurnOutcome

__all__ = ["SlackAdapter", "TurnOutcome"]
