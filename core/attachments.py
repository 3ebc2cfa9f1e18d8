"""Files users attach: the reference the inbox keeps, the port that downloads them, the download cap.

Nothing is downloaded at intake: the platform is acknowledged once the message is durable, and the
inbox keeps only an `Attachment` (name, type, declared size, URL, platform ID). The turn, in whichever
process holds the lease, downloads through the `FileFetcher` its platform's adapter gave the delivery
(core.file_input turns the bytes into model input). A fetcher raises `FetchError` with a reason fit
for the user ("it is larger than 10 MB"); the cause goes to the log.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

__all__ = ["Attachment", "FetchError", "Fetched", "FileFetcher", "FileTooLargeError", "describe_size", "read_capped"]


@dataclass(frozen=True, slots=True)
class Attachment:
    """One file of a message as the platform described it; `size` is the declared size (None: not given)."""

    name: str
    mimetype: str = ""
    size: int | None = None
    url: str = ""
    file_id: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "mimetype": self.mimetype, "size": self.size, "url": self.url, "file_id": self.file_id
        }  # fmt: skip

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Attachment:
        size = data.get("size")
        return cls(
            name=str(data.get("name") or "file"),
            mimetype=str(data.get("mimetype") or ""),
            size=int(size) if isinstance(size, int | float) else None,
            url=str(data.get("url") or ""),
            file_id=str(data.get("file_id") or ""),
        )


@dataclass(frozen=True, slots=True)
class Fetched:
    """A downloaded file: its bytes, and the attachment as the platform describes it now (a lookup may
    name a file the message event only gave the ID of)."""

    data: bytes
    attachment: Attachment


class FetchError(Exception):
    """A file could not be downloaded. `reason` completes "I could not read <name>: ..." for the user."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(detail or reason)
        self.reason = reason


class FileTooLargeError(FetchError):
    """The file is larger than MAX_ATTACHMENT_BYTES (declared, or found while downloading)."""

    def __init__(self, max_bytes: int) -> None:
        super().__init__(f"it is larger than {describe_size(max_bytes)}, the most I download")


class FileFetcher(Protocol):
    """The platform's way to download an attachment (with its bot token where the platform needs one)."""

    async def fetch(self, attachment: Attachment, *, max_bytes: int) -> Fetched:
        """The file's bytes, at most `max_bytes`.

        Raises:
            FetchError: not downloaded (FileTooLargeError: over `max_bytes`); `reason` says why.
        """
        ...


async def read_capped(chunks: AsyncIterator[bytes], max_bytes: int) -> bytes:
    """Join `chunks`, stopping as soon as they pass `max_bytes`: a file that lied about its size costs
    at most one chunk more than the cap.

    Raises:
        FileTooLargeError: more than `max_bytes` arrived.
    """
    parts: list[bytes] = []
    total = 0
    async for chunk in chunks:
        total += len(chunk)
        if total > max_bytes:
            raise FileTooLargeError(max_bytes)
        parts.append(chunk)
    return b"".join(parts)


def describe_size(size: int | None) -> str:
    """A size as people read it: 980 bytes, 12 KB, 3.4 MB."""
    if size is None:
        return "size unknown"
    if size < 1000:
        return f"{size} bytes"
    if size < 1_000_000:
        return f"{size / 1000:.0f} KB"
    megabytes = size / 1_000_000
    return f"{megabytes:.0f} MB" if megabytes >= 10 or megabytes.is_integer() else f"{megabytes:.1f} MB"
