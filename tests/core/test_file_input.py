"""Attachments -> model input (core.file_input), their stored forms, and a text-only model's refusal of images."""

from __future__ import annotations

import io
import json

import pytest
from pypdf import PdfWriter

from core.attachments import Attachment, Fetched, FetchError, FileTooLargeError, read_capped
from core.errors import ImagesRefusedError, ModelRejectedError
from core.file_input import FileLimits, read_files
from core.llm import OpenAIChatModel
from core.messages import ChatMessage, ImagePart
from core.turns import IncomingMessage
from tests.conftest import openai_client
from tests.fakes.openai_server import FakeOpenAI, Status
from tests.support.files import pdf_with_text, png_bytes


class Files:
    """A FileFetcher over bytes in memory, counting downloads; a missing name fails as a platform's 404 would."""

    def __init__(self, **files: bytes) -> None:
        self.files = files
        self.fetched: list[str] = []

    async def fetch(self, attachment: Attachment, *, max_bytes: int) -> Fetched:
        self.fetched.append(attachment.name)
        if attachment.name not in self.files:
            raise FetchError("the download failed (HTTP 404)")

        async def chunks():  # type: ignore[no-untyped-def]
            data = self.files[attachment.name]
            for start in range(0, len(data), 1000):
                yield data[start : start + 1000]

        return Fetched(await read_capped(chunks(), max_bytes), attachment)


def named(name: str, mimetype: str = "", size: int | None = None) -> Attachment:
    return Attachment(name=name, mimetype=mimetype, size=size, url=f"https://files.example/{name}", file_id=name)


async def test_each_kind_of_file_is_read_in_the_order_sent() -> None:
    files = Files(**{"a.png": png_bytes(), "b.md": b"# Title\nbody", "c.pdf": pdf_with_text("pdf words")})
    read = await read_files([named("a.png", "image/png"), named("b.md"), named("c.pdf")], files, FileLimits())
    assert [image.mimetype for image in read.images] == ["image/png"] and read.images[0].data == png_bytes()
    assert read.text.split("\n\n")[0].startswith("[image a.png (image/png,")
    assert "[file b.md (unknown type, 12 bytes)]\n# Title\nbody\n[end of file b.md]" in read.text
    assert "pdf words\n[end of file c.pdf]" in read.text
    assert read.notes == [] and read.read == 3
    assert read.references[1] == {"name": "b.md", "type": "", "size": None}


async def test_text_past_max_attachment_chars_is_cut_and_the_user_told() -> None:
    files = Files(**{"one.txt": b"a" * 80, "two.txt": b"b" * 80, "three.txt": b"c"})
    read = await read_files([named("one.txt"), named("two.txt"), named("three.txt")], files, FileLimits(max_chars=100))
    assert "a" * 80 + "\n[end of file one.txt]" in read.text
    assert "\n" + "b" * 20 + "\n[end of file two.txt: cut after 20 characters]" in read.text
    assert read.notes == [
        "I read only the first 20 characters of two.txt.",
        "I could not read three.txt: the message's other files already filled the room I have.",
    ]


async def test_files_past_max_attachments_are_named_and_not_downloaded() -> None:
    files = Files(**{f"{n}.txt": b"x" for n in range(5)})
    read = await read_files([named(f"{n}.txt") for n in range(5)], files, FileLimits(max_files=4))
    assert files.fetched == ["0.txt", "1.txt", "2.txt", "3.txt"]
    assert read.notes == ["I could not read 4.txt: I read at most 4 files of a message."]


async def test_a_declared_size_over_the_cap_is_refused_before_any_download() -> None:
    files = Files(**{"big.txt": b"x"})
    read = await read_files([named("big.txt", "text/plain", size=5_000_001)], files, FileLimits(max_bytes=5_000_000))
    assert files.fetched == []
    assert read.notes == ["I could not read big.txt: it is larger than 5 MB, the most I download."]


async def test_read_capped_stops_as_soon_as_the_cap_is_passed() -> None:
    pulled: list[int] = []

    async def chunks():  # type: ignore[no-untyped-def]
        for index in range(100):
            pulled.append(index)
            yield b"x" * 1000

    with pytest.raises(FileTooLargeError):
        await read_capped(chunks(), 2500)
    assert pulled == [0, 1, 2]


@pytest.mark.parametrize(
    ("name", "data", "mimetype", "reason"),
    [
        ("server.log", b"\x1f\x8b\x08\x00gzip\x00data", "text/plain", "I can't read this kind of file (text/plain)"),
        ("fake.png", b"<html>not an image</html>", "image/png", "it is not a PNG, JPEG, GIF or WebP image I can open"),
        ("broken.pdf", b"%PDF-1.7 then nothing", "application/pdf", "it is not a PDF I can open"),
        ("archive.zip", b"PK\x03\x04", "application/zip", "I can't read this kind of file (application/zip)"),
    ],
)
async def test_unreadable_files_get_a_note_naming_the_file_and_why(
    name: str, data: bytes, mimetype: str, reason: str
) -> None:
    read = await read_files([named(name, mimetype)], Files(**{name: data}), FileLimits())
    assert read.notes == [f"I could not read {name}: {reason}."] and read.read == 0
    assert f"[file {name} ({mimetype}, size unknown): not read, {reason}]" == read.text


async def test_a_password_protected_or_textless_pdf_says_so() -> None:
    locked = PdfWriter()
    locked.add_blank_page(100, 100)
    locked.encrypt("secret")
    blank = PdfWriter()
    blank.add_blank_page(100, 100)
    pdfs = {}
    for name, writer in (("locked.pdf", locked), ("scan.pdf", blank)):
        out = io.BytesIO()
        writer.write(out)
        pdfs[name] = out.getvalue()
    read = await read_files([named("locked.pdf"), named("scan.pdf")], Files(**pdfs), FileLimits())
    assert read.notes == [
        "I could not read locked.pdf: it is password-protected.",
        "I could not read scan.pdf: it has no text I can extract (a scanned PDF?).",
    ]


async def test_without_a_fetcher_or_with_reading_off_files_are_only_named() -> None:
    none = await read_files([named("a.txt")], None, FileLimits())
    off = await read_files([named("a.txt")], Files(**{"a.txt": b"x"}), FileLimits(max_files=0))
    assert none.notes == ["I could not read a.txt: files cannot be downloaded here."]
    assert off.notes == ["I could not read a.txt: I don't read files here."]


def test_images_reach_the_model_but_never_the_stored_form() -> None:
    message = ChatMessage(role="user", text="look", images=(ImagePart(mimetype="image/png", data=b"\x89PNG"),))
    assert message.to_openai() == {
        "role": "user",
        "content": [
            {"type": "text", "text": "look"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw=="}},
        ],
    }
    stored = json.loads(message.to_json())
    assert "images" not in stored and ChatMessage.from_json(message.to_json()).images == ()
    assert message.without_images().to_openai() == {"role": "user", "content": "look"}


def test_incoming_messages_keep_attachment_references_and_older_payloads_still_load() -> None:
    incoming = IncomingMessage("slack", "Ev1", "U1", "T1-C1", "", attachments=(named("a.pdf", "application/pdf", 9),))
    assert IncomingMessage.from_json(incoming.to_json()) == incoming
    older = '{"platform":"slack","event_id":"Ev0","user_id":"U1","channel_id":"C1","text":"hi","metadata":{}}'
    assert IncomingMessage.from_json(older).attachments == ()
    assert "attachments" not in json.loads(IncomingMessage.from_json(older).to_json())


@pytest.mark.parametrize(
    ("status", "wording"),
    [
        (400, "image input is not supported - hint: if this is unexpected, you may need to provide the mmproj"),
        (500, "image input is not supported - hint: if this is unexpected, you may need to provide the mmproj"),
        (400, "At most 0 image(s) may be provided in one prompt."),
        (400, "Invalid content type. image_url is only supported by certain models."),
    ],
)
async def test_text_only_servers_refusing_images_raise_images_refused(
    fake_openai: FakeOpenAI, status: int, wording: str
) -> None:
    fake_openai.fail_all(Status(status, message=wording))
    model = OpenAIChatModel("m", async_client=openai_client(fake_openai, max_retries=0))
    with pytest.raises(ImagesRefusedError):
        await model.complete([ChatMessage(role="user", text="?", images=(ImagePart(mimetype="image/png", data=b""),))])


async def test_other_bad_requests_are_not_taken_for_an_image_refusal(fake_openai: FakeOpenAI) -> None:
    fake_openai.fail_all(Status(400, message="Invalid value for 'temperature'."))
    model = OpenAIChatModel("m", async_client=openai_client(fake_openai, max_retries=0))
    with pytest.raises(ModelRejectedError) as raised:
        await model.complete([ChatMessage(role="user", text="?")])
    assert not isinstance(raised.value, ImagesRefusedError)
