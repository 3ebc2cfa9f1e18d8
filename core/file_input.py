"""A message's attachments -> model input: image parts, inlined text, PDF text, and a note per file not read.

Images (PNG, JPEG, GIF, WebP, recognised by their bytes) become image parts; text-like files (by type or
name) and PDFs (pypdf, off the event loop) are inlined under their name, all together at most
MAX_ATTACHMENT_CHARS characters; at most MAX_ATTACHMENTS files of a message are read, each at most
MAX_ATTACHMENT_BYTES. Whatever is not read gets one short line for the user ("I could not read
report.docx: ...") and a marker in the text the model sees, so it never guesses at a file it did not get.
"""

from __future__ import annotations

import asyncio
import io
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from pypdf import PdfReader

from core.attachments import Attachment, Fetched, FetchError, FileFetcher, FileTooLargeError, describe_size
from core.file_types import file_kind, image_type
from core.messages import ImagePart

__all__ = ["FileInput", "FileLimits", "read_files"]

log = logging.getLogger(__name__)

_DOWNLOAD_SECONDS = 60.0  # one file's download; a stalled CDN must not hold the turn to its own deadline


@dataclass(frozen=True, slots=True)
class FileLimits:
    max_bytes: int = 10_000_000
    max_files: int = 4
    max_chars: int = 20_000


@dataclass(slots=True)
class FileInput:
    """What the files add: `text` for the model (after the user's), `images`, `notes` for the user,
    `references` (name, type, size) for the stored message's metadata."""

    text: str = ""
    images: list[ImagePart] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    references: list[dict[str, Any]] = field(default_factory=list)
    read: int = 0  # files whose content reaches the model

    def with_notes(self, answer: str) -> str:
        """`answer` followed by the notes, one short italic line each."""
        if not self.notes:
            return answer
        lines = "\n".join(f"_({note})_" for note in self.notes)
        return f"{answer}\n\n{lines}" if answer else lines


async def read_files(attachments: Sequence[Attachment], fetcher: FileFetcher | None, limits: FileLimits) -> FileInput:
    """Download and read `attachments` (the first `limits.max_files`) in the order the user sent them."""
    result = FileInput()
    taken, skipped = attachments[: limits.max_files], attachments[limits.max_files :]
    downloads = await asyncio.gather(*(_download(a, fetcher, limits.max_bytes) for a in taken))
    blocks: list[str] = []
    budget = limits.max_chars
    for attachment, fetched in zip(taken, downloads, strict=True):
        if isinstance(fetched, FetchError):
            result.references.append(_reference(attachment))
            blocks.append(_unread(result, attachment, fetched.reason))
            continue
        result.references.append(_reference(fetched.attachment))
        block, budget = await _read_one(result, fetched.attachment, fetched.data, budget)
        blocks.append(block)
    over = f"I read at most {limits.max_files} files of a message" if limits.max_files else "I don't read files here"
    for attachment in skipped:
        result.references.append(_reference(attachment))
        blocks.append(_unread(result, attachment, over))
    result.text = "\n\n".join(blocks)
    return result


def _reference(attachment: Attachment) -> dict[str, Any]:
    return {"name": attachment.name, "type": attachment.mimetype, "size": attachment.size}


async def _download(attachment: Attachment, fetcher: FileFetcher | None, max_bytes: int) -> Fetched | FetchError:
    if attachment.size is not None and attachment.size > max_bytes:
        return FileTooLargeError(max_bytes)  # said so before a single byte is fetched
    if fetcher is None:
        return FetchError("files cannot be downloaded here")
    try:
        async with asyncio.timeout(_DOWNLOAD_SECONDS):
            return await fetcher.fetch(attachment, max_bytes=max_bytes)
    except FetchError as exc:
        log.warning("attachment not downloaded: %s", exc, extra={"file_id": attachment.file_id})
        return exc
    except TimeoutError:
        log.warning("attachment download timed out", extra={"file_id": attachment.file_id})
        return FetchError("it took too long to download")


async def _read_one(result: FileInput, attachment: Attachment, data: bytes, budget: int) -> tuple[str, int]:
    """The model's text for one downloaded file, and the character budget left after it."""
    name = attachment.name
    image = image_type(data)
    if image is not None:
        result.images.append(ImagePart(mimetype=image, data=data))
        result.read += 1
        return f"[image {name} ({image}, {describe_size(len(data))}): attached]", budget
    kind = file_kind(attachment.name, attachment.mimetype, data)
    if kind == "image":  # named or typed as an image, but not bytes we recognise as one
        return _unread(result, attachment, "it is not a PNG, JPEG, GIF or WebP image I can open"), budget
    if kind == "other":
        return _unread(result, attachment, f"I can't read this kind of file ({_type_of(attachment)})"), budget
    if budget <= 0:
        return _unread(result, attachment, "the message's other files already filled the room I have"), budget
    if kind == "pdf":
        text, reason = await asyncio.to_thread(_pdf_text, data, budget + 1)
    else:
        text, reason = _decode(data), None
    if reason is not None:
        return _unread(result, attachment, reason), budget
    result.read += 1
    shown = text[:budget].rstrip("\n")
    header = f"[file {name} ({_type_of(attachment)}, {describe_size(len(data))})]"
    end = f"[end of file {name}]"
    if len(text) > budget:
        result.notes.append(f"I read only the first {budget:,} characters of {name}.")
        end = f"[end of file {name}: cut after {budget:,} characters]"
    return f"{header}\n{shown}\n{end}", budget - len(shown)


def _unread(result: FileInput, attachment: Attachment, reason: str) -> str:
    result.notes.append(f"I could not read {attachment.name}: {reason}.")
    return f"[file {attachment.name} ({_type_of(attachment)}, {describe_size(attachment.size)}): not read, {reason}]"


def _type_of(attachment: Attachment) -> str:
    return attachment.mimetype.partition(";")[0].strip() or "unknown type"


def _decode(data: bytes) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return data.decode("cp1252", errors="replace")  # older Windows logs and CSV exports


def _pdf_text(data: bytes, max_chars: int) -> tuple[str, str | None]:
    """The PDF's text, page by page, stopping once `max_chars` are read; or (\"\", why not)."""
    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted and not reader.decrypt(""):
            return "", "it is password-protected"
        pages: list[str] = []
        total = 0
        for page in reader.pages:
            text = page.extract_text() or ""
            pages.append(text)
            total += len(text)
            if total >= max_chars:
                break
    except Exception as exc:  # a parser of untrusted bytes: any failure means "not readable"
        log.warning("PDF not read: %s: %s", type(exc).__name__, exc)
        return "", "it is not a PDF I can open"
    text = "\n\n".join(page.strip() for page in pages).strip()
    if not text:
        return "", "it has no text I can extract (a scanned PDF?)"
    return text, None
