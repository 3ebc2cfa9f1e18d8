"""The pure parts of answering: allow-list settings and stripping the bot's mention."""

from __future__ import annotations

import pytest

from bots.discord_adapter.incoming import AnswerPolicy, parse_id_list, strip_mention
from core.errors import ConfigError

BOT = 42


@pytest.mark.parametrize(
    ("value", "expected"),
    [(None, set()), ("", set()), ("1, 2 3", {1, 2, 3}), ([1, "2"], {1, 2}), (7, {7}), ((), set())],
)
def test_id_lists_accept_strings_ints_and_lists(value: object, expected: set[int]) -> None:
    assert parse_id_list("DISCORD_GUILD_IDS", value) == expected


@pytest.mark.parametrize("value", ["1,abc", ["x"], 1.5])
def test_a_bad_id_list_names_the_setting(value: object) -> None:
    with pytest.raises(ConfigError, match=r"^DISCORD_CHANNEL_IDS: "):
        parse_id_list("DISCORD_CHANNEL_IDS", value)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (f"<@{BOT}> hello", "hello"),
        (f"<@!{BOT}>reset", "reset"),
        (f"hey <@{BOT}> how are you", "hey how are you"),
        (f"<@{BOT}>", ""),
        (f"<@{BOT}> ask <@7> about it", "ask <@7> about it"),
        (f"<@&9> <@{BOT}> hi", "hi"),
        (f"<@{BOT}> line one\nline two", "line one\nline two"),
    ],
)
def test_only_the_bots_own_mentions_are_stripped(content: str, expected: str) -> None:
    assert strip_mention(content, BOT, role_id=9) == expected


def test_allow_lists_apply_to_guilds_only_and_threads_count_as_their_parent() -> None:
    class Thread:
        id, parent_id = 5, 4

    policy = AnswerPolicy(guild_ids=frozenset({1}), channel_ids=frozenset({4}))
    assert policy.allows(None, object())  # a DM
    assert policy.allows(1, Thread())
    assert not policy.allows(2, Thread())
    assert AnswerPolicy().allows(2, object())
