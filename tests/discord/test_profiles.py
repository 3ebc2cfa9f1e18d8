"""Profiles on Discord: a role allow-list, `respond: always` and `never`, matched by channel name or ID."""

from __future__ import annotations

from pathlib import Path

from tests.discord.conftest import BotFactory
from tests.fakes.discord_api import FakeDiscord
from tests.fakes.discord_ids import ALICE_ID, BOB_ID, CHANNEL_ID, GUILD_ID, OTHER_CHANNEL_ID, ROLE_ID, THREAD_ID

HELPERS_ROLE = ROLE_ID + 1


def profiles(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "profiles.yaml"
    path.write_text(text)
    return path


async def test_a_role_allow_list_answers_members_with_the_role_and_ignores_the_others(
    start_bot: BotFactory, fake: FakeDiscord, tmp_path: Path
) -> None:
    fake.add_role(GUILD_ID, HELPERS_ROLE, "helpers")
    fake.set_member_roles(GUILD_ID, ALICE_ID, [HELPERS_ROLE])
    path = profiles(tmp_path, f"profiles:\n  - name: helpers-only\n    match: {{guild: {GUILD_ID}}}\n"
                              f"    allow: [{HELPERS_ROLE}]\n")  # fmt: skip
    async with start_bot(profiles_file=path) as bot:
        await bot.say("may I?", author_id=BOB_ID)
        bob, outcome = await bot.delivery.next_received()
        assert (bob.user_id, outcome) == (str(BOB_ID), "ignored")
        assert "role_ids" not in bob.metadata or str(HELPERS_ROLE) not in bob.metadata["role_ids"]
        await bot.say("I may", author_id=ALICE_ID)
        alice, outcome = await bot.delivery.next_received()
        assert outcome == "taken" and str(HELPERS_ROLE) in alice.metadata["role_ids"].split()
        assert (await bot.next_reply()).text == "echo: I may"
        assert [m.content for m in bot.fake.sent_messages] == ["echo: I may"]


async def test_respond_always_answers_unmentioned_messages_in_that_channel_only(
    start_bot: BotFactory, tmp_path: Path
) -> None:
    path = profiles(tmp_path, "profiles:\n  - name: open\n    match: {channel: '#rand*'}\n    respond: always\n")
    async with start_bot(profiles_file=path) as bot:
        await bot.say("not for you", channel_id=CHANNEL_ID, mention=False)
        await bot.say("chatting away", channel_id=OTHER_CHANNEL_ID, mention=False)
        incoming, outcome = await bot.delivery.next_received()  # the first one never reached the core
        assert (incoming.text, outcome) == ("chatting away", "taken")
        assert incoming.metadata["channel_name"] == "random"
        posted = await bot.fake.next_message()
        assert (posted.channel_id, posted.content) == (OTHER_CHANNEL_ID, "echo: chatting away")
        assert bot.delivery.received.empty()


async def test_respond_never_ignores_even_mentions_and_a_thread_follows_its_parents_profile(
    start_bot: BotFactory, tmp_path: Path
) -> None:
    path = profiles(
        tmp_path, f"profiles:\n  - name: muted\n    match: {{channel: '{CHANNEL_ID}'}}\n    respond: never\n"
    )
    async with start_bot(profiles_file=path) as bot:
        await bot.say("hello?", channel_id=CHANNEL_ID)
        assert (await bot.delivery.next_received())[1] == "ignored"
        await bot.say("in the thread?", channel_id=THREAD_ID)
        incoming, outcome = await bot.delivery.next_received()
        assert outcome == "ignored" and incoming.metadata["parent_channel_id"] == str(CHANNEL_ID)
        await bot.say("over here", channel_id=OTHER_CHANNEL_ID)
        assert (await bot.next_reply()).text == "echo: over here"


async def test_a_slash_command_from_a_deny_listed_user_is_turned_away_briefly_and_never_run(
    start_bot: BotFactory, tmp_path: Path
) -> None:
    path = profiles(tmp_path, f"profiles:\n  - name: no-bob\n    match: {{}}\n    deny: [{BOB_ID}]\n")
    async with start_bot(profiles_file=path) as bot:
        await bot.fake.send_interaction("reset", channel_id=CHANNEL_ID, user_id=BOB_ID)
        response = await bot.fake.next_interaction_response()
        assert response.data is not None and response.data.get("content") == "I'm not enabled in this channel."
        assert bot.delivery.received.empty()
        await bot.fake.send_interaction("memory", channel_id=CHANNEL_ID, user_id=ALICE_ID)
        assert (await bot.delivery.next_received())[0].user_id == str(ALICE_ID)
