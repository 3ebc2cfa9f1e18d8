"""A streamed answer appears by editing the reply, throttled by the core, and ends with the exact final text."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from bots.discord_adapter.writer import DISCORD_MAX_CHARS
from core.chunking import split_message
from tests.discord.conftest import BotFactory, pings_nobody
from tests.fakes.discord_api import FakeDiscord, MessageEdit
from tests.fakes.openai_server import FakeOpenAI, Reply


@pytest.fixture
async def fake_openai() -> AsyncIterator[FakeOpenAI]:
    """Word-by-word deltas, as real models stream."""
    async with FakeOpenAI() as fake:
        yield fake


def edits_so_far(fake: FakeDiscord) -> list[MessageEdit]:
    edits = []
    while not fake.edits.empty():
        edits.append(fake.edits.get_nowait())
    return edits


async def test_a_streamed_answer_grows_by_edits_and_ends_exact(start_bot: BotFactory, fake_openai: FakeOpenAI) -> None:
    final = "one two three four five six"
    fake_openai.script(Reply(final))
    async with start_bot(edit_interval_seconds=0.0) as bot:  # every preview the model's pace allows
        await bot.say("count")
        first = await bot.fake.next_message()
        assert (await bot.next_reply()).text == final
        edits = edits_so_far(bot.fake)
        shown = [first.content] + [e.content or "" for e in edits]
        # Previews are the newest text when an edit can go (the core's pump skips what it outran).
        assert all(final.startswith(text) for text in shown) and shown == sorted(shown, key=len)
        assert len(shown) >= 2 and first.content != final
        assert all(e.message_id == first.id and pings_nobody(e.allowed_mentions) for e in edits)
        assert bot.fake.messages[first.id]["content"] == final
        assert bot.fake.posted.empty()


async def test_edits_are_throttled_and_the_final_text_is_always_posted(
    start_bot: BotFactory, fake_openai: FakeOpenAI
) -> None:
    final = "alpha beta gamma delta epsilon"
    fake_openai.script(Reply(final))
    async with start_bot(edit_interval_seconds=60.0) as bot:  # only the first preview fits in the interval
        await bot.say("letters")
        first = await bot.fake.next_message()
        assert final.startswith(first.content) and first.content != final
        await bot.next_reply()
        assert [(e.message_id, e.content) for e in edits_so_far(bot.fake)] == [(first.id, final)]
        assert bot.fake.posted.empty()
        assert bot.fake.messages[first.id]["content"] == final


async def test_a_streamed_answer_longer_than_one_message_ends_split(
    start_bot: BotFactory, fake_openai: FakeOpenAI
) -> None:
    final = "\n\n".join(f"Part {i}: " + "lorem " * 120 for i in range(4))  # about 2,900 characters
    fake_openai.script(Reply(final))
    async with start_bot(edit_interval_seconds=0.05) as bot:
        await bot.say("go long")
        first = await bot.fake.next_message()
        second = await bot.fake.next_message(timeout=10)
        await bot.next_reply()
        expected = split_message(final, DISCORD_MAX_CHARS)
        assert [bot.fake.messages[m.id]["content"] for m in (first, second)] == expected
        assert all(len(bot.fake.messages[m.id]["content"]) <= DISCORD_MAX_CHARS for m in (first, second))
        assert second.message_reference is None and bot.fake.posted.empty()
