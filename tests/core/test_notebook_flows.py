"""The reference notebook's five examples, with only their imports changed, on real Redis and the fake model."""

from __future__ import annotations

from uuid import uuid4

from core.agent import AgentThread
from core.llm import OpenAIChatClient
from core.store import RedisChatMessageStore
from tests.conftest import openai_client
from tests.fakes.openai_server import FakeOpenAI


async def test_example_1_basic_store_keeps_the_conversation(redis_url: str, fake_openai: FakeOpenAI) -> None:
    redis_store = RedisChatMessageStore(redis_url=redis_url)
    assert redis_store.thread_id.startswith("thread_")
    thread = AgentThread(message_store=redis_store)
    agent = OpenAIChatClient(model_id="gpt-4o", async_client=openai_client(fake_openai)).create_agent(
        name="RedisBot", instructions="You are a helpful assistant that remembers our conversation using Redis."
    )
    response1 = await agent.run("Hello! My name is Alice and I love pizza.", thread=thread)
    assert response1.text == "echo: Hello! My name is Alice and I love pizza."
    await agent.run("What do you remember about me?", thread=thread)
    sent = fake_openai.requests[-1].messages
    assert [m["role"] for m in sent] == ["system", "user", "assistant", "user"]
    assert sent[1]["content"] == "Hello! My name is Alice and I love pizza."
    assert len(await redis_store.list_messages()) == 4
    await redis_store.clear()
    await redis_store.aclose()


async def test_example_2_user_session_store_factory_keeps_ten(redis_url: str, fake_openai: FakeOpenAI) -> None:
    user_id, session_id = "alice_123", f"session_{uuid4()}"

    def create_user_session_store() -> RedisChatMessageStore:
        return RedisChatMessageStore(redis_url=redis_url, thread_id=f"user_{user_id}_{session_id}", max_messages=10)

    agent = OpenAIChatClient(model_id="gpt-4o", async_client=openai_client(fake_openai)).create_agent(
        name="SessionBot",
        instructions="You are a helpful assistant. Keep track of user preferences.",
        chat_message_store_factory=create_user_session_store,
    )
    thread = agent.get_new_thread()
    assert thread.message_store is not None
    assert thread.message_store.thread_id == f"user_{user_id}_{session_id}"
    for query in ["Hi, I'm Alice and I prefer vegetarian food.", "What restaurants would you recommend?",
                  "I also love Italian cuisine.", "Can you remember my food preferences?",
                  "And one more?", "Last one."]:  # fmt: skip
        await agent.run(query, thread=thread)
    messages = await thread.message_store.list_messages()
    assert len(messages) == 10
    assert messages[0].text == "What restaurants would you recommend?"
    await thread.message_store.clear()
    await thread.message_store.aclose()  # type: ignore[attr-defined]


async def test_example_3_conversation_survives_an_application_restart(redis_url: str, fake_openai: FakeOpenAI) -> None:
    conversation_id = f"persistent_chat_{uuid4().hex}"
    store1 = RedisChatMessageStore(redis_url=redis_url, thread_id=conversation_id)
    agent = OpenAIChatClient(model_id="gpt-4o", async_client=openai_client(fake_openai)).create_agent(
        name="PersistentBot", instructions="You are a helpful assistant. Remember our conversation history."
    )
    await agent.run("Hello! I'm working on a Python project about machine learning.", thread=AgentThread(store1))
    await store1.aclose()

    store2 = RedisChatMessageStore(redis_url=redis_url, thread_id=conversation_id)
    await agent.run("What was I working on before?", thread=AgentThread(message_store=store2))
    sent = fake_openai.requests[-1].messages
    assert "machine learning" in sent[1]["content"]
    assert len(await store2.list_messages()) == 4
    await store2.clear()
    await store2.aclose()


async def test_example_4_thread_serialization_holds_metadata_only(redis_url: str, fake_openai: FakeOpenAI) -> None:
    original_store = RedisChatMessageStore(redis_url=redis_url, thread_id=f"ser_{uuid4().hex}", max_messages=50)
    original_thread = AgentThread(message_store=original_store)
    agent = OpenAIChatClient(model_id="gpt-4o", async_client=openai_client(fake_openai)).create_agent(
        name="SerializationBot", instructions="You are a helpful assistant."
    )
    await agent.run("Hello! I'm testing serialization.", thread=original_thread)
    serialized_thread = await original_thread.serialize()
    assert "testing serialization" not in repr(serialized_thread) and "redis://" not in repr(serialized_thread)
    await original_store.aclose()

    restored_store = RedisChatMessageStore(redis_url=redis_url)
    restored_thread = await AgentThread.deserialize(serialized_thread, message_store=restored_store)
    await agent.run("Do you remember what I said about testing?", thread=restored_thread)
    assert "testing serialization" in fake_openai.requests[-1].messages[1]["content"]
    assert restored_thread.message_store is not None
    await restored_thread.message_store.clear()
    await restored_store.aclose()


async def test_example_5_message_limit_of_three_trims(redis_url: str, fake_openai: FakeOpenAI) -> None:
    store = RedisChatMessageStore(redis_url=redis_url, thread_id=f"limits_{uuid4().hex}", max_messages=3)
    thread = AgentThread(message_store=store)
    agent = OpenAIChatClient(model_id="gpt-4o", async_client=openai_client(fake_openai)).create_agent(
        name="LimitBot", instructions="You are a helpful assistant with limited memory."
    )
    for i in range(1, 6):
        await agent.run(f"Message {i}", thread=thread)
        assert len(await store.list_messages()) <= 3
    final = await store.list_messages()
    assert [m.text for m in final] == ["echo: Message 4", "Message 5", "echo: Message 5"]
    assert len(fake_openai.requests[-1].messages) == 1 + 3 + 1  # instructions, trimmed history, new message
    await store.clear()
    await store.aclose()
