"""Slack payloads -> SlackMessage: what is answered, what the core sees, where the reply goes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bots.slack.incoming import message_from_command, message_from_event
from tests.fakes.slack_api import (
    app_mention,
    bot_message,
    channel_message,
    event_callback,
    im_message,
    slash_command_payload,
)


def convert(event: dict[str, Any], *, allow_bots: bool = False, team_id: str = "T1") -> Any:
    return message_from_event(
        event_callback(event, team_id=team_id), bot_user_id="UBOT", bot_id="BBOT", allow_bots=allow_bots
    )


def test_mention_in_channel_is_answered_in_the_mentions_thread_without_the_bot_mention() -> None:
    event = app_mention("what about <@U2> and a &lt; b &amp;&amp; c?", user="U1", channel="C1")
    message = convert(event)
    assert message.incoming.text == "what about <@U2> and a < b && c?"
    assert (message.channel, message.reply_thread_ts, message.ts) == ("C1", event["ts"], event["ts"])
    assert message.incoming.user_id == "U1" and message.incoming.channel_id == "T1-C1"
    assert message.incoming.turn_key == f"T1:C1:{event['ts']}"
    assert message.incoming.thread_ref == event["ts"]
    assert not message.is_dm and not message.needs_participation


def test_mention_in_the_middle_of_text_is_removed_cleanly() -> None:
    assert convert(app_mention("hey <@UBOT> how are you?")).incoming.text == "hey how are you?"
    assert convert(app_mention("<@UBOT|bot> hi")).incoming.text == "hi"


def test_mention_inside_a_thread_replies_in_that_thread() -> None:
    message = convert(app_mention("more", thread_ts="1700000000.000001"))
    assert message.reply_thread_ts == "1700000000.000001"
    assert message.incoming.thread_ref == "1700000000.000001"
    assert message.participation_flag == "slack:thread:T1:C1:1700000000.000001"


def test_direct_message_replies_at_the_top_level_of_the_dm() -> None:
    message = convert(im_message("hi", channel="D9"))
    assert message.is_dm and message.reply_thread_ts is None and message.participation_flag is None
    assert message.incoming.channel_id == "T1-D9" and message.incoming.thread_ref is None


def test_thread_message_without_mention_needs_the_bot_to_take_part() -> None:
    message = convert(channel_message("follow-up", thread_ts="1700000000.000001"))
    assert message.needs_participation
    assert message.participation_flag == "slack:thread:T1:C1:1700000000.000001"


def test_top_level_channel_message_without_mention_is_marked_for_respond_always_only() -> None:
    message = convert(channel_message("just chatting"))
    assert message.top_level and message.needs_participation  # the listener answers it only under `always`
    assert not convert(channel_message("follow-up", thread_ts="1700000000.000001")).top_level


def test_the_same_channel_in_two_workspaces_is_two_conversations() -> None:
    first, second = convert(app_mention("x"), team_id="T1"), convert(app_mention("x"), team_id="T2")
    assert first.incoming.channel_id != second.incoming.channel_id


@pytest.mark.parametrize(
    "subtype", ["message_changed", "message_deleted", "channel_join", "channel_topic", "message_replied"]
)
def test_edits_deletions_and_channel_events_are_ignored(subtype: str) -> None:
    event = im_message("edited")
    event["subtype"] = subtype
    assert convert(event) is None


def test_own_messages_are_ignored_even_when_bots_are_allowed() -> None:
    assert convert(bot_message("mine", channel_type="im"), allow_bots=True) is None


def test_other_bots_are_ignored_unless_allowed() -> None:
    other = bot_message("beep", bot_user_id="UOTHER", bot_id="BOTHER", channel_type="im")
    assert convert(other) is None
    assert convert(other, allow_bots=True).incoming.user_id == "UOTHER"
    assert convert(other, allow_bots=True).incoming.from_bot and not convert(im_message("hi")).incoming.from_bot


def test_file_share_and_thread_broadcast_are_user_messages() -> None:
    for subtype in ("file_share", "thread_broadcast"):
        event = im_message("look")
        event["subtype"] = subtype
        assert convert(event).incoming.text == "look"


def test_reset_command_becomes_the_gateway_command_for_callers_channel() -> None:
    incoming = message_from_command(slash_command_payload("/reset", user_id="U7", channel_id="C3", team_id="T2"))
    assert incoming is not None
    assert (incoming.text, incoming.user_id, incoming.channel_id) == ("reset", "U7", "T2-C3")


def test_unknown_command_is_not_converted() -> None:
    assert message_from_command(slash_command_payload("/ask", "why")) is None


def test_manifest_asks_for_what_the_adapter_uses() -> None:
    manifest = (Path(__file__).parents[2] / "slack-app-manifest.yaml").read_text()
    items = {line.split("#")[0].strip().removeprefix("- ") for line in manifest.splitlines()}
    scopes = {
        "app_mentions:read",
        "channels:history",
        "groups:history",
        "im:history",
        "chat:write",
        "reactions:write",
        "users:read",
    }
    events = {"app_mention", "message.channels", "message.groups", "message.im"}
    assistant = {"assistant_view:", "assistant:write", "assistant_thread_started", "assistant_thread_context_changed"}
    commands = {"commands", "command: /reset", "command: /usage", "socket_mode_enabled: true"}
    assert scopes | events | assistant | commands <= items
