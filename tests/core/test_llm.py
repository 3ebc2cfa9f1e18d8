"""The model port against the fake server through the real openai SDK: replies, streams, every failure."""

from __future__ import annotations

import pytest

from core.errors import ModelError, ModelRejectedError, ModelTimeoutError
from core.llm import ModelBusyError, OfflineChatModel, OpenAIChatModel, model_from_settings
from core.messages import ChatMessage
from tests.conftest import make_settings, openai_client
from tests.fakes.openai_server import FakeOpenAI, Garbage, Hang, Reply, Status

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
