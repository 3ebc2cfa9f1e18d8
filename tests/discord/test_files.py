"""Files and images on Discord: a message's attachments, downloaded from their (signed) URLs at turn time."""

from __future__ import annotations

import base64

from tests.discord.conftest import Bot, BotFactory
from tests.fakes.discord_api import FakeAttachment
from tests.fakes.discord_ids import ALICE_ID, CHANNEL_ID, DM_CHANNEL_ID
from tests.fakes.openai_server import FakeOpenAI, image_parts
from tests.support.files import pdf_with_text, png_bytes


def sent_text(fake_openai: FakeOpenAI) -> str:
    content = fake_openai.requests[-1].messages[-1]["content"]
    assert isinstance(content, str)
    return content


async def test_an_image_alone_in_a_dm_reaches_the_model_as_an_image_part(bot: Bot, fake_openai: FakeOpenAI) -> None:
    image = png_bytes()
    await bot.say("", channel_id=DM_CHANNEL_ID, mention=False,
                  attachments=[FakeAttachment("cat.png", image, "image/png")])  # fmt: skip

    reply = await bot.next_reply()

    assert image_parts(fake_openai.requests[-1].messages[-1]) == [
        f"data:image/png;base64,{base64.b64encode(image).decode()}"
    ]
    assert reply.text.startswith("echo: [image cat.png (image/png,")
    assert len(bot.fake.downloads) == 1
    stored = await bot.gateway.backend.store(f"user_{ALICE_ID}_session_{DM_CHANNEL_ID}", "discord").list_messages()
    assert stored[0].metadata["attachments"] == [{"name": "cat.png", "type": "image/png", "size": len(image)}]
    assert not stored[0].images and base64.b64encode(image).decode() not in stored[0].to_json()


async def test_a_mention_with_a_text_file_and_a_pdf_inlines_both(bot: Bot, fake_openai: FakeOpenAI) -> None:
    files = [
        FakeAttachment("main.py", b"print('hi')\n", "text/x-python; charset=utf-8"),
        FakeAttachment("spec.pdf", pdf_with_text("The API has three endpoints"), "application/pdf"),
    ]
    await bot.say("review these", attachments=files)

    reply = await bot.next_reply()

    sent = sent_text(fake_openai)
    assert sent.startswith("review these\n\n[file main.py (text/x-python, 12 bytes)]\nprint('hi')")
    assert "[file spec.pdf (application/pdf," in sent and "The API has three endpoints\n[end of file spec.pdf]" in sent
    assert reply.text == f"echo: {sent}"


async def test_an_oversized_and_an_unknown_file_each_get_a_note(start_bot: BotFactory, fake_openai: FakeOpenAI) -> None:
    async with start_bot(max_attachment_bytes=1000) as bot:
        files = [
            FakeAttachment("video.mp4", b"\x00" * 2000, "video/mp4"),
            FakeAttachment("data.bin", b"\x01\x02", None),
        ]
        await bot.say("what are these?", attachments=files)

        reply = await bot.next_reply()

    assert reply.text.startswith("echo: what are these?")
    assert reply.text.endswith(
        "_(I could not read video.mp4: it is larger than 1 KB, the most I download.)_\n"
        "_(I could not read data.bin: I can't read this kind of file (unknown type).)_"
    )
    assert len(bot.fake.downloads) == 1  # the oversized one never left Discord


async def test_an_expired_attachment_link_is_named_in_the_reply(bot: Bot) -> None:
    await bot.say("see file", attachments=[FakeAttachment("log.txt", b"boom", "text/plain")])
    bot.fake.attachment_files.clear()  # Discord's signed link has expired by the time the turn runs

    reply = await bot.next_reply()

    assert "_(I could not read log.txt: the download failed (HTTP 404).)_" in reply.text


async def test_an_image_refused_by_a_text_only_model_is_answered_from_the_text(
    bot: Bot, fake_openai: FakeOpenAI
) -> None:
    fake_openai.vision = False
    await bot.say("is this a cat?", channel_id=CHANNEL_ID, attachments=[FakeAttachment("c.gif", b"GIF89a...")])

    reply = await bot.next_reply()

    refused, retried = fake_openai.requests[-2:]
    assert image_parts(refused.messages[-1]) and not image_parts(retried.messages[-1])
    assert reply.text.startswith("echo: is this a cat?\n\n[image c.gif (image/gif, 9 bytes): attached]")
    assert reply.text.endswith("_(This model cannot see images, so I answered from the text alone.)_")
