"""Who may use the bot by DM: DISCORD_DM_POLICY open | members (of an allowed guild) | off."""

from __future__ import annotations

from tests.discord.conftest import BotFactory
from tests.fakes.discord_api import FakeDiscord
from tests.fakes.discord_ids import ALICE_ID, CHANNEL_ID, DM_CHANNEL_ID, GUILD_ID, OTHER_GUILD_ID

CAROL_ID = 1_400_000_000_000_000_009  # shares a guild with the bot, but not an allowed one
CAROL_DM_ID = 1_300_000_000_000_000_009
MEMBER_ROUTE = "/guilds/{guild_id}/members/{user_id}"


def add_carol(fake: FakeDiscord) -> None:
    fake.add_guild(OTHER_GUILD_ID, "Other Guild")
    fake.add_member(OTHER_GUILD_ID, CAROL_ID)
    fake.add_dm_channel(CAROL_DM_ID, CAROL_ID)


async def test_with_a_guild_list_only_members_of_an_allowed_guild_may_dm(
    start_bot: BotFactory, fake: FakeDiscord
) -> None:
    add_carol(fake)
    async with start_bot(discord_guild_ids=str(GUILD_ID)) as bot:
        await bot.say("let me in", channel_id=CAROL_DM_ID, author_id=CAROL_ID, mention=False)
        await bot.say("hi from a member", channel_id=DM_CHANNEL_ID, author_id=ALICE_ID, mention=False)
        answered = await bot.fake.next_message()
        assert (answered.channel_id, answered.content) == (DM_CHANNEL_ID, "echo: hi from a member")
        assert (await bot.delivery.next_received())[0].user_id == str(ALICE_ID)
        asked = [r.path for r in bot.fake.requests_to("GET", MEMBER_ROUTE)]
        assert f"/guilds/{GUILD_ID}/members/{CAROL_ID}" in asked  # Carol was looked up, and refused
        assert bot.delivery.received.empty() and bot.fake.sent_messages[-1].content == "echo: hi from a member"
        # A member is looked up once, not on every message.
        await bot.say("again", channel_id=DM_CHANNEL_ID, author_id=ALICE_ID, mention=False)
        assert (await bot.fake.next_message()).content == "echo: again"
        lookups = [p for p in (r.path for r in bot.fake.requests_to("GET", MEMBER_ROUTE)) if str(ALICE_ID) in p]
        assert lookups == [f"/guilds/{GUILD_ID}/members/{ALICE_ID}"]


async def test_dm_policy_off_answers_no_dm_but_still_answers_in_guilds(start_bot: BotFactory) -> None:
    async with start_bot(discord_dm_policy="off") as bot:
        await bot.say("psst", channel_id=DM_CHANNEL_ID, mention=False)
        await bot.say("in the guild")
        posted = await bot.fake.next_message()
        assert (posted.channel_id, posted.content) == (CHANNEL_ID, "echo: in the guild")
        assert (await bot.delivery.next_received())[0].text == "in the guild"
        assert bot.delivery.received.empty()


async def test_dm_policy_open_with_a_guild_list_lets_anyone_dm(start_bot: BotFactory, fake: FakeDiscord) -> None:
    add_carol(fake)
    async with start_bot(discord_guild_ids=str(GUILD_ID), discord_dm_policy="open") as bot:
        await bot.say("let me in", channel_id=CAROL_DM_ID, author_id=CAROL_ID, mention=False)
        assert (await bot.fake.next_message()).content == "echo: let me in"


async def test_a_slash_command_in_a_dm_follows_the_dm_policy(start_bot: BotFactory) -> None:
    async with start_bot(discord_dm_policy="off") as bot:
        await bot.fake.send_interaction("memory", channel_id=DM_CHANNEL_ID, user_id=ALICE_ID)
        response = await bot.fake.next_interaction_response()
        assert response.data is not None and response.data.get("content") == "I'm not enabled in this channel."
        assert bot.delivery.received.empty()
