"""Who the bot answers (DMs, mentions, replies to it), with which memory, and who it ignores."""

from __future__ import annotations

import asyncio

from bots.discord_adapter.incoming import PLATFORM
from core.turns import IncomingMessage
from tests.discord.conftest import NO_PINGS, Bot, BotFactory, SettingsFactory, open_fake
from tests.fakes.discord_api import FakeDiscord
from tests.fakes.discord_ids import (
    ALICE_ID,
    BOB_ID,
    BOT_ID,
    CHANNEL_ID,
    DM_CHANNEL_ID,
    GUILD_ID,
    OTHER_BOT_ID,
    OTHER_CHANNEL_ID,
    THREAD_ID,
)
from tests.fakes.openai_server import FakeOpenAI


async def test_guild_mention_is_answered_with_a_reply_that_pings_nobody(bot: Bot, fake_openai: FakeOpenAI) -> None:
    asked = await bot.say("hello there")
    posted = await bot.fake.next_message()
    assert posted.content == "echo: hello there"  # the model never saw the bot's own mention
    assert fake_openai.requests[-1].messages[-1] == {"role": "user", "content": "hello there"}
    assert posted.channel_id == CHANNEL_ID
    assert posted.message_reference is not None and posted.message_reference["message_id"] == asked
    assert posted.allowed_mentions == NO_PINGS and posted.pinged_user_ids == ()
    incoming = (await bot.next_reply()).incoming
    assert incoming.platform == PLATFORM and incoming.event_id == str(asked)
    assert incoming.user_id == str(ALICE_ID) and incoming.channel_id == str(CHANNEL_ID)
    assert incoming.metadata == {
        "trigger": "mention", "channel_id": str(CHANNEL_ID), "message_id": str(asked), "guild_id": str(GUILD_ID),
    }  # fmt: skip
    assert IncomingMessage.from_json(incoming.to_json()) == incoming  # what the inbox keeps, whole
    assert not incoming.is_dm and incoming.workspace_id == str(GUILD_ID)
    assert bot.gateway.thread_id(incoming) == f"user_{ALICE_ID}_session_{CHANNEL_ID}"
    assert await bot.history() == ["hello there", "echo: hello there"]


async def test_legacy_nickname_mention_is_stripped_too(bot: Bot) -> None:
    await bot.fake.send_message_create(
        channel_id=CHANNEL_ID, author_id=ALICE_ID, content=f"hey <@!{BOT_ID}>, you there?", mentions=[BOT_ID]
    )
    assert (await bot.fake.next_message()).content == "echo: hey , you there?"


async def test_direct_message_is_answered_without_a_mention(bot: Bot) -> None:
    asked = await bot.say("psst", channel_id=DM_CHANNEL_ID, mention=False)
    posted = await bot.fake.next_message()
    assert posted.channel_id == DM_CHANNEL_ID and posted.content == "echo: psst"
    assert posted.allowed_mentions == NO_PINGS
    incoming = (await bot.next_reply()).incoming
    assert incoming.metadata == {
        "trigger": "dm", "channel_id": str(DM_CHANNEL_ID), "message_id": str(asked), "is_dm": "1",
    }  # fmt: skip
    assert incoming.is_dm and incoming.workspace_id is None
    assert await bot.history(channel_id=DM_CHANNEL_ID) == ["psst", "echo: psst"]


async def test_guild_message_without_mention_is_ignored_but_a_reply_to_the_bot_is_answered(bot: Bot) -> None:
    await bot.say("first question")
    ours = await bot.fake.next_message()
    await bot.say("just chatting with friends", mention=False)
    follow_up = await bot.say("and a follow-up", mention=False, message_reference=ours.id, reply_ping=False)
    posted = await bot.fake.next_message()
    assert posted.content == "echo: and a follow-up"
    assert posted.message_reference is not None and posted.message_reference["message_id"] == follow_up
    handled = [(await bot.next_reply()).incoming for _ in range(2)]
    assert [i.text for i in handled] == ["first question", "and a follow-up"]  # the unmentioned one never got there
    assert handled[1].metadata["trigger"] == "reply"
    assert await bot.history() == ["first question", "echo: first question", "and a follow-up", "echo: and a follow-up"]


async def test_a_reply_to_another_users_message_is_ignored(bot: Bot) -> None:
    bobs = await bot.say("bob says hi", author_id=BOB_ID, mention=False)
    await bot.say("hi bob", mention=False, message_reference=bobs)
    await bot.say("now you")
    assert (await bot.fake.next_message()).content == "echo: now you"
    assert (await bot.next_reply()).incoming.text == "now you"


async def test_a_discord_thread_has_its_own_memory(bot: Bot) -> None:
    await bot.say("in the channel")
    await bot.next_reply()
    await bot.say("in the thread", channel_id=THREAD_ID)
    await bot.next_reply()
    assert [m.channel_id for m in bot.fake.sent_messages] == [CHANNEL_ID, THREAD_ID]
    assert await bot.history(channel_id=THREAD_ID) == ["in the thread", "echo: in the thread"]
    assert await bot.history(channel_id=CHANNEL_ID) == ["in the channel", "echo: in the channel"]


async def test_two_users_in_one_channel_keep_separate_memories(bot: Bot, fake_openai: FakeOpenAI) -> None:
    await bot.say("my name is Alice")
    await bot.next_reply()  # the turn is stored before its reply is posted
    await bot.say("what is my name?", author_id=BOB_ID)
    await bot.next_reply()
    sent_for_bob = fake_openai.requests[-1].messages
    assert [m["content"] for m in sent_for_bob if m["role"] != "system"] == ["what is my name?"]
    assert await bot.history(ALICE_ID) == ["my name is Alice", "echo: my name is Alice"]
    assert await bot.history(BOB_ID) == ["what is my name?", "echo: what is my name?"]


async def test_memory_survives_a_restart_of_the_bot(start_bot: BotFactory, fake_openai: FakeOpenAI) -> None:
    async with start_bot() as first:
        await first.say("remember the number 42")
        await first.next_reply()
    async with start_bot() as second:  # a new client, gateway and Redis pool; the same Redis and prefix
        await second.say("which number?")
        await second.next_reply()
        assert [m.content for m in second.fake.sent_messages] == ["echo: remember the number 42", "echo: which number?"]
    assert [m["content"] for m in fake_openai.requests[-1].messages if m["role"] != "system"] == [
        "remember the number 42",
        "echo: remember the number 42",
        "which number?",
    ]


async def test_an_event_replayed_after_a_resume_gets_one_reply(start_bot: BotFactory) -> None:
    # Without echoes of the bot's own posts, the user's message is the last dispatch, so rewind=1 replays it.
    async with open_fake(echo_bot_messages=False) as fake, start_bot(on=fake) as bot:
        asked = await bot.say("only once please")
        assert (await fake.next_message()).content == "echo: only once please"
        assert (await bot.delivery.next_received())[1] == "taken"
        await bot.next_reply()

        await fake.request_reconnect(rewind=1)
        await fake.wait_for_resume()
        replayed, outcome = await bot.delivery.next_received()
        assert replayed.event_id == str(asked) and outcome == "duplicate"  # the inbox knew the message key
        assert fake.resume_count == 1 and fake.identify_count == 1 and fake.posted.empty()
        assert await bot.history() == ["only once please", "echo: only once please"]
        assert bot.adapter.connected


async def test_other_bots_and_the_bots_own_messages_are_ignored(bot: Bot) -> None:
    await bot.say("I am a bot", author_id=OTHER_BOT_ID)
    await bot.say("talking to myself", author_id=BOT_ID)
    await bot.say("I am human")
    await bot.fake.next_message()  # its echo reaches the client as the bot's own MESSAGE_CREATE
    await bot.say("still human")
    await bot.fake.next_message()
    handled = [(await bot.delivery.next_received())[0].text for _ in range(2)]
    assert handled == ["I am human", "still human"]
    assert bot.delivery.received.empty()
    assert bot.fake.posted.empty()


async def test_other_bots_are_answered_with_discord_allow_bots(start_bot: BotFactory) -> None:
    async with start_bot(discord_allow_bots=True) as bot:
        await bot.say("beep", author_id=OTHER_BOT_ID)
        assert (await bot.fake.next_message()).content == "echo: beep"
        await bot.say("echo to myself", author_id=BOT_ID)  # the bot's own messages stay ignored
        await bot.say("after")
        assert (await bot.fake.next_message()).content == "echo: after"
        received = [(await bot.delivery.next_received())[0] for _ in range(2)]
        assert [(m.text, m.from_bot) for m in received] == [("beep", True), ("after", False)]


async def test_two_bots_cannot_talk_forever(start_bot: BotFactory) -> None:
    async with start_bot(discord_allow_bots=True, memory_scope="channel", max_bot_turns=2) as bot:
        for i in range(2):
            await bot.say(f"beep {i}", author_id=OTHER_BOT_ID)
            assert (await bot.fake.next_message()).content == f"echo: beep {i}"
        await bot.say("beep 2", author_id=OTHER_BOT_ID)
        received = [(await bot.delivery.next_received())[0].text for _ in range(3)]
        assert received == ["beep 0", "beep 1", "beep 2"]  # the third is in the inbox before the person writes
        await bot.say("a human")
        assert (await bot.fake.next_message()).content == "echo: a human"
        assert bot.fake.posted.empty()  # the third beep got nothing


async def test_typed_commands_work_in_dms_and_mentions(bot: Bot) -> None:
    await bot.say("hello", channel_id=DM_CHANNEL_ID, mention=False)
    await bot.fake.next_message()
    await bot.say("help", channel_id=DM_CHANNEL_ID, mention=False)
    assert "reset" in (await bot.fake.next_message()).content
    await bot.say("memory", channel_id=DM_CHANNEL_ID, mention=False)
    assert (await bot.fake.next_message()).content.startswith("I remember 2 messages")
    await bot.say("hello")
    await bot.fake.next_message()
    await bot.say("reset")
    assert (await bot.fake.next_message()).content.startswith("Done: I've forgotten")
    assert await bot.history() == []
    assert await bot.history(channel_id=DM_CHANNEL_ID) == ["hello", "echo: hello"]


async def test_channel_allow_list_admits_its_channels_and_their_threads_only(
    start_bot: BotFactory, settings_for: SettingsFactory, fake: FakeDiscord
) -> None:
    # DISCORD_CHANNEL_IDS is not a Settings field yet: the adapter reads it if present, as a string or a list.
    settings = settings_for(fake).model_copy(update={"discord_channel_ids": str(CHANNEL_ID)})
    async with start_bot(settings=settings) as bot:
        await bot.say("elsewhere", channel_id=OTHER_CHANNEL_ID)
        await bot.say("in the thread", channel_id=THREAD_ID)
        assert (await bot.fake.next_message()).channel_id == THREAD_ID
        await bot.say("here")
        assert (await bot.fake.next_message()).channel_id == CHANNEL_ID
        await bot.say("a DM", channel_id=DM_CHANNEL_ID, mention=False)  # no guild list: DMs are open by default
        assert (await bot.fake.next_message()).channel_id == DM_CHANNEL_ID
        handled = [(await bot.delivery.next_received())[0].text for _ in range(3)]
        assert handled == ["in the thread", "here", "a DM"]


async def test_guild_allow_list_excludes_other_guilds(
    start_bot: BotFactory, settings_for: SettingsFactory, fake: FakeDiscord
) -> None:
    settings = settings_for(fake).model_copy(update={"discord_guild_ids": [GUILD_ID + 1], "discord_dm_policy": "open"})
    async with start_bot(settings=settings) as bot:
        await bot.say("anyone?")
        await bot.say("a DM", channel_id=DM_CHANNEL_ID, mention=False)  # DMs opened explicitly (test_access.py)
        assert (await bot.fake.next_message()).channel_id == DM_CHANNEL_ID
        assert (await bot.delivery.next_received())[0].text == "a DM"
        assert bot.delivery.received.empty()
        # Slash commands were registered in the allowed guild only (none of which the bot is in here).
        assert not bot.fake.global_commands


async def test_messages_in_parallel_channels_are_all_answered(bot: Bot) -> None:
    await asyncio.gather(
        bot.say("one", channel_id=CHANNEL_ID), bot.say("two", channel_id=THREAD_ID), bot.say("three", author_id=BOB_ID)
    )
    contents = sorted([(await bot.fake.next_message()).content for _ in range(3)])
    assert contents == ["echo: one", "echo: three", "echo: two"]
