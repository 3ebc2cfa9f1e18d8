"""Tests for the fake OpenAI server, driven through the real ``openai.AsyncOpenAI`` client."""

from __future__ import annotations

__all__: list[str] = []

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import openai
import pytest
import pytest_asyncio
from openai.types.chat import ChatCompletionMessageParam

from tests.fakes.openai_server import Delay, FakeOpenAI, Garbage, Hang, RecordedRequest, Reply, Status, ToolCalls

pytestmark = pytest.mark.asyncio

API_KEY = "sk-test-key"
WAIT = 5.0
USER: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hello there"}]


@pytest_asyncio.fixture
async def fake() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI() as server:
        yield server


@pytest_asyncio.fixture
async def client(fake: FakeOpenAI) -> AsyncIterator[openai.AsyncOpenAI]:
    # Retries are off by default so each test opts into the SDK behaviour it checks.
    async with make_client(fake, max_retries=0) as sdk:
        yield sdk


def make_client(fake: FakeOpenAI, **options: Any) -> openai.AsyncOpenAI:
    # trust_env=False: a proxy in the environment must never see loopback test traffic.
    return openai.AsyncOpenAI(
        api_key=API_KEY,
        base_url=fake.base_url,
        http_client=openai.DefaultAsyncHttpxClient(trust_env=False),
        **options,
    )


async def next_request(fake: FakeOpenAI) -> RecordedRequest:
    return await asyncio.wait_for(fake.received.get(), WAIT)


async def complete(client: openai.AsyncOpenAI, text: str = "hello there") -> str | None:
    completion = await client.chat.completions.create(model="gpt-test", messages=[{"role": "user", "content": text}])
    return completion.choices[0].message.content


async def test_base_url_is_loopback(fake: FakeOpenAI) -> None:
    assert fake.base_url == f"http://127.0.0.1:{fake.port}/v1"
    assert fake.port > 0


async def test_completion_echoes_and_records_exact_messages(fake: FakeOpenAI, client: openai.AsyncOpenAI) -> None:
    messages: list[Any] = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": "what is 2+2?"},
    ]

    completion = await client.chat.completions.create(model="gpt-test", messages=messages)

    assert completion.object == "chat.completion"
    assert completion.model == "gpt-test"
    assert completion.choices[0].message.role == "assistant"
    assert completion.choices[0].message.content == "echo: what is 2+2?"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None
    assert completion.usage.total_tokens == completion.usage.prompt_tokens + completion.usage.completion_tokens
    request = await next_request(fake)
    assert request.method == "POST"
    assert request.path == "/v1/chat/completions"
    assert request.messages == messages
    assert request.authorization == f"Bearer {API_KEY}"
    assert request.headers["authorization"] == f"Bearer {API_KEY}"
    assert fake.requests == [request]


async def test_streaming_splits_reply_into_deltas(fake: FakeOpenAI, client: openai.AsyncOpenAI) -> None:
    stream = await client.chat.completions.create(
        model="gpt-test",
        messages=[{"role": "user", "content": "the quick brown fox"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [chunk async for chunk in stream]

    deltas = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(deltas) >= 4
    assert "".join(deltas) == "echo: the quick brown fox"
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["stop"]
    assert chunks[-1].usage is not None
    assert (await next_request(fake)).body == {
        "model": "gpt-test",
        "messages": [{"role": "user", "content": "the quick brown fox"}],
        "stream": True,
        "stream_options": {"include_usage": True},
    }


async def test_streaming_with_fixed_chunk_size() -> None:
    async with FakeOpenAI(chunk_size=4) as fake, make_client(fake, max_retries=0) as client:
        fake.script(Reply("abcdefghij"))
        stream = await client.chat.completions.create(model="m", messages=USER, stream=True)
        deltas = [c.choices[0].delta.content async for c in stream if c.choices and c.choices[0].delta.content]

    assert deltas == ["abcd", "efgh", "ij"]


async def test_rate_limit_then_success_uses_sdk_retries(fake: FakeOpenAI, client: openai.AsyncOpenAI) -> None:
    # A positive retry-after keeps the test fast: the SDK ignores 0 and falls back to ~0.5 s backoff.
    fake.script(Status(429, retry_after=0.01))

    reply = await complete(client.with_options(max_retries=2))

    assert reply == "echo: hello there"
    assert len(fake.requests) == 2
    assert fake.requests[0].body == fake.requests[1].body
    # The SDK numbers its attempts; the server can tell a retry from a new call.
    assert [r.headers.get("x-stainless-retry-count") for r in fake.requests] == ["0", "1"]


async def test_rate_limit_error_carries_openai_error_body(fake: FakeOpenAI, client: openai.AsyncOpenAI) -> None:
    fake.script(Status(429, retry_after=1.5))

    with pytest.raises(openai.RateLimitError) as caught:
        await complete(client)

    error = caught.value
    assert error.status_code == 429
    assert error.code == "rate_limit_exceeded"
    assert error.type == "requests"
    assert error.response.headers["retry-after"] == "2"
    assert error.response.headers["retry-after-ms"] == "1500"
    assert error.request_id is not None


async def test_fail_all_500_raises_internal_server_error_until_reset(
    fake: FakeOpenAI, client: openai.AsyncOpenAI
) -> None:
    fake.fail_all(500)

    for _ in range(2):
        with pytest.raises(openai.InternalServerError) as caught:
            await complete(client)
        assert caught.value.type == "server_error"
    assert len(fake.requests) == 2

    fake.reset()
    assert await complete(client) == "echo: hello there"


async def test_fail_all_applies_to_models_too(fake: FakeOpenAI, client: openai.AsyncOpenAI) -> None:
    fake.fail_all(Status(503, message="down for maintenance"))

    with pytest.raises(openai.InternalServerError, match="down for maintenance"):
        await client.models.list()


async def test_hang_times_out_on_client(fake: FakeOpenAI, client: openai.AsyncOpenAI) -> None:
    fake.script(Hang())

    with pytest.raises(openai.APITimeoutError):
        await complete(client.with_options(timeout=0.5))

    assert len(fake.requests) == 1


async def test_timeout_is_retried_by_sdk(fake: FakeOpenAI, client: openai.AsyncOpenAI) -> None:
    fake.script(Hang())

    reply = await complete(client.with_options(timeout=0.5, max_retries=1))

    assert reply == "echo: hello there"
    assert len(fake.requests) == 2


async def test_release_lets_hanging_request_answer(fake: FakeOpenAI, client: openai.AsyncOpenAI) -> None:
    fake.script(Hang(then=Reply("finally")))
    call = asyncio.create_task(complete(client))
    await next_request(fake)

    fake.release()

    assert await asyncio.wait_for(call, WAIT) == "finally"


async def test_close_drops_hanging_request_promptly(fake: FakeOpenAI) -> None:
    async with make_client(fake, max_retries=0) as client:
        fake.script(Hang())
        call = asyncio.create_task(complete(client))
        await next_request(fake)

        await asyncio.wait_for(fake.close(), WAIT)

        with pytest.raises(openai.APIConnectionError):
            await asyncio.wait_for(call, WAIT)


async def test_garbage_body_raises_json_decode_error(fake: FakeOpenAI, client: openai.AsyncOpenAI) -> None:
    fake.script(Garbage())

    # The SDK does not wrap this in an OpenAIError, and does not retry it.
    with pytest.raises(json.JSONDecodeError):
        await complete(client.with_options(max_retries=2))

    assert len(fake.requests) == 1


async def test_garbage_stream_raises_json_decode_error(fake: FakeOpenAI, client: openai.AsyncOpenAI) -> None:
    fake.script(Garbage())
    stream = await client.chat.completions.create(model="m", messages=USER, stream=True)

    with pytest.raises(json.JSONDecodeError):
        _ = [chunk async for chunk in stream]


async def test_non_json_content_type_is_returned_as_text(fake: FakeOpenAI, client: openai.AsyncOpenAI) -> None:
    # Documents an SDK trap: without strict validation, a non-JSON content type
    # makes create() return the raw body as str instead of raising.
    fake.script(Garbage(body="<html>bad gateway</html>", content_type="text/html"))

    result: object = await client.chat.completions.create(model="m", messages=USER)

    assert result == "<html>bad gateway</html>"


async def test_delay_then_reply(fake: FakeOpenAI, client: openai.AsyncOpenAI) -> None:
    fake.script(Delay(0.05, then=Reply("slow answer")))

    assert await complete(client) == "slow answer"


async def test_scripts_are_consumed_in_order_then_default(fake: FakeOpenAI, client: openai.AsyncOpenAI) -> None:
    fake.script(Reply("one"), Status(400), Reply("three"))

    assert await complete(client) == "one"
    with pytest.raises(openai.BadRequestError):
        await complete(client)
    assert await complete(client) == "three"
    assert fake.pending_scripts == 0
    assert await complete(client, "four") == "echo: four"


async def test_reply_with_custom_function(fake: FakeOpenAI, client: openai.AsyncOpenAI) -> None:
    fake.reply_with(lambda messages: f"{len(messages)} message(s)")

    assert await complete(client) == "1 message(s)"

    fake.reply_with(None)
    assert await complete(client) == "echo: hello there"


async def test_models_lists_configured_model() -> None:
    async with FakeOpenAI(model="gpt-fake") as fake, make_client(fake) as client:
        page = await client.models.list()
        ids = [model.id async for model in page]
        request = await next_request(fake)

    assert ids == ["gpt-fake"]
    assert (request.method, request.path) == ("GET", "/v1/models")


async def test_wrong_api_key_is_rejected() -> None:
    async with FakeOpenAI(api_key="sk-right") as fake, make_client(fake, max_retries=0) as client:
        with pytest.raises(openai.AuthenticationError) as caught:
            await complete(client)

    assert caught.value.code == "invalid_api_key"


async def test_unknown_route_is_openai_style_404(fake: FakeOpenAI, client: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.NotFoundError, match="Invalid URL"):
        await client.embeddings.create(model="m", input="x")


CALLED: list[Any] = [
    {"role": "user", "content": "hi"},
    {"role": "assistant", "content": None,
     "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}},
                    {"id": "c2", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
]  # fmt: skip


async def test_tool_calls_come_back_whole_without_streaming(fake: FakeOpenAI, client: openai.AsyncOpenAI) -> None:
    fake.script(ToolCalls(("lookup", {"id": 7}), ("add", '{"a": 1}')))
    completion = await client.chat.completions.create(model="gpt-test", messages=USER)
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    calls = choice.message.tool_calls or []
    assert [(c.function.name, c.function.arguments) for c in calls] == [("lookup", '{"id": 7}'), ("add", '{"a": 1}')]  # type: ignore[union-attr]


async def test_streamed_tool_calls_arrive_in_pieces_by_index(fake: FakeOpenAI, client: openai.AsyncOpenAI) -> None:
    fake.script(ToolCalls(("lookup", {"query": "a long query string"}), text="hm"))
    stream = await client.chat.completions.create(model="gpt-test", messages=USER, stream=True)
    pieces: dict[int, list[str]] = {}
    firsts: list[Any] = []
    finish = None
    async for chunk in stream:
        for call in chunk.choices[0].delta.tool_calls or []:
            if call.id:
                firsts.append((call.index, call.id, call.function.name))  # type: ignore[union-attr]
            pieces.setdefault(call.index, []).append(call.function.arguments or "")  # type: ignore[union-attr]
        finish = chunk.choices[0].finish_reason or finish
    assert [(index, name) for index, _, name in firsts] == [(0, "lookup")] and finish == "tool_calls"
    assert len(pieces[0]) > 2 and json.loads("".join(pieces[0])) == {"query": "a long query string"}


@pytest.mark.parametrize(
    "messages,error",
    [
        ([{"role": "user", "content": "hi"}, {"role": "tool", "tool_call_id": "c9", "content": "x"}],
         "must be a response to a preceeding message with 'tool_calls'"),
        ([*CALLED, {"role": "tool", "tool_call_id": "c1", "content": "x"}, {"role": "user", "content": "next"}],
         "did not have response messages: c2"),
        (CALLED, "did not have response messages: c1, c2"),
        ([*CALLED[:1], {"role": "tool", "content": "x"}], "tool_call_id"),
    ],
)  # fmt: skip
async def test_broken_tool_exchanges_are_refused_as_openai_does(
    fake: FakeOpenAI, client: openai.AsyncOpenAI, messages: list[Any], error: str
) -> None:
    fake.script(Reply("not consumed"))
    with pytest.raises(openai.BadRequestError, match=error):
        await client.chat.completions.create(model="gpt-test", messages=messages)
    assert fake.pending_scripts == 1


async def test_a_whole_exchange_is_accepted(fake: FakeOpenAI, client: openai.AsyncOpenAI) -> None:
    answered = [*CALLED, *({"role": "tool", "tool_call_id": i, "content": "r"} for i in ("c2", "c1"))]
    completion = await client.chat.completions.create(model="gpt-test", messages=answered)
    assert completion.choices[0].message.content == "echo: hi"


async def test_reasoning_models_refuse_max_tokens(fake: FakeOpenAI, client: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.BadRequestError, match="max_completion_tokens"):
        await client.chat.completions.create(model="o3-mini", messages=USER, max_tokens=10)
    await client.chat.completions.create(model="o3-mini", messages=USER, max_completion_tokens=10)


async def test_the_context_window_refuses_long_requests(fake: FakeOpenAI, client: openai.AsyncOpenAI) -> None:
    fake.context_window = 3
    await client.chat.completions.create(model="gpt-test", messages=USER)  # two words
    with pytest.raises(openai.BadRequestError) as caught:
        await client.chat.completions.create(model="gpt-test", messages=[{"role": "user", "content": "a b c d"}])
    assert caught.value.code == "context_length_exceeded"
