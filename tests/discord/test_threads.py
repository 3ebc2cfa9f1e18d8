"""DISCORD_AUTO_THREAD: a mention opens a thread on itself, and the conversation goes on there without mentions."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from core.turns import IncomingMessage
from tests.discord.conftest import (
    NO_PINGS,
    WAIT_SECONDS,
    Bot,
    BotFactory,
    ProcessFactory,
    discord_adapter,
    pings_nobody,
    stop_process,
    wait_until_serving,
)
from tests.fakes.discord_api import MAX_THREAD_NAME_LENGTH
from tests.fakes.discord_ids import ALICE_ID, BOB_ID, CHANNEL_ID, THREAD_ID
from tests.fakes.openai_server import FakeOpenAI, Hang
from tests.support.redis_proc import free_port

THREADS = "/channels/{id}/messages/{id}/threads"


@pytest.fixture
async def bot(start_bot: BotFactory) -> AsyncIterator[Bot]:
    async with start_bot(discord_auto_thread=True) as bot:
        yield bot


def user_texts(fake_openai: FakeOpenAI) -> list[str]:
    return [m["content"] for m in fake_openai.requests[-1].messages if m["role"] == "user"]


async def test_a_mention_opens_a_thread_named_from_the_question_and_is_answered_there(bot: Bot) -> None:
    asked = await bot.say("How do I rotate the staging password?\nWe use Vault.")
    reply = await bot.next_reply()

    assert bot.fake.created_threads == [asked]  # Discord gives the thread the message's ID
    assert bot.fake.requests_to("POST", f"/channels/{CHANNEL_ID}/messages/{asked}/threads")[0].body == {
        "name": "How do I rotate the staging password?", "auto_archive_duration": 1440, "rate_limit_per_user": None,
    }  # fmt: skip
    (sent,) = bot.fake.sent_messages
    assert sent.channel_id == asked and sent.content == "echo: How do I rotate the staging password?\nWe use Vault."
    assert sent.message_reference is None and pings_nobody(sent.allowed_mentions)  # the question heads the thread
    assert bot.fake.typing_calls and set(bot.fake.typing_calls) == {
        asked
    }  # typing shows in the thread, not the channel
    assert (reply.incoming.channel_id, reply.incoming.thread_ref) == (str(asked), str(asked))


async def test_the_thread_goes_on_without_mentions_in_one_conversation(bot: Bot, fake_openai: FakeOpenAI) -> None:
    asked = await bot.say("my name is Alice")
    await bot.next_reply()
    await bot.say("what is my name?", channel_id=asked, mention=False)
    follow_up = await bot.next_reply()

    assert follow_up.text == "echo: what is my name?"
    assert user_texts(fake_openai) == ["my name is Alice", "what is my name?"]  # the question heads the thread's memory
    assert [m.channel_id for m in bot.fake.sent_messages] == [asked, asked]
    assert bot.fake.sent_messages[1].message_reference is not None  # in the thread, replies point at the user's message
    assert await bot.history(channel_id=asked) == ["my name is Alice", "echo: my name is Alice",
                                                   "what is my name?", "echo: what is my name?"]  # fmt: skip
    assert await bot.history(channel_id=CHANNEL_ID) == []
    assert bot.fake.created_threads == [asked]


async def test_with_thread_scope_the_starter_and_the_follow_ups_share_the_platform_thread(
    start_bot: BotFactory, fake_openai: FakeOpenAI
) -> None:
    async with start_bot(discord_auto_thread=True, memory_scope="thread") as bot:
        asked = await bot.say("first")
        first = await bot.next_reply()
        await bot.say("second, from Bob", channel_id=asked, author_id=BOB_ID, mention=False)
        second = await bot.next_reply()
    expected = f"channel_{asked}_thread_{asked}"
    assert bot.gateway.thread_id(first.incoming) == bot.gateway.thread_id(second.incoming) == expected
    assert user_texts(fake_openai) == ["first", "second, from Bob"]


async def test_in_someone_elses_thread_a_mention_brings_the_bot_in(bot: Bot, fake_openai: FakeOpenAI) -> None:
    await bot.say("nobody asked me", channel_id=THREAD_ID, mention=False)  # Alice's thread: not the bot's yet
    await bot.say("now I am asked", channel_id=THREAD_ID)
    asked = await bot.next_reply()
    await bot.say("and this follows", channel_id=THREAD_ID, mention=False)
    follow_up = await bot.next_reply()

    assert (asked.text, follow_up.text) == ("echo: now I am asked", "echo: and this follows")
    assert user_texts(fake_openai) == ["now I am asked", "and this follows"]  # the first one never reached it
    assert bot.fake.created_threads == []  # a thread opens no other thread
    assert (asked.incoming.channel_id, asked.incoming.thread_ref) == (str(THREAD_ID), str(THREAD_ID))
    assert await bot.gateway.backend.has_flag(f"discord:thread:{THREAD_ID}")


async def test_the_embedded_store_remembers_the_threads_the_bot_answered_in(
    start_bot: BotFactory, tmp_path: Path
) -> None:
    async with start_bot(discord_auto_thread=True, redis_url=None, data_dir=tmp_path) as bot:
        await bot.say("asked", channel_id=THREAD_ID)
        await bot.next_reply()
        await bot.say("not asked", channel_id=THREAD_ID, mention=False)
        assert (await bot.next_reply()).text == "echo: not asked"
        asked = await bot.say("a new one")
        await bot.next_reply()
        await bot.say("in the new thread", channel_id=asked, mention=False)
        assert (await bot.next_reply()).text == "echo: in the new thread"
    assert bot.fake.created_threads == [asked]


async def test_without_the_setting_a_thread_still_needs_a_mention_every_time(start_bot: BotFactory) -> None:
    async with start_bot() as bot:
        await bot.say("asked", channel_id=THREAD_ID)
        await bot.next_reply()
        await bot.say("not asked", channel_id=THREAD_ID, mention=False)
        await bot.say("asked again", channel_id=THREAD_ID)
        assert (await bot.next_reply()).text == "echo: asked again"
    assert [m.content for m in bot.fake.sent_messages] == ["echo: asked", "echo: asked again"]


async def test_a_long_question_names_the_thread_within_discords_limit(bot: Bot) -> None:
    asked = await bot.say("why " * 60)
    await bot.next_reply()
    (request,) = bot.fake.requests_to("POST", f"/channels/{CHANNEL_ID}/messages/{asked}/threads")
    name = request.body["name"]
    assert len(name) <= MAX_THREAD_NAME_LENGTH and name.startswith("why why") and name.endswith("…")


async def test_a_command_is_answered_in_place_and_opens_no_thread(bot: Bot) -> None:
    await bot.say("memory")
    reply = await bot.next_reply()
    assert bot.fake.created_threads == [] and bot.fake.sent_messages[0].channel_id == CHANNEL_ID
    assert reply.incoming.channel_id == str(CHANNEL_ID)


async def test_where_discord_refuses_the_thread_the_reply_goes_into_the_channel(bot: Bot) -> None:
    bot.fake.fail_next("POST", THREADS, status=403, code=50013, message="Missing Permissions")
    asked = await bot.say("hello")
    reply = await bot.next_reply()
    (sent,) = bot.fake.sent_messages
    assert reply.text == "echo: hello" and sent.channel_id == CHANNEL_ID and bot.fake.created_threads == []
    assert sent.message_reference is not None and sent.message_reference["message_id"] == asked
    assert sent.allowed_mentions == NO_PINGS


async def test_a_lost_answer_to_the_thread_create_opens_one_thread(bot: Bot) -> None:
    bot.fake.drop_responses("POST", THREADS)  # created, then the connection dropped: the writer asks again
    asked = await bot.say("hello")
    assert (await bot.next_reply()).text == "echo: hello"
    assert bot.fake.created_threads == [asked] and [m.channel_id for m in bot.fake.sent_messages] == [asked]
    assert len(bot.fake.requests_to("POST", f"/channels/{CHANNEL_ID}/messages/{asked}/threads")) == 2


async def test_a_restart_neither_opens_a_second_thread_nor_answers_twice(
    bot: Bot, process_factory: ProcessFactory, fake_openai: FakeOpenAI
) -> None:
    fake_openai.script(Hang())
    asked = await bot.say("are you there?")
    await asyncio.wait_for(fake_openai.received.get(), WAIT_SECONDS)  # the model has it, and hangs
    assert bot.fake.created_threads == [asked]  # opened as the turn began (typing shows in it)
    await bot.delivery.drain(0)  # the process goes: the lease goes back, the message stays

    other = await process_factory(bot.settings)
    adapter = discord_adapter(bot.settings, other)
    running = asyncio.create_task(adapter.run())
    try:
        await wait_until_serving(adapter, bot.fake, running)
        reply = await other.delivery.next_reply(timeout=10)
        await bot.fake.replay(asked)  # and Discord delivers the mention once more
        await bot.say("still there?", channel_id=asked, mention=False)
        follow_up = await other.delivery.next_reply()
    finally:
        await stop_process(other)
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
        fake_openai.release()

    assert reply.incoming.event_id == str(asked) and reply.text == "echo: are you there?"
    assert follow_up.text == "echo: still there?"
    assert bot.fake.created_threads == [asked]  # the second owner's create answered 160004: the same thread
    assert len(bot.fake.requests_to("POST", f"/channels/{CHANNEL_ID}/messages/{asked}/threads")) == 2
    assert [(m.channel_id, m.content) for m in bot.fake.sent_messages] == [
        (asked, "echo: are you there?"), (asked, "echo: still there?"),
    ]  # fmt: skip
    assert await bot.history(channel_id=asked) == ["are you there?", "echo: are you there?",
                                                   "still there?", "echo: still there?"]  # fmt: skip


async def test_without_the_setting_a_mention_is_answered_in_the_channel(start_bot: BotFactory) -> None:
    async with start_bot() as bot:
        await bot.say("hello")
        reply = await bot.next_reply()
    assert bot.fake.created_threads == [] and bot.fake.sent_messages[0].channel_id == CHANNEL_ID
    assert reply.incoming == IncomingMessage.from_json(reply.incoming.to_json())
    assert reply.incoming.thread_ref is None and "open_thread" not in reply.incoming.metadata


async def test_alices_conversation_in_a_channel_is_not_the_thread_bob_opened(bot: Bot) -> None:
    await bot.say("in the channel, replying to nothing", author_id=ALICE_ID)
    await bot.next_reply()
    asked = await bot.say("Bob's question", author_id=BOB_ID)
    await bot.next_reply()
    await bot.say("Alice joins Bob's thread", channel_id=asked, mention=False)
    await bot.next_reply()
    assert await bot.history(channel_id=asked) == ["Alice joins Bob's thread", "echo: Alice joins Bob's thread"]


async def test_reset_in_an_opened_thread_forgets_that_threads_conversation(start_bot: BotFactory) -> None:
    async with start_bot(discord_auto_thread=True, memory_scope="thread") as bot:
        await bot.say("remember the channel", mention=True)  # opens a thread of its own
        await bot.next_reply()
        asked = await bot.say("remember this thread")
        await bot.next_reply()
        await bot.fake.send_interaction("reset", channel_id=asked, user_id=ALICE_ID)
        answer = await bot.fake.next_edit()
        reset = (await bot.next_reply()).incoming
        kept = bot.gateway.backend.store(f"channel_{bot.fake.created_threads[0]}_thread_{bot.fake.created_threads[0]}",
                                         "discord")  # fmt: skip
        assert len(await kept.list_messages()) == 2
    assert answer.content is not None and answer.content.startswith(
        "Done: I've forgotten the 2 messages of this thread"
    )
    assert bot.gateway.thread_id(reset) == f"channel_{asked}_thread_{asked}"


async def test_a_mention_the_store_could_not_take_opens_no_thread(start_bot: BotFactory) -> None:
    async with start_bot(
        discord_auto_thread=True, redis_url=f"redis://127.0.0.1:{free_port()}/0", redis_timeout_seconds=0.5
    ) as bot:
        asked = await bot.say("anyone home?")
        notice = await bot.fake.next_message()
    assert notice.channel_id == CHANNEL_ID and bot.fake.created_threads == []
    assert notice.message_reference is not None and notice.message_reference["message_id"] == asked
