"""Nothing the bot posts on Discord pings anyone: replies, follow-up parts, progress edits, slash answers.

The fake resolves pings as Discord does (content mentions filtered by the request's allowed_mentions, plus
the replied-to author), so these tests read who would actually have been notified.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.discord.conftest import Bot, BotFactory, pings_nobody
from tests.fakes.discord_ids import ALICE_ID, BOB_ID, CHANNEL_ID, ROLE_ID
from tests.fakes.openai_server import FakeOpenAI, Reply

PINGS = f"<@{BOB_ID}> <@!{ALICE_ID}> <@&{ROLE_ID}> @everyone @here"


@pytest.fixture
async def fake_openai() -> AsyncIterator[FakeOpenAI]:
    """Word-by-word deltas, so the reply grows by edits before its final parts."""
    async with FakeOpenAI() as fake:
        yield fake


async def test_a_long_streamed_reply_full_of_mentions_pings_nobody(
    start_bot: BotFactory, fake_openai: FakeOpenAI
) -> None:
    final = "\n\n".join(f"Part {i}: {PINGS} " + "lorem " * 120 for i in range(4))  # two messages
    fake_openai.script(Reply(final))
    async with start_bot(edit_interval_seconds=0.05) as bot:
        await bot.say(f"tell {PINGS}")
        await bot.next_reply()
        sent = [bot.fake.posted.get_nowait() for _ in range(bot.fake.posted.qsize())]
        edits = [bot.fake.edits.get_nowait() for _ in range(bot.fake.edits.qsize())]
    assert len(sent) >= 2 and edits  # a reply, a follow-up part, and progress edits
    assert all(message.pinged_user_ids == () and pings_nobody(message.allowed_mentions) for message in sent)
    assert all(pings_nobody(edit.allowed_mentions) for edit in edits)


async def test_a_slash_command_answer_pings_nobody(bot: Bot) -> None:
    sent = await bot.fake.send_interaction("memory", channel_id=CHANNEL_ID, user_id=ALICE_ID)
    await bot.fake.next_interaction_response()
    answer = await bot.fake.next_edit()
    assert answer.interaction_token == sent.token and pings_nobody(answer.allowed_mentions)
