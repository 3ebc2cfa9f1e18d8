"""Self-tests for the fake Discord platform, driven by a real discord.py client."""

from __future__ import annotations

import asyncio
import contextlib
import zlib
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import discord
import pytest
from discord import app_commands

from tests.fakes.discord_api import (
    DEFAULT_TOKEN,
    EPHEMERAL,
    MAX_NONCE_LENGTH,
    MAX_THREAD_NAME_LENGTH,
    FakeDiscord,
    Intent,
    LostResponse,
    point_discord_at,
)
from tests.fakes.discord_ids import (
    ALICE_ID,
    APP_ID,
    BOB_ID,
    BOT_ID,
    CHANNEL_ID,
    DM_CHANNEL_ID,
    GUILD_ID,
    OTHER_CHANNEL_ID,
    OTHER_GUILD_ID,
    THREAD_ID,
)

# on_ready fires guild_ready_timeout after the last GUILD_CREATE; discord.py's 2 s default would dominate the run.
GUILD_READY_TIMEOUT = 0.1


def full_intents() -> discord.Intents:
    intents = discord.Intents.default()
    intents.message_content = True
    return intents


class RecordingClient(discord.Client):
    """A plain client whose events land in queues the tests await."""

    def __init__(self, *, intents: discord.Intents | None = None) -> None:
        super().__init__(intents=intents or full_intents(), guild_ready_timeout=GUILD_READY_TIMEOUT)
        self.ready = asyncio.Event()
        self.inbox: asyncio.Queue[discord.Message] = asyncio.Queue()
        self.resumed = asyncio.Event()

    async def on_ready(self) -> None:
        self.ready.set()

    async def on_resumed(self) -> None:
        self.resumed.set()

    async def on_message(self, message: discord.Message) -> None:
        # Discord echoes the bot's own messages; the tests only want what users wrote.
        if self.user is not None and message.author.id != self.user.id:
            self.inbox.put_nowait(message)

    async def next_message(self, timeout: float = 5.0) -> discord.Message:
        return await asyncio.wait_for(self.inbox.get(), timeout)


class NoIdentifyDelayClient(RecordingClient):
    async def before_identify_hook(self, shard_id: int | None, *, initial: bool = False) -> None:
        # discord.py sleeps 5 s before every non-initial IDENTIFY; pointless against a fake.
        return None


class ManualClock:
    """Stands in for time.monotonic, so a test steps past the nonce window instead of waiting it out."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def populate(fake: FakeDiscord) -> None:
    fake.add_user(ALICE_ID, "alice", global_name="Alice")
    fake.add_user(BOB_ID, "bob")
    fake.add_guild(GUILD_ID, "Test Guild")
    fake.add_member(GUILD_ID, ALICE_ID)
    fake.add_member(GUILD_ID, BOB_ID, nick="Bobby")
    fake.add_text_channel(CHANNEL_ID, GUILD_ID, "general")
    fake.add_thread(THREAD_ID, CHANNEL_ID, "a thread", owner_id=ALICE_ID)
    fake.add_dm_channel(DM_CHANNEL_ID, ALICE_ID)


@contextlib.asynccontextmanager
async def fake_discord(**kwargs: Any) -> AsyncIterator[FakeDiscord]:
    async with FakeDiscord(bot_user_id=BOT_ID, application_id=APP_ID, **kwargs) as fake:
        populate(fake)
        with point_discord_at(fake):
            yield fake


@contextlib.asynccontextmanager
async def running(client: RecordingClient, fake: FakeDiscord) -> AsyncIterator[RecordingClient]:
    await client.login(DEFAULT_TOKEN)
    connect = asyncio.create_task(client.connect())
    try:
        await asyncio.wait_for(client.ready.wait(), 5)
        yield client
    finally:
        await client.close()
        await asyncio.wait_for(connect, 5)
        await fake.wait_disconnected()


@pytest.fixture
async def fake() -> AsyncIterator[FakeDiscord]:
    async with fake_discord() as fake:
        yield fake


@pytest.fixture
async def bot(fake: FakeDiscord) -> AsyncIterator[RecordingClient]:
    async with running(RecordingClient(), fake) as client:
        yield client


# -- login and READY ----------------------------------------------------------------------------------------------


async def test_client_logs_in_and_becomes_ready(fake: FakeDiscord, bot: RecordingClient) -> None:
    await fake.wait_ready()
    assert bot.user is not None and bot.user.id == BOT_ID
    assert bot.application_id == APP_ID
    guild = bot.get_guild(GUILD_ID)
    assert guild is not None and guild.name == "Test Guild"
    assert isinstance(guild.get_channel(CHANNEL_ID), discord.TextChannel)
    assert isinstance(guild.get_thread(THREAD_ID), discord.Thread)
    assert guild.member_count == 4 and guild.me is not None  # owner, bot, alice, bob

    assert fake.identify_count == 1
    assert fake.identifies[0].intents == full_intents().value
    assert fake.identifies[0].intents & Intent.MESSAGE_CONTENT
    # discord.py asks for the compression its utils._ActiveDecompressionContext implements.
    expected = discord.utils._ActiveDecompressionContext.COMPRESSION_TYPE
    assert fake.connections[0].query == {"v": "10", "encoding": "json", "compress": expected}
    assert fake.heartbeat_count >= 1  # discord.py heartbeats right after HELLO
    assert fake.requests_to("GET", "/users/@me")[0].authorization == f"Bot {DEFAULT_TOKEN}"


async def test_bad_token_makes_login_fail(fake: FakeDiscord) -> None:
    client = RecordingClient()
    try:
        with pytest.raises(discord.LoginFailure):
            await client.login("not-the-token")
    finally:
        await client.close()
    assert fake.identify_count == 0


async def test_disallowed_intents_close_4014() -> None:
    async with fake_discord(allowed_privileged_intents=0) as fake:
        client = RecordingClient()
        try:
            await client.login(DEFAULT_TOKEN)
            assert client.application_flags.gateway_message_content_limited is False
            with pytest.raises(discord.PrivilegedIntentsRequired):
                await asyncio.wait_for(client.connect(), 5)
        finally:
            await client.close()
        assert fake.connections[0].close_code == 4014 and fake.connections[0].closed_by_server


async def test_gateway_auth_failure_closes_4004(fake: FakeDiscord) -> None:
    fake.reject_next_identify(4004)
    client = RecordingClient()
    try:
        await client.login(DEFAULT_TOKEN)
        with pytest.raises(discord.ConnectionClosed) as closed:
            await asyncio.wait_for(client.connect(), 5)
    finally:
        await client.close()
    assert closed.value.code == 4004


async def test_members_intent_gets_the_member_list(fake: FakeDiscord) -> None:
    intents = full_intents()
    intents.members = True
    async with running(RecordingClient(intents=intents), fake) as client:
        guild = client.get_guild(GUILD_ID)
        assert guild is not None and guild.chunked
        bob = guild.get_member(BOB_ID)
        assert bob is not None and bob.nick == "Bobby"


async def test_heartbeats_are_acknowledged() -> None:
    async with fake_discord(heartbeat_interval_ms=30) as fake, running(RecordingClient(), fake) as client:
        await fake.wait_for_heartbeats(4)
        assert client.latency < 1.0


# -- messages in ---------------------------------------------------------------------------------------------------


async def test_message_create_reaches_on_message(fake: FakeDiscord, bot: RecordingClient) -> None:
    message_id = await fake.send_message_create(
        channel_id=CHANNEL_ID, author_id=ALICE_ID, content=f"<@{BOT_ID}> hello there", mentions=[BOT_ID]
    )
    message = await bot.next_message()
    assert message.id == message_id
    assert message.content == f"<@{BOT_ID}> hello there"
    assert message.author.id == ALICE_ID and message.author.name == "alice"
    assert isinstance(message.author, discord.Member)
    assert message.guild is not None and message.guild.id == GUILD_ID
    assert [m.id for m in message.mentions] == [BOT_ID]
    assert bot.user is not None and bot.user.mentioned_in(message)


async def test_dm_and_thread_messages(fake: FakeDiscord, bot: RecordingClient) -> None:
    await fake.send_message_create(channel_id=DM_CHANNEL_ID, author_id=ALICE_ID, content="psst")
    dm = await bot.next_message()
    assert dm.guild is None and isinstance(dm.channel, discord.DMChannel) and dm.content == "psst"

    await fake.send_message_create(channel_id=THREAD_ID, author_id=BOB_ID, content="in a thread")
    threaded = await bot.next_message()
    assert isinstance(threaded.channel, discord.Thread) and threaded.channel.parent_id == CHANNEL_ID


async def test_a_thread_on_a_message_takes_its_id_and_a_second_one_is_refused(
    fake: FakeDiscord, bot: RecordingClient
) -> None:
    message_id = await fake.send_message_create(channel_id=CHANNEL_ID, author_id=ALICE_ID, content="a question")
    await bot.next_message()
    channel = bot.get_channel(CHANNEL_ID)
    assert isinstance(channel, discord.TextChannel)
    thread = await channel.get_partial_message(message_id).create_thread(name="a question")
    assert thread.id == message_id and thread.parent_id == CHANNEL_ID and thread.owner_id == BOT_ID
    await fake.send_message_create(channel_id=message_id, author_id=ALICE_ID, content="in it")
    inside = await bot.next_message()  # THREAD_CREATE came first: discord.py knows the thread
    assert isinstance(inside.channel, discord.Thread) and inside.channel.owner_id == BOT_ID

    with pytest.raises(discord.HTTPException) as again:
        await channel.get_partial_message(message_id).create_thread(name="again")
    assert (again.value.status, again.value.code) == (400, 160004)
    with pytest.raises(discord.HTTPException) as long_name:
        await channel.get_partial_message(message_id).create_thread(name="x" * (MAX_THREAD_NAME_LENGTH + 1))
    assert long_name.value.code == 50035
    assert fake.created_threads == [message_id]


async def test_reply_to_bot_message_carries_referenced_message(fake: FakeDiscord, bot: RecordingClient) -> None:
    channel = bot.get_channel(CHANNEL_ID)
    assert isinstance(channel, discord.TextChannel)
    ours = await channel.send("question?")
    await fake.send_message_create(
        channel_id=CHANNEL_ID, author_id=ALICE_ID, content="answer", message_reference=ours.id
    )
    reply = await bot.next_message()
    assert reply.type is discord.MessageType.reply
    assert reply.reference is not None and reply.reference.message_id == ours.id
    assert isinstance(reply.reference.resolved, discord.Message)
    assert reply.reference.resolved.author.id == BOT_ID
    assert [m.id for m in reply.mentions] == [BOT_ID]  # replies ping by default


async def test_without_message_content_intent_content_is_blank_unless_mentioned(fake: FakeDiscord) -> None:
    async with running(RecordingClient(intents=discord.Intents.default()), fake) as client:
        await fake.send_message_create(channel_id=CHANNEL_ID, author_id=ALICE_ID, content="secret")
        assert (await client.next_message()).content == ""
        await fake.send_message_create(
            channel_id=CHANNEL_ID, author_id=ALICE_ID, content=f"<@{BOT_ID}> hi", mentions=[BOT_ID]
        )
        assert (await client.next_message()).content == f"<@{BOT_ID}> hi"


# -- messages out --------------------------------------------------------------------------------------------------


async def test_send_and_reply_are_recorded(fake: FakeDiscord, bot: RecordingClient) -> None:
    channel = bot.get_channel(CHANNEL_ID)
    assert isinstance(channel, discord.TextChannel)
    sent = await channel.send(f"hi <@{ALICE_ID}>")
    posted = await fake.next_message()
    assert posted.id == sent.id and posted.channel_id == CHANNEL_ID and posted.content == f"hi <@{ALICE_ID}>"
    assert posted.pinged_user_ids == (ALICE_ID,)  # no allowed_mentions: content mentions ping

    await fake.send_message_create(channel_id=CHANNEL_ID, author_id=ALICE_ID, content="hey bot")
    incoming = await bot.next_message()
    await incoming.reply(f"hello <@{ALICE_ID}>", allowed_mentions=discord.AllowedMentions.none(), mention_author=False)
    reply = await fake.next_message()
    assert reply.message_reference is not None and reply.message_reference["message_id"] == incoming.id
    assert reply.allowed_mentions == {"parse": [], "replied_user": False}
    assert reply.pinged_user_ids == ()


async def test_edit_and_typing_are_recorded(fake: FakeDiscord, bot: RecordingClient) -> None:
    channel = bot.get_channel(CHANNEL_ID)
    assert isinstance(channel, discord.TextChannel)
    async with channel.typing():
        message = await channel.send("thinking...")
    assert fake.typing_calls == [CHANNEL_ID]
    edited = await message.edit(content="done")
    edit = await fake.next_edit()
    assert edit.message_id == message.id and edit.content == "done"
    assert edited.content == "done" and edited.edited_at is not None


async def test_dm_send_via_user(fake: FakeDiscord, bot: RecordingClient) -> None:
    alice = await bot.fetch_user(ALICE_ID)  # not cached: no GUILD_MEMBERS intent
    await alice.send("direct")
    posted = await fake.next_message()
    assert posted.channel_id == DM_CHANNEL_ID and posted.content == "direct"


async def test_content_over_2000_chars_is_rejected(fake: FakeDiscord, bot: RecordingClient) -> None:
    channel = bot.get_channel(CHANNEL_ID)
    assert isinstance(channel, discord.TextChannel)
    with pytest.raises(discord.HTTPException) as error:
        await channel.send("x" * 2001)
    assert error.value.status == 400 and error.value.code == 50035
    await channel.send("x" * 2000)
    assert len((await fake.next_message()).content) == 2000


async def test_429_is_retried_and_posted_once(fake: FakeDiscord, bot: RecordingClient) -> None:
    fake.fail_next("POST", "/channels/{id}/messages", status=429, retry_after=0.05)
    channel = bot.get_channel(CHANNEL_ID)
    assert isinstance(channel, discord.TextChannel)
    await channel.send("eventually")
    assert (await fake.next_message()).content == "eventually"
    assert fake.posted.empty()
    assert len(fake.requests_to("POST", "/channels/{id}/messages")) == 2


async def test_scripted_500_has_discord_error_body(fake: FakeDiscord) -> None:
    # discord.py sleeps 1 s before retrying a 5xx, so this checks the wire format without a client.
    fake.fail_next("GET", "/channels/{id}", status=500)
    headers = {"Authorization": f"Bot {DEFAULT_TOKEN}"}
    async with aiohttp.ClientSession(headers=headers) as session:
        async with session.get(f"{fake.api_url}/channels/{CHANNEL_ID}") as failed:
            assert failed.status == 500 and failed.content_type == "application/json"
            assert (await failed.json())["code"] == 0
        async with session.get(f"{fake.api_url}/channels/{CHANNEL_ID}") as ok:
            assert ok.status == 200 and (await ok.json())["name"] == "general"


async def test_403_raises_forbidden(fake: FakeDiscord, bot: RecordingClient) -> None:
    fake.fail_next("POST", f"/channels/{CHANNEL_ID}/messages", status=403)
    channel = bot.get_channel(CHANNEL_ID)
    assert isinstance(channel, discord.TextChannel)
    with pytest.raises(discord.Forbidden) as error:
        await channel.send("nope")
    assert error.value.code == 50013
    assert fake.posted.empty()


# -- nonces, lost answers and history -----------------------------------------------------------------------------


def text_channel(client: discord.Client) -> discord.TextChannel:
    channel = client.get_channel(CHANNEL_ID)
    assert isinstance(channel, discord.TextChannel)
    return channel


def message_creates(fake: FakeDiscord, message_id: int) -> list[dict[str, Any]]:
    return [d.data for d in fake.dispatches if d.event == "MESSAGE_CREATE" and d.data["id"] == str(message_id)]


async def test_send_twice_with_one_nonce_creates_one_message(fake: FakeDiscord, bot: RecordingClient) -> None:
    channel = text_channel(bot)
    first = await channel.send("part one", nonce="turn-1:0")
    again = await channel.send("part one", nonce="turn-1:0")

    assert again.id == first.id and again.content == "part one" and again.nonce == "turn-1:0"
    assert [m.id for m in fake.sent_messages] == [first.id]
    assert (await fake.next_message()).nonce == "turn-1:0" and fake.posted.empty()
    assert [d["nonce"] for d in message_creates(fake, first.id)] == ["turn-1:0"]  # one dispatch, carrying it
    assert [(d.message_id, d.nonce) for d in fake.deduplicated_sends] == [(first.id, "turn-1:0")]
    # discord.py has no enforce_nonce argument: its handle_message_parameters always adds it to a nonce.
    bodies = [r.body for r in fake.requests_to("POST", "/channels/{id}/messages")]
    assert [(b["nonce"], b["enforce_nonce"]) for b in bodies] == [("turn-1:0", True), ("turn-1:0", True)]
    assert "nonce" not in fake.messages[first.id]  # Discord keeps nonces ephemerally, not on the message


async def test_discord_py_gives_every_send_its_own_enforced_nonce(fake: FakeDiscord, bot: RecordingClient) -> None:
    channel = text_channel(bot)
    await channel.send("same words")
    await channel.send("same words")
    bodies = [r.body for r in fake.requests_to("POST", "/channels/{id}/messages")]
    assert all(b["enforce_nonce"] is True for b in bodies)
    assert bodies[0]["nonce"] != bodies[1]["nonce"]  # secrets.randbits(64), sent as a string
    assert len(fake.sent_messages) == 2 and fake.deduplicated_sends == []


async def test_nonce_is_forgotten_after_the_window() -> None:
    clock = ManualClock()
    async with fake_discord(clock=clock, nonce_window_seconds=300.0) as fake, running(RecordingClient(), fake) as bot:
        channel = text_channel(bot)
        first = await channel.send("hello", nonce=42)
        clock.now += 300.0
        assert (await channel.send("hello", nonce="42")).id == first.id  # an int nonce and its string are one
        clock.now += 0.001
        later = await channel.send("hello", nonce=42)
        assert later.id != first.id and len(fake.sent_messages) == 2


async def test_nonce_of_a_deleted_message_is_unknown_message(fake: FakeDiscord, bot: RecordingClient) -> None:
    channel = text_channel(bot)
    sent = await channel.send("soon gone", nonce="turn-2:0")
    await sent.delete()
    with pytest.raises(discord.NotFound) as error:
        await channel.send("soon gone", nonce="turn-2:0")
    assert error.value.code == 10008 and len(fake.sent_messages) == 1


async def test_nonce_longer_than_25_characters_is_rejected(fake: FakeDiscord, bot: RecordingClient) -> None:
    with pytest.raises(discord.HTTPException) as error:
        await text_channel(bot).send("x", nonce="n" * (MAX_NONCE_LENGTH + 1))
    assert error.value.status == 400 and error.value.code == 50035
    assert fake.sent_messages == []


async def test_lost_create_answer_then_resend_returns_the_stored_message(
    fake: FakeDiscord, bot: RecordingClient
) -> None:
    channel = text_channel(bot)
    fake.lose_responses("POST", "/channels/{id}/messages", status=503)  # 503: discord.py raises, no retry

    with pytest.raises(discord.DiscordServerError):
        await channel.send("answer", nonce="turn-3:0")
    [stored] = fake.sent_messages
    assert stored.content == "answer" and fake.messages[stored.id]["content"] == "answer"
    assert len(message_creates(fake, stored.id)) == 1  # Discord acted: it dispatched the message too
    [lost] = fake.lost_responses
    assert lost == LostResponse("POST", f"/channels/{CHANNEL_ID}/messages", 503, 200, lost.lost_body)
    assert lost.lost_body["id"] == str(stored.id)

    resent = await channel.send("answer", nonce="turn-3:0")
    assert resent.id == stored.id and len(fake.sent_messages) == 1


async def test_discord_py_retries_a_lost_500_and_the_nonce_keeps_one_message(
    fake: FakeDiscord, bot: RecordingClient
) -> None:
    # discord.py sleeps 1 s before retrying a 500 with the same payload, nonce included: this test waits that long.
    fake.lose_responses("POST", "/channels/{id}/messages", status=500)
    sent = await text_channel(bot).send("exactly once")
    assert [m.id for m in fake.sent_messages] == [sent.id]
    assert len(fake.requests_to("POST", "/channels/{id}/messages")) == 2
    assert [d.message_id for d in fake.deduplicated_sends] == [sent.id]


async def test_dropped_create_raises_but_the_message_exists(fake: FakeDiscord, bot: RecordingClient) -> None:
    fake.drop_responses("POST", "/channels/{id}/messages")
    with pytest.raises(aiohttp.ServerDisconnectedError):
        await text_channel(bot).send("posted in the dark", nonce="turn-4:0")
    assert [m.content for m in fake.sent_messages] == ["posted in the dark"]
    assert fake.lost_responses[0].status is None
    assert (await text_channel(bot).send("posted in the dark", nonce="turn-4:0")).id == fake.sent_messages[0].id


async def test_lost_edit_answer_still_edits(fake: FakeDiscord, bot: RecordingClient) -> None:
    message = await text_channel(bot).send("draft")
    fake.fail_next("PATCH", "/channels/{id}/messages/{mid}", status=403)
    fake.lose_responses("PATCH", "/channels/{id}/messages/{mid}", status=503)
    with pytest.raises(discord.Forbidden):
        await message.edit(content="refused")
    with pytest.raises(discord.DiscordServerError):
        await message.edit(content="final")
    assert fake.messages[message.id]["content"] == "final"
    assert (await fake.next_edit()).content == "final"  # the refused edit never reached the message
    assert [(r.method, r.lost_status) for r in fake.lost_responses] == [("PATCH", 200)]


async def test_history_pages_newest_first_with_before_after_around(fake: FakeDiscord, bot: RecordingClient) -> None:
    channel = text_channel(bot)
    ids = [(await channel.send(f"m{i}")).id for i in range(7)]

    assert [m.id async for m in channel.history(limit=3)] == ids[:-4:-1]
    assert [m.id async for m in channel.history(limit=2, before=discord.Object(ids[5]))] == [ids[4], ids[3]]
    # discord.py reads an after page oldest first and pages on from its newest message: data[0].
    assert [m.id async for m in channel.history(limit=3, after=discord.Object(ids[1]))] == ids[2:5]
    assert [m.id async for m in channel.history(limit=None, after=discord.Object(ids[1]))] == ids[2:]
    assert [m.id async for m in channel.history(limit=3, around=discord.Object(ids[3]))] == [ids[4], ids[3], ids[2]]
    assert [m.id async for m in channel.history(limit=4, around=discord.Object(ids[6]))] == ids[:-5:-1]
    assert fake.requests_to("GET", "/channels/{id}/messages")[0].query == {"limit": "3"}

    headers = {"Authorization": f"Bot {DEFAULT_TOKEN}"}
    async with aiohttp.ClientSession(headers=headers) as session:
        url = f"{fake.api_url}/channels/{CHANNEL_ID}/messages"
        async with session.get(url) as listed:
            assert [int(m["id"]) for m in await listed.json()] == ids[::-1]  # default limit 50
        for limit in ("0", "101", "many"):
            async with session.get(url, params={"limit": limit}) as refused:
                assert refused.status == 400 and (await refused.json())["code"] == 50035


# -- reconnects ----------------------------------------------------------------------------------------------------


async def test_reconnect_resumes_and_replayed_event_is_delivered_again(fake: FakeDiscord, bot: RecordingClient) -> None:
    message_id = await fake.send_message_create(channel_id=CHANNEL_ID, author_id=ALICE_ID, content="once")
    assert (await bot.next_message()).id == message_id

    await fake.request_reconnect()
    await fake.wait_for_resume()
    await asyncio.wait_for(bot.resumed.wait(), 5)
    assert fake.identify_count == 1 and fake.resume_count == 1
    assert fake.connections[-1].path == "/gateway-resume"  # discord.py resumes at resume_gateway_url

    await fake.replay(message_id)
    again = await bot.next_message()
    assert again.id == message_id and again.content == "once"
    assert bot.ws.sequence == fake.sequence()  # the client tracked every seq, replays and RESUMED included


async def test_events_missed_while_disconnected_are_replayed_on_resume(fake: FakeDiscord, bot: RecordingClient) -> None:
    await fake.close_gateway(4000)
    missed = await fake.send_message_create(channel_id=CHANNEL_ID, author_id=ALICE_ID, content="while away")
    assert (await bot.next_message()).id == missed
    await fake.wait_for_resume()
    assert fake.identify_count == 1


async def test_resume_with_rewind_redelivers_a_seen_event(fake: FakeDiscord, bot: RecordingClient) -> None:
    message_id = await fake.send_message_create(channel_id=CHANNEL_ID, author_id=ALICE_ID, content="dup me")
    assert (await bot.next_message()).id == message_id
    await fake.request_reconnect(rewind=1)
    assert (await bot.next_message()).id == message_id


async def test_invalid_session_makes_client_identify_again(fake: FakeDiscord) -> None:
    async with running(NoIdentifyDelayClient(), fake) as client:
        client.ready.clear()
        await fake.invalidate_session(resumable=False)
        await fake.wait_ready(count=2)
        await asyncio.wait_for(client.ready.wait(), 5)
        assert fake.identify_count == 2 and fake.resume_count == 0


async def test_discord_py_close_leaves_the_session_resumable(fake: FakeDiscord) -> None:
    async with running(RecordingClient(), fake):
        pass
    # Client.close() asks for 1000, but aiohttp first wakes the pending receive() and discord.py's poll_event
    # closes with 4000 before that: Discord (and the fake) keep such a session resumable.
    assert fake.connections[-1].close_code == 4000 and not fake.connections[-1].closed_by_server
    assert not fake.connected
    await fake.send_message_create(channel_id=CHANNEL_ID, author_id=ALICE_ID, content="buffered for a RESUME")


async def test_close_1000_invalidates_the_session(fake: FakeDiscord) -> None:
    async with aiohttp.ClientSession() as session, session.ws_connect(f"{fake.gateway_url}?v=10") as ws:
        assert (await ws.receive_json(timeout=5))["op"] == 10
        await ws.send_json({"op": 2, "d": {"token": DEFAULT_TOKEN, "intents": int(Intent.GUILDS), "properties": {}}})
        await fake.wait_ready()
        await ws.close(code=1000)
    await fake.wait_disconnected()
    with pytest.raises(RuntimeError, match="wait_ready"):
        await fake.send_message_create(channel_id=CHANNEL_ID, author_id=ALICE_ID, content="nobody home")


# -- application commands and interactions ------------------------------------------------------------------------


async def test_command_sync_and_ephemeral_interaction_response(fake: FakeDiscord, bot: RecordingClient) -> None:
    tree = app_commands.CommandTree(bot)
    invoked = asyncio.Event()

    @tree.command(name="reset", description="Forget this conversation")
    async def reset(interaction: discord.Interaction) -> None:
        invoked.set()
        await interaction.response.send_message("Conversation reset.", ephemeral=True)

    synced = await tree.sync()
    assert [c.name for c in synced] == ["reset"]
    assert synced[0].id == int(fake.global_commands["reset"]["id"])
    assert (await fake.next_command_sync()).guild_id is None

    sent = await fake.send_interaction("reset", channel_id=CHANNEL_ID, user_id=ALICE_ID)
    response = await fake.next_interaction_response()
    assert invoked.is_set()
    assert response.interaction_id == sent.id and response.type == 4
    assert response.content == "Conversation reset."
    assert response.flags & EPHEMERAL and response.ephemeral


async def test_guild_command_defer_followup_and_edit(fake: FakeDiscord, bot: RecordingClient) -> None:
    tree = app_commands.CommandTree(bot)
    guild = discord.Object(GUILD_ID)

    @tree.command(name="ask", description="Ask the agent", guild=guild)
    @app_commands.describe(question="What to ask")
    async def ask(interaction: discord.Interaction, question: str) -> None:
        await interaction.response.defer(thinking=True)
        await interaction.followup.send(f"answer to {question}")
        await interaction.edit_original_response(content="all done")

    await tree.sync(guild=guild)
    assert (await fake.next_command_sync()).guild_id == GUILD_ID
    assert "ask" in fake.guild_commands[GUILD_ID]

    sent = await fake.send_interaction("ask", channel_id=CHANNEL_ID, user_id=ALICE_ID, options={"question": "why"})
    deferred = await fake.next_interaction_response()
    assert deferred.type == 5
    followup = await fake.next_followup()
    assert followup.content == "answer to why" and followup.interaction_token == sent.token
    edit = await fake.next_edit()
    assert edit.content == "all done" and edit.interaction_token == sent.token


# -- transport details ---------------------------------------------------------------------------------------------


async def test_zlib_stream_frames_end_with_sync_flush_suffix(fake: FakeDiscord) -> None:
    url = f"{fake.gateway_url}?v=10&encoding=json&compress=zlib-stream"
    inflater = zlib.decompressobj()
    async with aiohttp.ClientSession() as session, session.ws_connect(url) as ws:
        frame = await ws.receive_bytes(timeout=5)
        assert frame.endswith(b"\x00\x00\xff\xff")
        hello = inflater.decompress(frame)
        assert b'"op":10' in hello and str(fake.heartbeat_interval_ms).encode() in hello
        await ws.send_json({"op": 1, "d": None})
        ack = inflater.decompress(await ws.receive_bytes(timeout=5))
        assert b'"op":11' in ack


async def test_zstd_stream_frames_decode_one_message_each(fake: FakeDiscord) -> None:
    zstandard = pytest.importorskip("zstandard")  # discord.py uses zstd-stream only when a binding is importable
    url = f"{fake.gateway_url}?v=10&encoding=json&compress=zstd-stream"
    stream = zstandard.ZstdDecompressor().decompressobj()
    async with aiohttp.ClientSession() as session, session.ws_connect(url) as ws:
        assert b'"op":10' in stream.decompress(await ws.receive_bytes(timeout=5))
        await ws.send_json({"op": 1, "d": None})
        assert b'"op":11' in stream.decompress(await ws.receive_bytes(timeout=5))


async def test_sharded_client_gets_its_guilds_per_shard() -> None:
    class ShardedClient(discord.AutoShardedClient):
        def __init__(self) -> None:
            super().__init__(intents=full_intents(), guild_ready_timeout=GUILD_READY_TIMEOUT)
            self.ready = asyncio.Event()
            self.inbox: asyncio.Queue[discord.Message] = asyncio.Queue()

        async def before_identify_hook(self, shard_id: int | None, *, initial: bool = False) -> None:
            return None

        async def on_ready(self) -> None:
            self.ready.set()

        async def on_message(self, message: discord.Message) -> None:
            self.inbox.put_nowait(message)

    async with fake_discord(shard_count=2) as fake:
        fake.add_guild(OTHER_GUILD_ID, "Other Guild")
        fake.add_text_channel(OTHER_CHANNEL_ID, OTHER_GUILD_ID)
        client = ShardedClient()
        await client.login(DEFAULT_TOKEN)
        connect = asyncio.create_task(client.connect())
        try:
            await asyncio.wait_for(client.ready.wait(), 5)
            assert sorted(i.shard for i in fake.identifies if i.shard) == [(0, 2), (1, 2)]
            # AutoShardedClient asks /gateway/bot for the shard count and URL instead of using DEFAULT_GATEWAY.
            assert fake.requests_to("GET", "/gateway/bot")
            assert client.get_guild(OTHER_GUILD_ID) is not None and client.get_guild(GUILD_ID) is not None
            await fake.send_message_create(channel_id=OTHER_CHANNEL_ID, author_id=BOB_ID, content="shard one")
            message = await asyncio.wait_for(client.inbox.get(), 5)
            assert message.guild is not None and message.guild.shard_id == 1
        finally:
            await client.close()
            await asyncio.wait_for(connect, 5)
