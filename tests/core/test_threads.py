"""Thread IDs: readable for plain IDs, reversible and collision-free for everything else."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.threads import channel_thread_id, parse_thread_id, platform_thread_id, thread_id_for

ids = st.text(min_size=1, max_size=40)


def test_plain_ids_read_as_they_are() -> None:
    assert thread_id_for("U123", "C0456.x-y") == "user_U123_session_C0456.x-y"


@pytest.mark.parametrize("user,channel", [("a_b", "c"), ("a", "b_c"), ("a:b", "{c}"), ("é 🎉", "c h")])
def test_special_characters_are_escaped_and_reversible(user: str, channel: str) -> None:
    thread_id = thread_id_for(user, channel)
    assert "{" not in thread_id and "}" not in thread_id and " " not in thread_id
    assert thread_id.count("_") == 3
    assert parse_thread_id(thread_id) == (user, channel)


def test_underscore_cannot_forge_the_separator() -> None:
    assert thread_id_for("a_session_b", "c") != thread_id_for("a", "b_session_c")


@given(ids, ids)
def test_parse_inverts_thread_id_for(user: str, channel: str) -> None:
    assert parse_thread_id(thread_id_for(user, channel)) == (user, channel)


@given(ids, ids, ids, ids)
def test_different_pairs_never_share_an_id(u1: str, c1: str, u2: str, c2: str) -> None:
    if (u1, c1) != (u2, c2):
        assert thread_id_for(u1, c1) != thread_id_for(u2, c2)


@pytest.mark.parametrize("user,channel", [("", "c"), ("u", "")])
def test_empty_ids_are_rejected(user: str, channel: str) -> None:
    with pytest.raises(ValueError, match="empty"):
        thread_id_for(user, channel)


@pytest.mark.parametrize("bad", ["user_a", "session_b", "user_a_session_", "user_a%41_session_b", "xuser_a_session_b"])
def test_parse_rejects_other_forms(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_thread_id(bad)


def test_other_scopes_have_their_own_forms() -> None:
    assert channel_thread_id("C1") == "channel_C1"
    assert platform_thread_id("C1", "1700000000.000100") == "channel_C1_thread_1700000000.000100"
