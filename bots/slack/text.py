"""Text the bot posts on Slack: mentions defused, Markdown in a `markdown` block, parts that fit.

Rule not to break: everything posted (final text, progress, fallbacks, ephemeral answers) passes
through `neutralise` first, so neither the model nor a user message it quotes back can notify a
crowd (`<!here>`, `@channel`, ...) or, unless SLACK_ALLOW_USER_MENTIONS, a person or a user group
(`<@U…>`, `<!subteam^…>`): those become `@name` text that looks alike and pings nobody.
"""

from __future__ import annotations

__all__ = [
    "MAX_PARTS",
    "MAX_PART_CHARS",
    "fallback_text",
    "markdown_blocks",
    "message_parts",
    "neutralise",
    "preview",
    "stable_prefix",
]

import re
from typing import Any

from core.chunking import split_message

# Slack renders text up to 40,000 characters and `markdown` blocks up to 12,000 per message, but
# advises keeping a message under 4,000: past that it folds behind "Show more" and notifications cut.
MAX_PART_CHARS = 4_000
MAX_PARTS = 10  # about 40,000 characters; a longer reply ends with chunking's "truncated" note

_ZWJ = "\u200d"  # after the "@": looks the same, but Slack no longer sees a mention
_SPECIAL_MENTION = re.compile(r"<!(channel|here|everyone|group)(?:\|[^>]*)?>", re.IGNORECASE)
_GROUP_MENTION = re.compile(r"<!subteam\^[^>|]*(?:\|@?([^>]*))?>")
_USER_MENTION = re.compile(r"<@([UW][A-Z0-9]+)(?:\|@?([^>]*))?>")
_PLAIN_MENTION = re.compile(r"@(?=channel|here|everyone)", re.IGNORECASE)

_FENCE_LINE = re.compile(r"^\s*(```|~~~)[^\n]*$\n?", re.MULTILINE)
_BOLD = re.compile(r"(\*\*|__)(.+?)\1")
_CODE_SPAN = re.compile(r"`([^`\n]+)`")
_HEADING = re.compile(r"^#{1,6}\s+", re.MULTILINE)
_LINK = re.compile(r"\[([^\]\n]+)\]\((\S+?)\)")


def neutralise(text: str, *, allow_user_mentions: bool = False) -> str:
    """`<!here>`, plain `@channel` and, unless `allow_user_mentions`, `<@U…>` and `<!subteam^…>`
    rendered as text that notifies nobody (`@name`, or `@U123` where Slack gave no name)."""
    text = _SPECIAL_MENTION.sub(lambda m: f"@{_ZWJ}{m.group(1).lower()}", text)
    if not allow_user_mentions:
        text = _GROUP_MENTION.sub(lambda m: f"@{_ZWJ}{m.group(1) or 'group'}", text)
        text = _USER_MENTION.sub(lambda m: f"@{_ZWJ}{m.group(2) or m.group(1)}", text)
    return _PLAIN_MENTION.sub(f"@{_ZWJ}", text)


def message_parts(
    text: str, limit: int = MAX_PART_CHARS, max_parts: int = MAX_PARTS, *, allow_user_mentions: bool = False
) -> list[str]:
    """The neutralised reply as the messages to post, split between paragraphs, never inside code."""
    return split_message(neutralise(text, allow_user_mentions=allow_user_mentions), limit, max_parts=max_parts)


def markdown_blocks(part: str) -> list[dict[str, Any]]:
    """Slack renders the model's Markdown itself in a `markdown` block (no mrkdwn conversion)."""
    return [{"type": "markdown", "text": part}]


def fallback_text(part: str, *, allow_user_mentions: bool = False) -> str:
    """Plain text for notifications and old clients: the Markdown punctuation dropped."""
    text = _FENCE_LINE.sub("", part)
    text = _BOLD.sub(r"\2", text)
    text = _CODE_SPAN.sub(r"\1", text)
    text = _HEADING.sub("", text)
    text = _LINK.sub(r"\1 (\2)", text)
    # Dropping punctuation can join "@" to "channel" again ("@**channel**").
    return neutralise(text, allow_user_mentions=allow_user_mentions).strip() or part


def stable_prefix(text: str) -> str:
    """The part of a growing text that later text cannot change: up to its last whitespace.

    Streaming only this much means a mention still being written ("@chan", "<!ev") is neutralised
    as a whole once complete, never sent half-way and appended to.
    """
    end = max(text.rfind(" "), text.rfind("\n"))
    prefix = text[: end + 1] if end >= 0 else ""
    opened = prefix.rfind("<")
    if opened > prefix.rfind(">"):
        prefix = prefix[:opened]
    return prefix


def preview(text: str, limit: int = MAX_PART_CHARS) -> str:
    """What a progress message shows: the text so far, cut before `limit` with an ellipsis."""
    if len(text) <= limit:
        return text
    cut = text[: limit - 2]
    space = cut.rfind(" ")
    return f"{cut[:space] if space > 0 else cut} …"
