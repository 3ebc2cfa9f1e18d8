"""Connecting: one clear line for what an operator must fix, DISCORD_API_URL, sharding, reconnects."""

from __future__ import annotations

import asyncio

import pytest
from discord.gateway import DiscordWebSocket
from discord.http import Route

from bots.discord_adapter import DiscordAdapter
from bots.discord_adapter.adapter import INTENT_REFUSED, SHARDING_REQUIRED, TOKEN_MISSING, TOKEN_REJECTED
from core.errors import ConfigError
from tests.discord.conftest import Bot, BotFactory, ProcessFactory, SettingsFactory, discord_adapter, open_fake
from tests.fakes.discord_api import FakeDiscord
from tests.fakes.discord_ids import BOB_ID, OTHER_GUILD_ID
from tests.support.redis_proc import free_port

OTHER_GUILD_CHANNEL_ID = 1_300_000_000_000_000_009


async def run_until_error(settings_for: SettingsFactory, process_factory: ProcessFactory, **overrides: object) -> str:
    settings = settings_for(overrides.pop("fake", None), **overrides)
    adapter = discord_adapter(settings, await process_factory(settings))
    with pytest.raises(ConfigError) as error:
        await asyncio.wait_for(adapter.run(), 5)
    assert not adapter.connected and adapter.client is None
    return str(error.value)


@pytest.mark.parametrize("token", [None, "", "   "])
async def test_a_missing_token_is_one_clear_line(
    token: str | None, settings_for: SettingsFactory, process_factory: ProcessFactory
) -> None:
    assert await run_until_error(settings_for, process_factory, discord_token=token) == TOKEN_MISSING
    assert "\n" not in TOKEN_MISSING and "DISCORD_TOKEN" in TOKEN_MISSING


async def test_a_rejected_token_is_one_clear_line(
    fake: FakeDiscord, settings_for: SettingsFactory, process_factory: ProcessFactory
) -> None:
    message = await run_until_error(settings_for, process_factory, fake=fake, discord_token="not-the-token")
    assert message == TOKEN_REJECTED and "DISCORD_TOKEN" in message
    assert fake.identify_count == 0 and not fake.connections


@pytest.mark.parametrize(("code", "expected"), [(4004, TOKEN_REJECTED), (4011, SHARDING_REQUIRED)])
async def test_a_gateway_close_only_the_operator_can_fix_is_one_clear_line(
    code: int, expected: str, fake: FakeDiscord, settings_for: SettingsFactory, process_factory: ProcessFactory
) -> None:
    fake.reject_next_identify(code)
    assert await run_until_error(settings_for, process_factory, fake=fake) == expected
    await fake.wait_disconnected()


async def test_a_refused_message_content_intent_names_the_switch_to_turn_on(
    settings_for: SettingsFactory, process_factory: ProcessFactory
) -> None:
    async with open_fake(allowed_privileged_intents=0) as fake:
        message = await run_until_error(settings_for, process_factory, fake=fake)
        assert message == INTENT_REFUSED
        assert "Privileged Gateway Intents → MESSAGE CONTENT INTENT" in message and "\n" not in message
        assert fake.connections[0].close_code == 4014
        await fake.wait_disconnected()  # the client was closed, not left half-open


@pytest.mark.parametrize("where", ["nothing-listens", "no-api-path"])
async def test_an_api_url_that_is_not_discords_api_is_one_clear_line(
    where: str, fake: FakeDiscord, settings_for: SettingsFactory, process_factory: ProcessFactory
) -> None:
    url = f"http://127.0.0.1:{free_port()}/api/v10" if where == "nothing-listens" else f"http://127.0.0.1:{fake.port}"
    message = await run_until_error(settings_for, process_factory, discord_api_url=url)
    assert message.startswith(f"DISCORD_API_URL={url} does not answer like Discord's API")


@pytest.mark.parametrize("suffix", ["", "/"], ids=["no-trailing-slash", "trailing-slash"])
async def test_discord_api_url_sets_rest_and_gateway(suffix: str, fake: FakeDiscord, start_bot: BotFactory) -> None:
    default_base, default_gateway = Route.BASE, DiscordWebSocket.DEFAULT_GATEWAY
    async with start_bot(discord_api_url=fake.api_url + suffix) as bot:
        assert fake.api_url == Route.BASE
        assert str(DiscordWebSocket.DEFAULT_GATEWAY) == fake.gateway_url  # the answer of GET /gateway/bot
        await bot.say("over there?")
        assert (await fake.next_message()).content == "echo: over there?"
        assert fake.requests_to("GET", "/gateway/bot")
        assert fake.connections[0].path == "/gateway"
        assert not fake.unhandled_requests  # no doubled slashes, no unknown routes
    assert (default_base, default_gateway) == (Route.BASE, DiscordWebSocket.DEFAULT_GATEWAY)


async def test_connected_follows_the_client(fake: FakeDiscord, start_bot: BotFactory) -> None:
    adapter: DiscordAdapter | None = None
    async with start_bot() as bot:
        adapter = bot.adapter
        assert adapter.connected and adapter.name == "discord"
    assert not adapter.connected and adapter.client is None


async def test_the_bot_keeps_answering_after_discord_drops_the_connection(bot: Bot) -> None:
    await bot.fake.close_gateway(4000)
    await bot.fake.wait_for_resume()
    await bot.say("still there?")
    assert (await bot.fake.next_message()).content == "echo: still there?"
    assert bot.fake.identify_count == 1 and bot.adapter.connected


async def test_discord_shard_count_runs_the_sharded_client(start_bot: BotFactory) -> None:
    async with open_fake(shard_count=2) as fake:
        fake.add_guild(OTHER_GUILD_ID, "Other Guild")
        fake.add_text_channel(OTHER_GUILD_CHANNEL_ID, OTHER_GUILD_ID)
        async with start_bot(on=fake, discord_shard_count=2) as bot:
            assert sorted(i.shard for i in fake.identifies if i.shard) == [(0, 2), (1, 2)]
            await bot.say("shard one here", channel_id=OTHER_GUILD_CHANNEL_ID, author_id=BOB_ID)
            assert (await fake.next_message()).channel_id == OTHER_GUILD_CHANNEL_ID
            await bot.say("shard zero here")
            assert (await fake.next_message()).content == "echo: shard zero here"
            assert bot.adapter.connected
