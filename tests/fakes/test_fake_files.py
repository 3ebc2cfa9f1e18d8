"""The fakes' files: Slack's url_private_download behind the bot token and files:read; image refusal by FakeOpenAI."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import openai
import pytest

from tests.fakes.openai_server import FakeOpenAI
from tests.fakes.slack_api import FakeSlack, FileDownload


@pytest.fixture
async def slack() -> AsyncIterator[FakeSlack]:
    async with FakeSlack() as fake:
        yield fake


async def get(url: str, token: str | None = None) -> tuple[int, str, bytes]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with aiohttp.ClientSession() as session, session.get(url, headers=headers) as response:
        return response.status, response.content_type, await response.read()


async def test_a_slack_file_is_served_only_with_the_bot_token(slack: FakeSlack) -> None:
    shared = slack.add_file("notes.txt", b"hello", mimetype="text/plain")
    assert shared["size"] == 5 and shared["url_private_download"].endswith("/download/notes.txt")

    with_token = await get(shared["url_private_download"], "xoxb-test")
    without = await get(shared["url_private_download"])
    user_token = await get(shared["url_private"], "xoxp-user")

    assert with_token == (200, "text/plain", b"hello")
    for status, content_type, body in (without, user_token):
        assert (status, content_type) == (200, "text/html") and b"Sign in to" in body
    assert slack.downloads == [
        FileDownload(shared["id"], "xoxb-test", served=True),
        FileDownload(shared["id"], None, served=False),
        FileDownload(shared["id"], "xoxp-user", served=False),
    ]


async def test_without_files_read_slack_answers_downloads_with_its_sign_in_page(slack: FakeSlack) -> None:
    shared = slack.add_file("a.png", b"\x89PNG", mimetype="image/png")
    slack.scopes.discard("files:read")
    status, content_type, body = await get(shared["url_private_download"], "xoxb-test")
    assert (status, content_type) == (200, "text/html") and body.startswith(b"<!DOCTYPE html>")
    assert await get(shared["url_private_download"].replace("a.png", "b.png"), "xoxb-test") == (
        404, "text/plain", b"file not found",
    )  # fmt: skip


async def test_fake_openai_without_vision_refuses_image_parts_like_llama_cpp() -> None:
    async with FakeOpenAI() as fake:
        fake.vision = False
        client = openai.AsyncOpenAI(api_key="sk-test", base_url=fake.base_url, max_retries=0)
        image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,AA=="}}
        with pytest.raises(openai.BadRequestError, match="image input is not supported"):
            await client.chat.completions.create(
                model="m", messages=[{"role": "user", "content": [{"type": "text", "text": "hi"}, image]}]
            )
        text_only = await client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])
        assert text_only.choices[0].message.content == "echo: hi"
        await client.close()
