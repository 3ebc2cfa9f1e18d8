"""The model port against the fake server through the real openai SDK: replies, streams, every failure."""

from __future__ import annotations

import pytest

from core.errors import ContextTooLongError, ModelError, ModelRejectedError, ModelTimeoutError
from core.llm import ModelBusyError, OfflineChatModel, OpenAIChatModel, model_from_settings
from core.messages import ChatMessage
from tests.conftest import make_settings, openai_client
from tests.fakes.openai_server import FakeOpenAI, Garbage, Hang, Reply, Status, ToolCalls

HELLO = [ChatMessage(role="system", text="be nice"), ChatMessage(role="user", text="hello")]


async def test_complete_returns_the_text_and_sends_the_messages(fake_openai: FakeOpenAI) -> None:
    model = OpenAIChatModel("m1", async_client=openai_client(fake_openai))
    assert await model.complete(HELLO) == "echo: hello"
    request = fake_openai.requests[-1]
    assert request.body is not None and request.body["model"] == "m1"
    assert request.messages == [{"role": "system", "content": "be nice"}, {"role": "user", "content": "hello"}]


async def test_stream_yields_several_deltas_that_join_to_the_reply(fake_openai: FakeOpenAI) -> None:
    fake_openai.script(Reply("one two three four"))
    model = OpenAIChatModel("m1", async_client=openai_client(fake_openai))
    deltas = [d async for d in model.stream(HELLO)]
    assert len(deltas) > 1 and "".join(deltas) == "one two three four"


async def test_429_then_200_succeeds_through_the_sdk_retries(fake_openai: FakeOpenAI) -> None:
    fake_openai.script(Status(429, retry_after=0.01))
    model = OpenAIChatModel("m1", async_client=openai_client(fake_openai, max_retries=2))
    assert await model.complete(HELLO) == "echo: hello"
    assert len(fake_openai.requests) == 2


async def test_429_past_the_retries_is_a_busy_error(fake_openai: FakeOpenAI) -> None:
    fake_openai.fail_all(Status(429, retry_after=0.01))
    model = OpenAIChatModel("m1", async_client=openai_client(fake_openai, max_retries=1))
    with pytest.raises(ModelBusyError) as caught:
        await model.complete(HELLO)
    assert "busy" in caught.value.user_message


async def test_500_forever_is_a_model_error_naming_the_server(fake_openai: FakeOpenAI) -> None:
    fake_openai.fail_all(500)
    model = OpenAIChatModel("m1", async_client=openai_client(fake_openai, max_retries=1))
    with pytest.raises(ModelError, match=r"InternalServerError from m1 at http://127\.0\.0\.1"):
        await model.complete(HELLO)
    assert len(fake_openai.requests) == 2


async def test_a_hung_server_times_out(fake_openai: FakeOpenAI) -> None:
    fake_openai.script(Hang())
    model = OpenAIChatModel("m1", async_client=openai_client(fake_openai, timeout=0.3))
    with pytest.raises(ModelTimeoutError):
        await model.complete(HELLO)


@pytest.mark.parametrize(
    "behaviour", [Garbage(), Garbage(body="<html>gateway error</html>", content_type="text/html"), Reply("")]
)
async def test_garbage_is_a_model_error_not_a_crash(fake_openai: FakeOpenAI, behaviour: object) -> None:
    fake_openai.script(behaviour)  # type: ignore[arg-type]
    model = OpenAIChatModel("m1", async_client=openai_client(fake_openai))
    if isinstance(behaviour, Reply):
        assert await model.complete(HELLO) == ""  # an empty answer is still an answer
        return
    with pytest.raises(ModelError):
        await model.complete(HELLO)


async def test_garbage_in_a_stream_is_a_model_error(fake_openai: FakeOpenAI) -> None:
    fake_openai.script(Garbage())
    model = OpenAIChatModel("m1", async_client=openai_client(fake_openai))
    with pytest.raises(ModelError):
        _ = [d async for d in model.stream(HELLO)]


async def test_an_empty_stream_is_asked_again_unstreamed_which_tells_what_it_was(fake_openai: FakeOpenAI) -> None:
    model = OpenAIChatModel("m1", async_client=openai_client(fake_openai))
    shown: list[str] = []

    async def show(delta: str) -> None:
        shown.append(delta)

    fake_openai.script(Reply(""), Reply("late but whole"))  # a stream of nothing, then the plain answer
    assert (await model.reply(HELLO, on_delta=show)).text == "late but whole" and shown == ["late but whole"]
    fake_openai.script(Reply(""), Status(400, "maximum context length is 2048 tokens", code="context_length_exceeded"))
    with pytest.raises(ContextTooLongError):  # llama.cpp's way: an empty stream, the reason only unstreamed
        await model.reply(HELLO, on_delta=show)
    fake_openai.script(Reply(""), Reply(""))
    with pytest.raises(ModelError, match="no text"):
        await model.reply(HELLO, on_delta=show)
    assert [bool((r.body or {}).get("stream")) for r in fake_openai.requests[-6:]] == [True, False] * 3


async def test_a_stream_without_any_text_is_a_model_error(fake_openai: FakeOpenAI) -> None:
    """A server that ends the stream before any text (one that died, say) gave no answer, not an empty one."""
    fake_openai.script(Reply(""))
    model = OpenAIChatModel("m1", async_client=openai_client(fake_openai))
    with pytest.raises(ModelError, match="no text"):
        _ = [d async for d in model.stream(HELLO)]


async def test_a_bad_key_is_a_rejection() -> None:
    async with FakeOpenAI(api_key="sk-right") as fake:
        model = OpenAIChatModel("m1", async_client=openai_client(fake))
        with pytest.raises(ModelRejectedError) as caught:
            await model.complete(HELLO)
        assert "rejected" in caught.value.user_message and "sk-" not in caught.value.user_message


async def test_connection_refused_is_a_model_error() -> None:
    async with FakeOpenAI() as fake:
        base_url = fake.base_url
    model = OpenAIChatModel("m1", base_url=base_url, max_retries=0, timeout=2)
    with pytest.raises(ModelError, match="APIConnectionError"):
        await model.complete(HELLO)
    await model.aclose()


async def test_base_url_without_a_key_works_for_local_servers(fake_openai: FakeOpenAI) -> None:
    model = model_from_settings(make_settings(openai_base_url=fake_openai.base_url, openai_model="llama3"))
    assert isinstance(model, OpenAIChatModel)
    assert await model.complete(HELLO) == "echo: hello"
    assert fake_openai.requests[-1].body["model"] == "llama3"  # type: ignore[index]
    await model.aclose()


async def test_no_key_and_no_url_means_the_offline_model() -> None:
    model = model_from_settings(make_settings())
    assert isinstance(model, OfflineChatModel)


async def test_offline_model_is_deterministic_labelled_and_shows_memory() -> None:
    model = OfflineChatModel()
    history = [
        ChatMessage(role="system", text="sys"),
        ChatMessage(role="user", text="My name is Ada"),
        ChatMessage(role="assistant", text="hi"),
        ChatMessage(role="user", text="who am I?"),
    ]
    first = await model.complete(history)
    assert first == await model.complete(history)
    assert first.startswith("[offline model]")
    assert "2 earlier messages" in first and "My name is Ada" in first
    assert "".join([d async for d in model.stream(history)]) == first


TOOL = {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object", "properties": {}}}}


@pytest.mark.parametrize("streamed", [False, True])
async def test_reply_returns_tool_calls_streamed_or_not(fake_openai: FakeOpenAI, streamed: bool) -> None:
    fake_openai.script(ToolCalls(("lookup", {"id": "a" * 40}), ("lookup", '{"id": "b"}'), text="Checking."))
    model = OpenAIChatModel("m1", async_client=openai_client(fake_openai))
    deltas: list[str] = []

    async def on_delta(delta: str) -> None:
        deltas.append(delta)

    reply = await model.reply(HELLO, tools=[TOOL], on_delta=on_delta if streamed else None)
    assert reply.text == "Checking." and reply.finish_reason == "tool_calls"
    assert [(c.name, c.arguments) for c in reply.tool_calls] == [("lookup", '{"id": "' + "a" * 40 + '"}'),
                                                                 ("lookup", '{"id": "b"}')]  # fmt: skip
    assert len({c.id for c in reply.tool_calls}) == 2 and all(c.id.startswith("call_") for c in reply.tool_calls)
    assert fake_openai.requests[-1].body["tools"] == [TOOL]  # type: ignore[index]
    assert "".join(deltas) == ("Checking." if streamed else "")


async def test_no_tools_means_no_tools_parameter(fake_openai: FakeOpenAI) -> None:
    model = OpenAIChatModel("m1", async_client=openai_client(fake_openai))
    await model.reply(HELLO, tool_choice="none")
    assert "tools" not in fake_openai.requests[-1].body and "tool_choice" not in fake_openai.requests[-1].body  # type: ignore[operator]


@pytest.mark.parametrize(
    "model_id,sent,absent",
    [("gpt-4o-mini", "max_tokens", "max_completion_tokens"), ("o3-mini", "max_completion_tokens", "max_tokens"),
     ("gpt-5", "max_completion_tokens", "max_tokens"), ("openai/o1", "max_completion_tokens", "max_tokens")],
)  # fmt: skip
async def test_max_reply_tokens_goes_in_the_field_the_model_takes(
    fake_openai: FakeOpenAI, model_id: str, sent: str, absent: str
) -> None:
    model = model_from_settings(make_settings(openai_base_url=fake_openai.base_url, openai_model=model_id))
    assert isinstance(model, OpenAIChatModel)
    await model.complete(HELLO)  # the fake refuses max_tokens for o-series and gpt-5, as OpenAI does
    _ = [d async for d in model.stream(HELLO)]
    for request in fake_openai.requests:
        assert request.body[sent] == 1024 and absent not in request.body  # type: ignore[index,operator]
    await model.aclose()


async def test_max_reply_tokens_zero_sends_no_limit(fake_openai: FakeOpenAI) -> None:
    model = model_from_settings(make_settings(openai_base_url=fake_openai.base_url, max_reply_tokens=0))
    await model.complete(HELLO)
    assert "max_tokens" not in fake_openai.requests[-1].body  # type: ignore[operator]
    await model.aclose()


@pytest.mark.parametrize(
    "failure",
    [
        Status(400, code="context_length_exceeded", message="This model's maximum context length is 10 tokens."),
        Status(400, message="the request exceeds the available context size, try increasing it"),  # llama.cpp
    ],
)
async def test_a_request_too_long_is_its_own_error(fake_openai: FakeOpenAI, failure: Status) -> None:
    fake_openai.script(failure)
    model = OpenAIChatModel("m1", async_client=openai_client(fake_openai))
    with pytest.raises(ContextTooLongError) as caught:
        await model.complete(HELLO)
    assert "too long" in caught.value.user_message


async def test_the_offline_model_answers_reply_without_tools() -> None:
    reply = await OfflineChatModel().reply(HELLO, tools=[TOOL])
    assert reply.text.startswith("[offline model]") and reply.tool_calls == ()
