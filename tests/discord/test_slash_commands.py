"""`/reset` and `/memory`: registered through the command tree, stored in the inbox like messages, answered
ephemerally by editing the deferred response."""

from __future__ import annotations

from bots.discord_adapter.adapter import NOT_HERE
from core.turns import IncomingMessage
from tests.discord.conftest import Bot, BotFactory, SettingsFactory
from tests.fakes.discord_api import FakeDiscord
from tests.fakes.discord_ids import ALICE_ID, BOB_ID, CHANNEL_ID, DM_CHANNEL_ID, OTHER_CHANNEL_ID

DEFERRED = 5  # DEFERRED_CHANNEL_MESSAGE_WITH_SOURCE: "thinking…", edited into the answer
MESSAGE = 4  # CHANNEL_MESSAGE_WITH_SOURCE


async def test_commands_are_registered_globally(bot: Bot) -> None:
    assert sorted(bot.fake.global_commands) == ["memory", "reset", "usage"]
    assert all(c["description"] for c in bot.fake.global_commands.values())


async def test_reset_forgets_this_users_conversation_and_answers_ephemerally(bot: Bot) -> None:
    await bot.say("remember me")
    await bot.next_reply()
    await bot.say("and me", author_id=BOB_ID)
    await bot.next_reply()

    sent = await bot.fake.send_interaction("reset", channel_id=CHANNEL_ID, user_id=ALICE_ID)
    response = await bot.fake.next_interaction_response()
    assert response.interaction_id == sent.id and response.type == DEFERRED and response.ephemeral
    answer = await bot.fake.next_edit()
    assert answer.interaction_token == sent.token
    assert answer.content is not None and answer.content.startswith("Done: I've forgotten")
    incoming = (await bot.next_reply()).incoming
    assert incoming.event_id == str(sent.id) and incoming.text == "reset"
    assert incoming.metadata["trigger"] == "slash" and incoming.metadata["interaction_token"] == sent.token
    assert IncomingMessage.from_json(incoming.to_json()) == incoming  # any process can edit the answer
    assert await bot.history(ALICE_ID) == []
    assert await bot.history(BOB_ID) == ["and me", "echo: and me"]


async def test_memory_answers_ephemerally(bot: Bot) -> None:
    await bot.say("hello", channel_id=DM_CHANNEL_ID, mention=False)
    await bot.next_reply()
    await bot.fake.send_interaction("memory", channel_id=DM_CHANNEL_ID, user_id=ALICE_ID)
    assert (await bot.fake.next_interaction_response()).ephemeral
    answer = await bot.fake.next_edit()
    assert answer.content is not None and answer.content.startswith("I remember 2 messages")
    assert len(bot.fake.sent_messages) == 1  # only the DM answer: nothing public for the command


async def test_usage_answers_ephemerally_with_the_callers_tokens(bot: Bot) -> None:
    await bot.say("hello", channel_id=DM_CHANNEL_ID, mention=False)
    await bot.next_reply()
    await bot.fake.send_interaction("usage", channel_id=DM_CHANNEL_ID, user_id=ALICE_ID)
    assert (await bot.fake.next_interaction_response()).ephemeral
    answer = await bot.fake.next_edit()
    # The fake counts words: the system prompt's 11 and "hello" in, "echo: hello" out.
    assert answer.content is not None and answer.content.startswith(
        "Today (UTC) you used 14 tokens (12 prompt, 2 completion)"
    )


async def test_a_replayed_interaction_is_answered_once(bot: Bot) -> None:
    sent = await bot.fake.send_interaction("reset", channel_id=CHANNEL_ID, user_id=ALICE_ID)
    await bot.fake.next_edit()
    dispatch = next(d for d in bot.fake.dispatches if d.event == "INTERACTION_CREATE")
    await bot.fake.replay(dispatch)
    await bot.fake.send_interaction("memory", channel_id=CHANNEL_ID, user_id=ALICE_ID)
    memory = await bot.fake.next_edit()
    assert memory.content is not None and memory.content.startswith("I remember 0 messages")
    received = [(await bot.delivery.next_received())[0].event_id for _ in range(2)]
    assert received[0] == str(sent.id) and received[1] != str(sent.id)
    assert bot.delivery.received.empty()  # the replay never reached the inbox
    assert bot.fake.interaction_responses.qsize() == 2 and bot.fake.edits.empty()
    # The replay did reach the bot: its acknowledgement was refused (already acknowledged), so nothing ran.
    assert len(bot.fake.requests_to("POST", f"/interactions/{sent.id}/{{token}}/callback")) == 2


async def test_commands_outside_the_allowed_channels_are_declined(
    start_bot: BotFactory, settings_for: SettingsFactory, fake: FakeDiscord
) -> None:
    settings = settings_for(fake).model_copy(update={"discord_channel_ids": [CHANNEL_ID]})
    async with start_bot(settings=settings) as bot:
        await bot.fake.send_interaction("reset", channel_id=OTHER_CHANNEL_ID, user_id=ALICE_ID)
        response = await bot.fake.next_interaction_response()
        assert response.type == MESSAGE and response.ephemeral and response.content == NOT_HERE
        assert bot.delivery.received.empty()
