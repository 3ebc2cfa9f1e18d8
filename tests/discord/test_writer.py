"""How answers are posted: split within Discord's limit, pinging nobody, with typing, and failures made clear."""

from __future__ import annotations

import logging
import re

import pytest

from bots.discord_adapter.writer import DISCORD_MAX_CHARS
from core.chunking import split_message
from core.delivery import FAILURE_NOTICE
from core.errors import ModelError, StoreUnavailableError
from tests.discord.conftest import NO_PINGS, Bot, BotFactory, pings_nobody
from tests.fakes.discord_ids import ALICE_ID, BOB_ID, CHANNEL_ID, ROLE_ID
from tests.fakes.openai_server import FakeOpenAI, Hang, Reply, Status
from tests.support.redis_proc import free_port

FENCE = re.compile(r"^```", re.MULTILINE)


def long_answer_with_code() -> tuple[str, list[str]]:
    """About 5,000 characters: prose, a 2,400-character Python block, prose."""
    code_lines = [f"print('line {i:03d}')  # {'pad ' * 6}" for i in range(60)]
    before = "\n\n".join(f"Paragraph {i}: " + "word " * 70 for i in range(4))
    after = "\n\n".join(f"Closing {i}: " + "word " * 70 for i in range(2))
    text = f"{before}\n\n```python\n" + "\n".join(code_lines) + f"\n```\n\n{after}"
    assert 4800 < len(text) < 5200, len(text)
    return text, code_lines


async def test_a_5000_character_answer_with_code_is_split_at_2000_keeping_code_blocks_whole(
    bot: Bot, fake_openai: FakeOpenAI
) -> None:
    text, code_lines = long_answer_with_code()
    fake_openai.script(Reply(text))
    asked = await bot.say("show me the code")
    expected = split_message(text, DISCORD_MAX_CHARS, max_parts=10)
    parts = [await bot.fake.next_message() for _ in expected]
    contents = [p.content for p in parts]
    assert contents == expected and len(contents) == 3
    assert all(len(c) <= DISCORD_MAX_CHARS for c in contents)
    assert all(len(FENCE.findall(c)) % 2 == 0 for c in contents)  # every block closed in its own part
    assert any(c.startswith("```python\n") for c in contents[1:])  # the code block reopened with its language
    code_seen = [line for c in contents for line in c.split("\n") if line.startswith("print(")]
    assert code_seen == code_lines  # nothing lost or doubled at the cut
    assert parts[0].message_reference is not None and parts[0].message_reference["message_id"] == asked
    assert all(p.message_reference is None for p in parts[1:])
    await bot.next_reply()
    assert await bot.history() == ["show me the code", text]  # memory keeps the unsplit answer


async def test_mentions_written_by_the_model_notify_nobody(bot: Bot, fake_openai: FakeOpenAI) -> None:
    pings = f"@everyone @here <@&{ROLE_ID}> <@{ALICE_ID}> <@!{BOB_ID}>"
    text = f"{pings} first\n\n" + "filler " * 300 + f"\n\n{pings} second"
    fake_openai.script(Reply(text))
    await bot.say("ping everybody please")
    sent = [await bot.fake.next_message() for _ in split_message(text, DISCORD_MAX_CHARS)]
    assert len(sent) > 1 and sent[0].content.startswith(pings) and sent[-1].content.endswith(f"{pings} second")
    for message in bot.fake.sent_messages:
        assert pings_nobody(message.allowed_mentions)
        assert message.pinged_user_ids == ()
        assert bot.fake.messages[message.id]["mention_everyone"] is False


async def test_typing_shows_while_the_model_works(bot: Bot, fake_openai: FakeOpenAI) -> None:
    fake_openai.script(Hang(then=Reply("thought about it")))
    await bot.say("think hard")
    assert await bot.fake.next_typing() == CHANNEL_ID
    await fake_openai.received.get()  # the model has the request and is still "thinking"
    assert bot.fake.posted.empty()
    fake_openai.release()
    assert (await bot.fake.next_message()).content == "thought about it"


async def test_failing_typing_does_not_stop_the_answer(bot: Bot) -> None:
    bot.fake.fail_next("POST", "/channels/{id}/typing", status=403)
    await bot.say("hello")
    assert (await bot.fake.next_message()).content == "echo: hello"


async def test_a_model_error_gives_a_clear_reply_and_the_bot_keeps_answering(bot: Bot, fake_openai: FakeOpenAI) -> None:
    fake_openai.script(Status(500))
    await bot.say("are you there?")
    failed = await bot.fake.next_message()
    assert failed.content == ModelError.user_message and failed.allowed_mentions == NO_PINGS
    await bot.say("and now?")
    assert (await bot.fake.next_message()).content == "echo: and now?"
    await bot.next_reply()
    await bot.next_reply()
    assert await bot.history() == ["and now?", "echo: and now?"]  # the failed turn stored nothing
    assert bot.adapter.connected


async def test_redis_down_gives_a_clear_reply(start_bot: BotFactory) -> None:
    nothing_listens = f"redis://127.0.0.1:{free_port()}/0"
    async with start_bot(redis_url=nothing_listens, redis_timeout_seconds=0.5) as bot:
        await bot.say("remember this")
        posted = await bot.fake.next_message()  # nothing was stored, so nothing else will come: say so once
        assert posted.content == StoreUnavailableError.user_message and posted.allowed_mentions == NO_PINGS
        assert posted.message_reference is not None
        assert bot.delivery.received.empty() and bot.adapter.connected


async def test_a_refused_post_is_retried_as_the_final_answer(bot: Bot, caplog: pytest.LogCaptureFixture) -> None:
    bot.fake.fail_next("POST", "/channels/{id}/messages", status=403)  # the first preview
    await bot.say("hello")
    assert (await bot.fake.next_message()).content == "echo: hello"
    assert any(r.levelno == logging.WARNING and "progress" in r.getMessage() for r in caplog.records)


async def test_a_discord_http_error_gives_a_short_reply_and_a_log_line(
    bot: Bot, caplog: pytest.LogCaptureFixture
) -> None:
    bot.fake.fail_next("POST", "/channels/{id}/messages", status=403, times=2)  # the preview and the answer
    await bot.say("hello")
    apology = await bot.fake.next_message()
    assert apology.content == FAILURE_NOTICE and apology.allowed_mentions == NO_PINGS
    failures = [r for r in caplog.records if r.levelno == logging.ERROR and r.name == "core.delivery"]
    assert len(failures) == 1 and "reply not posted" in failures[0].getMessage()
    assert "Forbidden" in failures[0].getMessage()  # Discord's words, for the operator
    assert "hello" not in caplog.text  # message text never above DEBUG
    await bot.say("still there?")
    assert (await bot.fake.next_message()).content == "echo: still there?"
    assert bot.adapter.connected


async def test_a_429_on_posting_is_retried_per_its_headers_and_the_answer_posted_once(bot: Bot) -> None:
    bot.fake.fail_next("POST", "/channels/{id}/messages", status=429, retry_after=0.05)
    await bot.say("hello")
    answer = await bot.fake.next_message()
    assert answer.content == "echo: hello"
    posted = [m.content for m in bot.fake.sent_messages]
    assert posted.count("echo: hello") == 1
    assert len(bot.fake.requests_to("POST", "/channels/{id}/messages")) >= 2  # the refused try and the retry
