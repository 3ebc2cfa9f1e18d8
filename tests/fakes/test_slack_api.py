"""Drive FakeSlack with the real slack_sdk / slack_bolt clients, so the fake cannot drift from their wire format."""

from __future__ import annotations

__all__: list[str] = []

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from slack_bolt.adapter.socket_mode.aiohttp import AsyncSocketModeHandler
from slack_bolt.app.async_app import AsyncApp
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncRateLimitErrorRetryHandler,
    AsyncServerErrorRetryHandler,
)
from slack_sdk.http_retry.builtin_interval_calculators import FixedValueRetryIntervalCalculator
from slack_sdk.signature import SignatureVerifier
from slack_sdk.socket_mode.aiohttp import SocketModeClient
from slack_sdk.socket_mode.async_client import AsyncBaseSocketModeClient
from slack_sdk.socket_mode.request import SocketModeRequest
from slack_sdk.socket_mode.response import SocketModeResponse
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.webhook.async_client import AsyncWebhookClient

from tests.fakes.slack_api import (
    CHANNEL_NOT_FOUND,
    MAX_BLOCKS,
    MAX_MARKDOWN_BLOCKS_LENGTH,
    MAX_SUGGESTED_PROMPTS,
    MAX_TEXT_LENGTH,
    USER_NOT_FOUND,
    FakeSlack,
    app_mention,
    assistant_thread_started,
    channel_message,
    event_callback,
    im_message,
    sign,
    slash_command_form,
)

SIGNING_SECRET = "test-signing-secret"
WAIT = 5.0
NO_WAIT = FixedValueRetryIntervalCalculator(fixed_internal=0.0)  # retry at once: the tests count posts, not time


def reply_metadata(message_key: str, part: int = 0) -> dict[str, Any]:
    """The metadata the delivery runner marks each reply part with."""
    return {"event_type": "chat_gateway_reply", "event_payload": {"message_key": message_key, "part": part}}


@pytest.fixture
def client(slack: FakeSlack) -> AsyncWebClient:
    return AsyncWebClient(token="xoxb-test", base_url=slack.api_url)


@pytest.fixture
async def socket_client(slack: FakeSlack) -> AsyncIterator[SocketModeClient]:
    client = SocketModeClient(app_token="xapp-test", web_client=AsyncWebClient(base_url=slack.api_url))
    try:
        yield client
    finally:
        await client.close()


def _acking_listener(received: asyncio.Queue[SocketModeRequest], ack_payload: dict[str, Any] | None = None) -> Any:
    async def listener(client: AsyncBaseSocketModeClient, request: SocketModeRequest) -> None:
        await client.send_socket_mode_response(SocketModeResponse(request.envelope_id, payload=ack_payload))
        await received.put(request)

    return listener


async def _error_of(call: Any) -> str:
    with pytest.raises(SlackApiError) as caught:
        await call
    return str(caught.value.response["error"])


# ----------------------------------------------------------------------------- Web API


async def test_auth_test_and_post_message_are_recorded(slack: FakeSlack, client: AsyncWebClient) -> None:
    auth = await client.auth_test()
    assert (auth["user_id"], auth["bot_id"], auth["team_id"]) == ("UBOT", "BBOT", "T1")
    assert auth["url"].startswith("https://") and auth["team"] and auth["user"]

    first = await client.chat_postMessage(channel="C1", text="hello")
    second = await client.chat_postMessage(channel="C1", text="again")

    call = await slack.next_call("chat.postMessage", timeout=WAIT)
    assert call.args == {"channel": "C1", "text": "hello"}
    assert call.token == "xoxb-test"
    assert call.headers["Authorization"] == "Bearer xoxb-test"
    assert call.headers["Content-Type"].startswith("application/json")
    assert first["channel"] == "C1" and first["message"]["text"] == "hello"
    assert first["message"]["user"] == "UBOT" and first["message"]["bot_id"] == "BBOT"
    assert float(second["ts"]) > float(first["ts"])
    assert [c.args["text"] for c in slack.calls_to("chat.postMessage")] == ["hello", "again"]
    assert slack.message("C1", first["ts"]).visible_text == "hello"


async def test_query_string_methods_delete_and_react(slack: FakeSlack, client: AsyncWebClient) -> None:
    posted = await client.chat_postMessage(channel="C1", text="react to me")
    await client.reactions_add(channel="C1", name="eyes", timestamp=posted["ts"])
    assert await _error_of(client.reactions_add(channel="C1", name="eyes", timestamp=posted["ts"])) == "already_reacted"
    assert slack.reactions("C1", posted["ts"]) == ["eyes"]
    await client.reactions_remove(channel="C1", name="eyes", timestamp=posted["ts"])
    assert slack.reactions("C1", posted["ts"]) == []
    assert await _error_of(client.reactions_remove(channel="C1", name="eyes", timestamp=posted["ts"])) == "no_reaction"

    await client.chat_delete(channel="C1", ts=posted["ts"])
    assert slack.message("C1", posted["ts"]).deleted
    assert slack.messages("C1") == []
    delete = slack.calls_to("chat.delete")[0]
    assert delete.args["ts"] == posted["ts"] and delete.headers["Content-Type"] == "application/x-www-form-urlencoded"


async def test_form_encoded_body_is_parsed_like_json(slack: FakeSlack, client: AsyncWebClient) -> None:
    blocks = [{"type": "section", "text": {"type": "mrkdwn", "text": "*hi*"}}]
    await client.api_call("chat.postMessage", data={"channel": "C1", "text": "fallback", "blocks": json.dumps(blocks)})
    call = await slack.next_call("chat.postMessage", timeout=WAIT)
    assert call.args["blocks"] == blocks
    assert slack.message("C1", call.response["ts"]).visible_text == "*hi*"


async def test_text_over_limit_is_msg_too_long(client: AsyncWebClient) -> None:
    await client.chat_postMessage(channel="C1", text="x" * MAX_TEXT_LENGTH)
    assert await _error_of(client.chat_postMessage(channel="C1", text="x" * (MAX_TEXT_LENGTH + 1))) == "msg_too_long"


async def test_block_limits(client: AsyncWebClient) -> None:
    half = {"type": "markdown", "text": "m" * (MAX_MARKDOWN_BLOCKS_LENGTH // 2)}
    await client.chat_postMessage(channel="C1", text="ok", blocks=[half, half])
    too_long = [half, half, {"type": "markdown", "text": "m"}]
    assert await _error_of(client.chat_postMessage(channel="C1", text="x", blocks=too_long)) == "msg_blocks_too_long"
    many = [{"type": "divider"}] * (MAX_BLOCKS + 1)
    assert await _error_of(client.chat_postMessage(channel="C1", text="x", blocks=many)) == "invalid_blocks"


async def test_argument_errors(slack: FakeSlack, client: AsyncWebClient) -> None:
    assert await _error_of(client.chat_postMessage(channel=CHANNEL_NOT_FOUND, text="x")) == "channel_not_found"
    with pytest.warns(UserWarning, match="`text` argument is missing"):
        assert await _error_of(client.chat_postMessage(channel="C1")) == "no_text"
    assert await _error_of(client.chat_update(channel="C1", ts="1.000001", text="x")) == "message_not_found"
    assert await _error_of(client.users_info(user=USER_NOT_FOUND)) == "user_not_found"
    assert await _error_of(client.api_call("no.such.method")) == "unknown_method"
    assert await _error_of(AsyncWebClient(base_url=slack.api_url).auth_test()) == "not_authed"
    assert await _error_of(client.apps_connections_open(app_token="xoxb-test")) == "not_allowed_token_type"


async def test_scripted_failures_are_consumed_in_order(slack: FakeSlack, client: AsyncWebClient) -> None:
    posted = await client.chat_postMessage(channel="C1", text="v1")
    slack.fail_next("chat.update", error="channel_not_found")
    slack.fail_next("chat.update", status=500)

    assert await _error_of(client.chat_update(channel="C1", ts=posted["ts"], text="v2")) == "channel_not_found"
    with pytest.raises(SlackApiError) as caught:
        await client.chat_update(channel="C1", ts=posted["ts"], text="v2")
    assert caught.value.response.status_code == 500
    await client.chat_update(channel="C1", ts=posted["ts"], text="v2")
    assert [c.status for c in slack.calls_to("chat.update")] == [200, 500, 200]
    assert slack.message("C1", posted["ts"]).text == "v2"


async def test_ratelimit_is_retried_by_sdk_handler(slack: FakeSlack) -> None:
    client = AsyncWebClient(
        token="xoxb-test",
        base_url=slack.api_url,
        retry_handlers=[AsyncRateLimitErrorRetryHandler(max_retry_count=1)],
    )
    slack.fail_next("chat.postMessage", error="ratelimited", status=429, retry_after=0)

    response = await client.chat_postMessage(channel="C1", text="eventually")

    assert response["ok"] and slack.message("C1", response["ts"]).text == "eventually"
    limited, accepted = slack.calls_to("chat.postMessage")
    assert (limited.status, limited.response["error"]) == (429, "ratelimited")
    assert accepted.status == 200 and accepted.args == limited.args


async def test_ratelimit_surfaces_retry_after_without_handler(slack: FakeSlack, client: AsyncWebClient) -> None:
    slack.fail_next("chat.postMessage", status=429, retry_after=7)
    with pytest.raises(SlackApiError) as caught:
        await client.chat_postMessage(channel="C1", text="x")
    assert caught.value.response.status_code == 429
    assert caught.value.response.headers["Retry-After"] == "7"
    assert caught.value.response["error"] == "ratelimited"


async def test_update_changes_the_stored_message(slack: FakeSlack, client: AsyncWebClient) -> None:
    posted = await client.chat_postMessage(channel="C1", text="draft", thread_ts="1700000000.000001")
    updated = await client.chat_update(
        channel="C1", ts=posted["ts"], text="final", blocks=[{"type": "markdown", "text": "**final**"}]
    )
    assert updated["text"] == "final" and updated["message"]["edited"]["user"] == "UBOT"
    message = slack.message("C1", posted["ts"])
    assert (message.text, message.visible_text, message.thread_ts) == ("final", "**final**", "1700000000.000001")


async def test_cannot_update_someone_elses_message(slack: FakeSlack, client: AsyncWebClient) -> None:
    theirs = slack.add_message("C1", "mine, not yours", user="U2")
    assert await _error_of(client.chat_update(channel="C1", ts=theirs.ts, text="x")) == "cant_update_message"


async def test_chat_stream_helper_builds_exact_text(slack: FakeSlack, client: AsyncWebClient) -> None:
    parent = slack.add_message("C1", "question", user="U1")
    pieces = ["**Hello", " wor", "ld**", "\n\nsecond paragraph ", "with *more*", " text."]

    streamer = await client.chat_stream(
        channel="C1", thread_ts=parent.ts, recipient_team_id="T1", recipient_user_id="U1", buffer_size=8
    )
    for piece in pieces:
        await streamer.append(markdown_text=piece)
    stopped = await streamer.stop(markdown_text=" Bye.")

    message = slack.message("C1", stopped["ts"])
    assert message.text == "".join(pieces) + " Bye."
    assert not message.streaming and message.thread_ts == parent.ts
    methods = [c.method for c in slack.calls if c.method.startswith("chat.") and c.method.endswith("Stream")]
    assert methods[0] == "chat.startStream" and methods[-1] == "chat.stopStream"
    assert "chat.appendStream" in methods
    start = slack.calls_to("chat.startStream")[0]
    assert start.args["chunks"][0]["type"] == "markdown_text"
    assert start.args["recipient_user_id"] == "U1"
    assert await _error_of(client.chat_appendStream(channel="C1", ts=stopped["ts"], markdown_text="late")) == (
        "message_not_in_streaming_state"
    )


async def test_stream_stop_blocks_render_after_streamed_text(slack: FakeSlack, client: AsyncWebClient) -> None:
    started = await client.chat_startStream(channel="C1", thread_ts="1700000000.000001", markdown_text="Answer.")
    await client.chat_appendStream(channel="C1", ts=started["ts"], markdown_text=" More.")
    footer = [{"type": "context", "elements": [{"type": "mrkdwn", "text": "sources: 2"}]}]
    await client.chat_stopStream(channel="C1", ts=started["ts"], blocks=footer)
    assert slack.message("C1", started["ts"]).visible_text == "Answer. More.\nsources: 2"


async def test_thread_replies_users_and_assistant_status(slack: FakeSlack, client: AsyncWebClient) -> None:
    parent = slack.add_message("C1", "can you help?", user="U1")
    await client.assistant_threads_setStatus(channel_id="C1", thread_ts=parent.ts, status="is thinking...")
    assert slack.assistant_status("C1", parent.ts) == "is thinking..."
    reply = await client.chat_postMessage(channel="C1", text="sure", thread_ts=parent.ts)
    assert slack.assistant_status("C1", parent.ts) is None  # Slack clears it when the app replies

    replies = await client.conversations_replies(channel="C1", ts=parent.ts)
    assert [m["text"] for m in replies["messages"]] == ["can you help?", "sure"]
    assert replies["messages"][0]["reply_count"] == 1
    assert replies["messages"][1]["parent_user_id"] == "U1"
    assert slack.calls_to("conversations.replies")[0].http_method == "GET"
    page = await client.conversations_replies(channel="C1", ts=reply["ts"], limit=1)
    assert page["has_more"] and page["response_metadata"]["next_cursor"]

    slack.add_user("U1", name="alice", real_name="Alice Liddell", display_name="ali")
    user = (await client.users_info(user="U1"))["user"]
    assert (user["name"], user["real_name"], user["profile"]["display_name"]) == ("alice", "Alice Liddell", "ali")


async def test_assistant_thread_title_and_suggested_prompts(slack: FakeSlack, client: AsyncWebClient) -> None:
    thread = assistant_thread_started(channel="D1")["assistant_thread"]
    prompts = [{"title": "Hi", "message": "Say hi"}]
    await client.assistant_threads_setSuggestedPrompts(channel_id="D1", thread_ts=thread["thread_ts"], prompts=prompts)
    await client.assistant_threads_setTitle(channel_id="D1", thread_ts=thread["thread_ts"], title="Greetings")
    assert slack.suggested_prompts("D1", thread["thread_ts"]) == prompts
    assert slack.assistant_title("D1", thread["thread_ts"]) == "Greetings"
    assert slack.calls_to("assistant.threads.setTitle")[0].args["title"] == "Greetings"  # sent as query params
    with pytest.raises(SlackApiError) as caught:
        too_many = prompts * (MAX_SUGGESTED_PROMPTS + 1)
        await client.assistant_threads_setSuggestedPrompts(
            channel_id="D1", thread_ts=thread["thread_ts"], prompts=too_many
        )
    assert caught.value.response["error"] == "invalid_arguments"


async def test_post_ephemeral(slack: FakeSlack, client: AsyncWebClient) -> None:
    response = await client.chat_postEphemeral(channel="C1", user="U1", text="only you")
    [ephemeral] = slack.ephemeral_messages
    assert (ephemeral.user, ephemeral.text, ephemeral.message_ts) == ("U1", "only you", response["message_ts"])
    assert slack.messages("C1") == []


# ----------------------------------------------------------------------------- message metadata and history


async def test_metadata_round_trip_through_conversations_replies(slack: FakeSlack, client: AsyncWebClient) -> None:
    parent = slack.add_message("C1", "question", user="U1")
    posted = await client.chat_postMessage(
        channel="C1", text="answer", thread_ts=parent.ts, metadata=reply_metadata("turn-1", part=0)
    )
    # Like Slack, the post's own answer passes the event_type on but not the payload.
    assert posted["message"]["metadata"] == {"event_type": "chat_gateway_reply"}
    assert slack.calls_to("chat.postMessage")[0].args["metadata"] == reply_metadata("turn-1", part=0)

    full = await client.conversations_replies(channel="C1", ts=parent.ts, include_all_metadata=True)
    bare = await client.conversations_replies(channel="C1", ts=parent.ts)

    question, answer = full["messages"]
    assert "metadata" not in question
    assert answer["metadata"] == reply_metadata("turn-1", part=0)
    assert (answer["ts"], answer["user"], answer["bot_id"], answer["app_id"]) == (
        posted["ts"],
        "UBOT",
        "BBOT",
        "AFAKEAPP",
    )
    assert answer["thread_ts"] == parent.ts
    assert bare["messages"][1]["metadata"] == {"event_type": "chat_gateway_reply"}
    assert slack.calls_to("conversations.replies")[0].args["include_all_metadata"] == "1"  # slack_sdk's bool


async def test_metadata_in_a_form_body_is_decoded(slack: FakeSlack, client: AsyncWebClient) -> None:
    form = {"channel": "D1", "text": "hi", "metadata": json.dumps(reply_metadata("turn-2", part=1))}
    posted = await client.api_call("chat.postMessage", data=form)
    call = await slack.next_call("chat.postMessage", timeout=WAIT)
    assert call.headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert call.args["metadata"] == reply_metadata("turn-2", part=1)
    assert slack.message("D1", posted["ts"]).metadata == reply_metadata("turn-2", part=1)


async def test_update_keeps_replaces_or_removes_metadata(slack: FakeSlack, client: AsyncWebClient) -> None:
    posted = await client.chat_postMessage(channel="C1", text="v1", metadata=reply_metadata("turn-3"))
    await client.chat_update(channel="C1", ts=posted["ts"], text="v2")
    assert slack.message("C1", posted["ts"]).metadata == reply_metadata("turn-3")  # left out: kept

    updated = await client.chat_update(channel="C1", ts=posted["ts"], text="v3", metadata=reply_metadata("turn-3", 1))
    assert updated["message"]["metadata"] == {"event_type": "chat_gateway_reply"}
    assert slack.message("C1", posted["ts"]).metadata == reply_metadata("turn-3", 1)

    await client.api_call("chat.update", data={"channel": "C1", "ts": posted["ts"], "text": "v4", "metadata": "{}"})
    assert slack.message("C1", posted["ts"]).metadata is None  # an empty object removes it


async def test_invalid_metadata_is_refused_or_dropped_with_a_warning(slack: FakeSlack, client: AsyncWebClient) -> None:
    not_json = {"channel": "C1", "text": "x", "metadata": "not json"}
    assert await _error_of(client.api_call("chat.postMessage", data=not_json)) == "invalid_metadata_format"
    assert slack.messages("C1") == []

    bad_type = {"event_type": "chat.gateway.reply", "event_payload": {"message_key": "k"}}
    posted = await client.chat_postMessage(channel="C1", text="posted anyway", metadata=bad_type)
    assert posted["warning"] == "invalid_metadata_schema"
    assert posted["response_metadata"]["warnings"] == ["invalid_metadata_schema"]
    assert slack.message("C1", posted["ts"]).metadata is None


async def test_conversations_history_pages_top_level_newest_first(slack: FakeSlack, client: AsyncWebClient) -> None:
    first = slack.add_message("D1", "hello", user="U1")
    answer = await client.chat_postMessage(channel="D1", text="hi there", metadata=reply_metadata("turn-4"))
    await client.chat_postMessage(channel="D1", text="in a thread", thread_ts=first.ts)
    slack.add_message("D1", "and now?", user="U1")

    page = await client.conversations_history(channel="D1", limit=2, include_all_metadata=True)
    assert [m["text"] for m in page["messages"]] == ["and now?", "hi there"]  # the thread reply is not top level
    assert page["messages"][1]["metadata"] == reply_metadata("turn-4")
    assert page["messages"][1]["bot_id"] == "BBOT" and page["messages"][1]["ts"] == answer["ts"]
    assert page["has_more"] and page["pin_count"] == 0

    slack.add_message("D1", "posted between the pages", user="U1")  # cursors name a ts: page two does not shift
    rest = await client.conversations_history(channel="D1", limit=2, cursor=page["response_metadata"]["next_cursor"])
    assert [m["text"] for m in rest["messages"]] == ["hello"]
    assert rest["messages"][0]["reply_count"] == 1
    assert not rest["has_more"] and rest["response_metadata"]["next_cursor"] == ""
    assert slack.calls_to("conversations.history")[0].http_method == "GET"


async def test_history_and_replies_honour_oldest_latest_inclusive(slack: FakeSlack, client: AsyncWebClient) -> None:
    parent, one, two, three = (slack.add_message("C1", f"m{i}", user="U1") for i in range(4))
    for message in (one, two, three):
        message.thread_ts = parent.ts

    replies = await client.conversations_replies(channel="C1", ts=parent.ts, oldest=one.ts, latest=three.ts)
    assert [m["text"] for m in replies["messages"]] == ["m2"]
    inclusive = await client.conversations_replies(
        channel="C1", ts=parent.ts, oldest=one.ts, latest=three.ts, inclusive=True
    )
    assert [m["text"] for m in inclusive["messages"]] == ["m1", "m2", "m3"]
    paged = await client.conversations_replies(channel="C1", ts=two.ts, limit=3)
    assert [m["text"] for m in paged["messages"]] == ["m0", "m1", "m2"]
    tail = await client.conversations_replies(channel="C1", ts=two.ts, cursor=paged["response_metadata"]["next_cursor"])
    assert [m["text"] for m in tail["messages"]] == ["m3"]  # later pages carry no parent

    top = slack.add_message("C1", "top", user="U2")
    history = await client.conversations_history(channel="C1", oldest=parent.ts, inclusive=True)
    assert [m["text"] for m in history["messages"]] == ["top", "m0"]
    assert (await client.conversations_history(channel="C1", latest=top.ts))["messages"][0]["text"] == "m0"
    assert await _error_of(client.conversations_history(channel="C1", latest="yesterday")) == "invalid_ts_latest"
    assert await _error_of(client.conversations_history(channel="C1", cursor="bogus")) == "invalid_cursor"


# ----------------------------------------------------------------------------- lost responses


async def test_lost_response_stores_the_post_but_answers_500(slack: FakeSlack, client: AsyncWebClient) -> None:
    parent = slack.add_message("C1", "question", user="U1")
    slack.lose_responses("chat.postMessage", count=1, status=500)

    with pytest.raises(SlackApiError) as caught:
        await client.chat_postMessage(channel="C1", text="answer", thread_ts=parent.ts, metadata=reply_metadata("t5"))

    assert caught.value.response.status_code == 500 and caught.value.response["error"] == "internal_error"
    [call] = slack.calls_to("chat.postMessage")
    assert call.lost and not call.dropped and not call.ok and call.status == 500
    assert call.lost_response is not None and call.lost_response["ok"]
    # What a careful retry does: look for the part before posting it again, and find it.
    replies = await client.conversations_replies(channel="C1", ts=parent.ts, include_all_metadata=True)
    found = [
        m for m in replies["messages"] if m.get("metadata", {}).get("event_payload", {}).get("message_key") == "t5"
    ]
    assert [m["ts"] for m in found] == [call.lost_response["ts"]]
    await client.chat_postMessage(channel="C1", text="next one is answered", thread_ts=parent.ts)
    assert [c.status for c in slack.calls_to("chat.postMessage")] == [500, 200]


async def test_server_error_retry_handler_posts_twice_under_a_lost_response(slack: FakeSlack) -> None:
    client = AsyncWebClient(
        token="xoxb-test",
        base_url=slack.api_url,
        retry_handlers=[AsyncServerErrorRetryHandler(max_retry_count=1, interval_calculator=NO_WAIT)],
    )
    parent = slack.add_message("C1", "question", user="U1")
    slack.lose_responses("chat.postMessage")

    response = await client.chat_postMessage(channel="C1", text="answer", thread_ts=parent.ts)

    # The bug the knob reproduces: the SDK took the 500 for "not posted" and posted again.
    assert response["ok"]
    assert [m.text for m in slack.thread("C1", parent.ts)] == ["question", "answer", "answer"]
    assert [(c.status, c.lost) for c in slack.calls_to("chat.postMessage")] == [(500, True), (200, False)]


async def test_dropped_connection_is_retried_by_the_connection_error_handler(slack: FakeSlack) -> None:
    # AsyncConnectionErrorRetryHandler is in slack_sdk's default handlers; here it retries at once.
    retrying = AsyncWebClient(
        token="xoxb-test",
        base_url=slack.api_url,
        retry_handlers=[AsyncConnectionErrorRetryHandler(interval_calculator=NO_WAIT)],
    )
    slack.drop_responses("chat.postMessage")
    await retrying.chat_postMessage(channel="D1", text="twice")
    assert [m.text for m in slack.messages("D1")] == ["twice", "twice"]

    plain = AsyncWebClient(token="xoxb-test", base_url=slack.api_url, retry_handlers=[])
    slack.drop_responses("chat.postMessage")
    with pytest.raises(aiohttp.ServerDisconnectedError):
        await plain.chat_postMessage(channel="D1", text="once, unanswered")
    dropped = slack.calls_to("chat.postMessage")[-1]
    assert dropped.dropped and dropped.status == 0 and dropped.response == {}
    assert [m.text for m in slack.messages("D1")] == ["twice", "twice", "once, unanswered"]


async def test_lost_update_response_still_applies_the_edit(slack: FakeSlack, client: AsyncWebClient) -> None:
    posted = await client.chat_postMessage(channel="C1", text="draft")
    slack.fail_next("chat.update", status=503)
    slack.lose_responses("chat.update", count=2, status=503)

    for text in ("refused", "v2", "v3"):
        with pytest.raises(SlackApiError) as caught:
            await client.chat_update(channel="C1", ts=posted["ts"], text=text)
        assert caught.value.response.status_code == 503
    await client.chat_update(channel="C1", ts=posted["ts"], text="v4")

    # The scripted failure acted on nothing and used up no lost response; the lost ones took effect.
    updates = slack.calls_to("chat.update")
    assert [(c.args["text"], c.status, c.lost) for c in updates] == [
        ("refused", 503, False),
        ("v2", 503, True),
        ("v3", 503, True),
        ("v4", 200, False),
    ]
    assert slack.message("C1", posted["ts"]).text == "v4"
    assert updates[2].lost_response is not None and updates[2].lost_response["text"] == "v3"


# ----------------------------------------------------------------------------- Socket Mode


async def test_socket_mode_client_receives_and_acks_events(slack: FakeSlack, socket_client: SocketModeClient) -> None:
    received: asyncio.Queue[SocketModeRequest] = asyncio.Queue()
    socket_client.socket_mode_request_listeners.append(_acking_listener(received))
    await socket_client.connect()
    await slack.wait_socket_connected(WAIT)

    mention = app_mention("what's new?", thread_ts="1700000000.000001")
    envelope_id = await slack.send_event(mention)
    ack = await slack.wait_ack(envelope_id, timeout=WAIT)
    request = await asyncio.wait_for(received.get(), WAIT)

    assert ack.envelope_id == envelope_id and ack.payload is None
    assert (request.type, request.retry_attempt, request.retry_reason) == ("events_api", 0, "")
    assert request.payload["type"] == "event_callback"
    assert request.payload["event"]["text"] == "<@UBOT> what's new?"
    assert request.payload["authorizations"][0]["user_id"] == "UBOT"
    assert slack.calls_to("apps.connections.open")[0].token == "xapp-test"
    assert slack.message("C1", mention["ts"]).user == "U1"  # delivered events exist on the platform


async def test_resend_event_is_a_retry_of_the_same_event(slack: FakeSlack, socket_client: SocketModeClient) -> None:
    received: asyncio.Queue[SocketModeRequest] = asyncio.Queue()
    socket_client.socket_mode_request_listeners.append(_acking_listener(received))
    await socket_client.connect()
    await slack.wait_socket_connected(WAIT)

    first_id = await slack.send_event(channel_message("hi"))
    retry_id = await slack.resend_event(first_id)
    await slack.wait_ack(retry_id, timeout=WAIT)
    first, retry = await asyncio.wait_for(received.get(), WAIT), await asyncio.wait_for(received.get(), WAIT)

    assert retry_id != first_id
    assert retry.payload["event_id"] == first.payload["event_id"]
    assert (retry.retry_attempt, retry.retry_reason) == (1, "timeout")


async def test_socket_mode_client_reconnects_after_disconnect(
    slack: FakeSlack, socket_client: SocketModeClient
) -> None:
    received: asyncio.Queue[SocketModeRequest] = asyncio.Queue()
    socket_client.socket_mode_request_listeners.append(_acking_listener(received))
    await socket_client.connect()
    await slack.wait_socket_connected(WAIT)

    assert await slack.disconnect_sockets() == 1
    await slack.wait_socket_connected(WAIT, min_connections=2)

    assert len(slack.calls_to("apps.connections.open")) == 2
    envelope_id = await slack.send_event(im_message("still there?"))
    await slack.wait_ack(envelope_id, timeout=WAIT)
    assert (await asyncio.wait_for(received.get(), WAIT)).payload["event"]["channel_type"] == "im"


async def test_slash_command_ack_payload_and_response_url(slack: FakeSlack, socket_client: SocketModeClient) -> None:
    received: asyncio.Queue[SocketModeRequest] = asyncio.Queue()
    socket_client.socket_mode_request_listeners.append(_acking_listener(received, {"text": "on it"}))
    await socket_client.connect()
    await slack.wait_socket_connected(WAIT)

    envelope_id = await slack.send_slash_command("/ask", "why?", user_id="U2")
    ack = await slack.wait_ack(envelope_id, timeout=WAIT)
    request = await asyncio.wait_for(received.get(), WAIT)
    assert ack.payload == {"text": "on it"}
    assert request.type == "slash_commands" and request.accepts_response_payload
    assert (request.payload["command"], request.payload["text"], request.payload["user_id"]) == ("/ask", "why?", "U2")

    await AsyncWebhookClient(request.payload["response_url"]).send(text="done", response_type="in_channel")
    response = await slack.next_call("response_url", timeout=WAIT)
    assert (response.args["text"], response.args["response_type"]) == ("done", "in_channel")


async def test_bolt_socket_mode_app_replies_in_thread(slack: FakeSlack) -> None:
    app = AsyncApp(client=AsyncWebClient(token="xoxb-test", base_url=slack.api_url), request_verification_enabled=False)

    @app.event("app_mention")
    async def on_mention(event: dict[str, Any], say: Any) -> None:
        await say(text=f"echo: {event['text']}", thread_ts=event["ts"])

    handler = AsyncSocketModeHandler(app, app_token="xapp-test")
    await handler.connect_async()
    try:
        await slack.wait_socket_connected(WAIT)
        mention = app_mention("ping")
        await slack.wait_ack(await slack.send_event(mention), timeout=WAIT)
        reply = await slack.next_call("chat.postMessage", timeout=WAIT)
    finally:
        await handler.close_async()

    # Bolt's context client carries the workspace as a default param, so team_id rides along.
    assert reply.args == {"channel": "C1", "text": "echo: <@UBOT> ping", "thread_ts": mention["ts"], "team_id": "T1"}
    assert [m.text for m in slack.thread("C1", mention["ts"])] == ["<@UBOT> ping", "echo: <@UBOT> ping"]


# ----------------------------------------------------------------------------- HTTP mode helpers


def test_sign_is_accepted_by_signature_verifier() -> None:
    body = json.dumps(event_callback(app_mention("hi"))).encode()
    verifier = SignatureVerifier(SIGNING_SECRET)

    assert verifier.is_valid_request(body, sign(body, SIGNING_SECRET))
    assert not verifier.is_valid_request(body.replace(b"hi", b"ho"), sign(body, SIGNING_SECRET))
    assert not verifier.is_valid_request(body, sign(body, "other-secret"))
    assert not verifier.is_valid_request(body, sign(body, SIGNING_SECRET, timestamp=int(time.time()) - 600))


def test_event_builders_are_realistic() -> None:
    body = event_callback(channel_message("hey <@U9>", thread_ts="1700000000.000001"), event_id="Ev1")
    event = body["event"]
    assert (body["type"], body["event_id"], body["team_id"]) == ("event_callback", "Ev1", "T1")
    assert body["authorizations"] == [
        {"enterprise_id": None, "team_id": "T1", "user_id": "UBOT", "is_bot": True, "is_enterprise_install": False}
    ]
    assert event["event_ts"] == event["ts"] and event["channel_type"] == "channel" and event["team"] == "T1"
    assert event["blocks"][0]["elements"][0]["elements"][1] == {"type": "user", "user_id": "U9"}
    assert "channel_type" not in app_mention("x")
    assert app_mention("<@UBOT> x")["text"] == "<@UBOT> x"
    assert b"command=%2Fask" in slash_command_form("/ask", "q", user_id="U5")


async def test_bolt_http_mode_accepts_signed_events(slack: FakeSlack) -> None:
    app = AsyncApp(client=AsyncWebClient(token="xoxb-test", base_url=slack.api_url), signing_secret=SIGNING_SECRET)
    handled: asyncio.Queue[str] = asyncio.Queue()

    @app.event("message")
    async def on_message(event: dict[str, Any], say: Any) -> None:
        await say("pong")
        await handled.put(event["text"])

    body = json.dumps(slack.event_callback(im_message("ping"))).encode()
    accepted = await app.async_dispatch(AsyncBoltRequest(body=body.decode(), headers=sign(body, SIGNING_SECRET)))
    tampered = body.replace(b"ping", b"pong")
    rejected = await app.async_dispatch(AsyncBoltRequest(body=tampered.decode(), headers=sign(body, SIGNING_SECRET)))

    assert (accepted.status, rejected.status) == (200, 401)
    assert await asyncio.wait_for(handled.get(), WAIT) == "ping"
    assert (await slack.next_call("chat.postMessage", timeout=WAIT)).args["channel"] == "D1"
