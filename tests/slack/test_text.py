"""What the bot posts: crowd mentions defused, parts that fit, progress that never half-sends a mention."""

from __future__ import annotations

import re

from bots.slack.text import MAX_PART_CHARS, fallback_text, message_parts, neutralise, preview, stable_prefix

CROWD = re.compile(r"<!(channel|here|everyone|group|subteam)|@(channel|here|everyone)", re.IGNORECASE)


def test_every_crowd_mention_is_neutralised() -> None:
    text = "<!channel> <!here|here> <!everyone> <!subteam^S123|@devs> <!subteam^S9> @channel @Here @everyone!"
    out = neutralise(text)
    assert CROWD.search(out) is None
    assert out.replace("\u200d", "") == "@channel @here @everyone @devs @group @channel @Here @everyone!"


PING = re.compile(r"<@[UW]|<!subteam", re.IGNORECASE)


def test_user_and_usergroup_mentions_are_neutralised_by_default() -> None:
    text = "ask <@U123>, <@W9|bob> or <!subteam^S1|@devs>; mail ops@example.com"
    out = neutralise(text)
    assert PING.search(out) is None
    assert out.replace("\u200d", "") == "ask @U123, @bob or @devs; mail ops@example.com"
    assert PING.search(fallback_text(text)) is None
    assert all(PING.search(part) is None for part in message_parts(text))


def test_slack_allow_user_mentions_lets_user_and_group_mentions_through_but_never_a_crowd() -> None:
    text = "ask <@U123> and <!subteam^S1|@devs>, not <!here>"
    out = neutralise(text, allow_user_mentions=True)
    assert "<@U123>" in out and "<!subteam^S1|@devs>" in out and CROWD.search(out.replace("<!subteam", "")) is None
    assert message_parts(text, allow_user_mentions=True) == [out]
    assert "<@U123>" in fallback_text(text, allow_user_mentions=True)


def test_fallback_drops_markdown_and_cannot_rebuild_a_mention() -> None:
    text = "# Title\n**bold** and `code` and [docs](https://x.test)\n```py\nprint(1)\n```\n@**channel**"
    out = fallback_text(text)
    assert out.startswith("Title\nbold and code and docs (https://x.test)\nprint(1)\n")
    assert CROWD.search(out) is None


def test_stable_prefix_holds_back_the_word_and_the_tag_being_written() -> None:
    assert stable_prefix("hello @chan") == "hello "
    assert stable_prefix("see <!subteam^S1|@my team") == "see "
    assert stable_prefix("one") == ""
    assert stable_prefix("a <@U1> b ") == "a <@U1> b "


def test_parts_fit_and_keep_code_blocks_closed() -> None:
    code = "```python\n" + "\n".join(f"print({i})" for i in range(600)) + "\n```"
    text = "intro\n\n" + code + "\n\n" + ("word " * 1500).strip()
    parts = message_parts(text)
    assert len(parts) > 2
    assert all(len(part) <= MAX_PART_CHARS for part in parts)
    assert all(part.count("```") % 2 == 0 for part in parts)


def test_too_many_parts_end_with_a_truncation_note() -> None:
    parts = message_parts("para\n\n" * 20_000, max_parts=3)
    assert len(parts) == 3 and "truncated" in parts[-1]


def test_preview_is_cut_below_the_limit() -> None:
    assert preview("short") == "short"
    long = preview("word " * 2000, limit=100)
    assert len(long) <= 100 and long.endswith(" …")
