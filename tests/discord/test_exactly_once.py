"""Each reply posted once: lost answers from Discord, a second writer for the same message, another process."""

from __future__ import annotations

import asyncio

from bots.discord_adapter.writer import DISCORD_MAX_CHARS, DiscordReply, reply_nonce
from core.chunking import split_message
from core.turns import IncomingMessage
from tests.discord.conftest import (
    NO_PINGS,
    WAIT_SECONDS,
    Bot,
    ProcessFactory,
    discord_adapter,
    stop_process,
    wait_until_serving,
)
from tests.fakes.discord_ids import ALICE_ID, CHANNEL_ID, GUILD_ID
from tests.fakes.openai_server import FakeOpenAI, Hang

MESSAGES = "/channels/{id}/messages"


async def user_message(bot: Bot, text: str = "hi there") -> IncomingMessage:
    """A user message the bot does not answer by itself (no mention), as the inbox would store it."""
    message_id = await bot.say(text, mention=False)
    return IncomingMessage(
        platform="discord",
        event_id=str(message_id),
        user_id=str(ALICE_ID),
        channel_id=str(CHANNEL_ID),
        text=text,
        metadata={"trigger": "mention", "channel_id": str(CHANNEL_ID), "message_id": str(message_id),
                  "guild_id": str(GUILD_ID)},
    )  # fmt: skip


def writer(bot: Bot, incoming: IncomingMessage) -> DiscordReply:
    assert bot.adapter.client is not None
    return DiscordReply(bot.adapter.client, incoming)


async def test_a_reply_whose_create_answer_was_lost_is_posted_once(bot: Bot) -> None:
    bot.fake.lose_responses("POST", MESSAGES, status=500)  # stored, then answered 500: discord.py sends again
    asked = await bot.say("hello")
    assert (await bot.next_reply()).text == "echo: hello"
    assert [m.content for m in bot.fake.sent_messages] == ["echo: hello"]
    assert len(bot.fake.lost_responses) == 1
    (again,) = bot.fake.deduplicated_sends
    assert again.message_id == bot.fake.sent_messages[0].id and again.nonce == str(reply_nonce(str(asked), 0))


async def test_a_reply_whose_connection_dropped_is_posted_once(bot: Bot) -> None:
    bot.fake.drop_responses("POST", MESSAGES)  # stored, then no answer at all: discord.py raises, the writer retries
    await bot.say("hello")
    assert (await bot.next_reply()).text == "echo: hello"
    assert [m.content for m in bot.fake.sent_messages] == ["echo: hello"]
    assert len(bot.fake.deduplicated_sends) == 1
    assert bot.fake.sent_messages[0].payload["enforce_nonce"] is True


async def test_a_second_writer_of_the_same_reply_gets_the_first_ones_message(bot: Bot) -> None:
    incoming = await user_message(bot)
    first = writer(bot, incoming)
    await first.progress("half an ans")  # then the process died before the core noted the message's ID
    second = writer(bot, incoming)  # another process, knowing nothing of it
    await second.finish("the whole answer")
    (sent,) = bot.fake.sent_messages
    assert second.posted == first.posted == [str(sent.id)]
    assert bot.fake.messages[sent.id]["content"] == "the whole answer"
    assert sent.allowed_mentions == NO_PINGS and sent.message_reference is not None


async def test_a_resumed_writer_edits_the_first_message_and_posts_the_rest_once(bot: Bot) -> None:
    incoming = await user_message(bot)
    first = writer(bot, incoming)
    await first.progress("Part 0 begins")
    final = "\n\n".join(f"Part {i}: " + "lorem " * 250 for i in range(2))
    resumed = writer(bot, incoming)
    resumed.resume(first.posted)
    await resumed.finish(final)
    again = writer(bot, incoming)  # and once more, as if that owner died before marking it delivered
    again.resume(first.posted)
    await again.finish(final)
    expected = split_message(final, DISCORD_MAX_CHARS)
    assert len(bot.fake.sent_messages) == len(expected) == 2
    assert [bot.fake.messages[m.id]["content"] for m in bot.fake.sent_messages] == expected
    assert again.posted == resumed.posted == [str(m.id) for m in bot.fake.sent_messages]


async def test_a_message_a_drained_process_left_is_answered_once_by_another(
    bot: Bot, process_factory: ProcessFactory, fake_openai: FakeOpenAI
) -> None:
    fake_openai.script(Hang())
    asked = await bot.say("are you there?")
    await asyncio.wait_for(fake_openai.received.get(), WAIT_SECONDS)  # the model has it, and hangs
    await bot.delivery.drain(0)  # SIGTERM with no grace left: the lease goes back, the message stays
    assert bot.fake.posted.empty()  # nothing said meanwhile: no "restarting", no half answer

    other = await process_factory(bot.settings)  # a replica on the same store: its own gateway and delivery
    adapter = discord_adapter(bot.settings, other)  # and its own Discord client
    running = asyncio.create_task(adapter.run())
    try:
        await wait_until_serving(adapter, bot.fake, running)
        reply = await other.delivery.next_reply(timeout=10)
        assert reply.incoming.event_id == str(asked) and reply.text == "echo: are you there?"
        (sent,) = bot.fake.sent_messages
        assert sent.content == "echo: are you there?" and sent.message_reference is not None
        assert sent.message_reference["message_id"] == asked
        assert await bot.history() == ["are you there?", "echo: are you there?"]  # stored once
        assert len(fake_openai.requests) == 2 and bot.delivery.replies.empty()
    finally:
        await stop_process(other)
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
        fake_openai.release()
