"""One capped HTTP download: the part of every adapter's `FileFetcher` that is the same on each platform.

The declared `Content-Length` is checked before the body is read, and the body is read in chunks that
stop at MAX_ATTACHMENT_BYTES (a server may send no length, or a wrong one).
"""

from __future__ import annotations

__all__ = ["DOWNLOAD_TIMEOUT_SECONDS", "download"]

from collections.abc import Mapping
from typing import Final

import aiohttp

from core.attachments import FetchError, FileTooLargeError, read_capped

DOWNLOAD_TIMEOUT_SECONDS: Final = 30.0
_CHUNK_BYTES: Final = 64 * 1024


async def download(
    session: aiohttp.ClientSession, url: str, *, max_bytes: int, headers: Mapping[str, str] | None = None
) -> tuple[bytes, str]:
    """The body at `url` (at most `max_bytes`) and its content type.

    Raises:
        FetchError: the server did not answer 200, or the connection failed (FileTooLargeError: too big).
    """
    timeout = aiohttp.ClientTimeout(total=DOWNLOAD_TIMEOUT_SECONDS)
    try:
        async with session.get(url, headers=headers, timeout=timeout) as response:
            if response.status != 200:
                raise FetchError(f"the download failed (HTTP {response.status})", f"HTTP {response.status}")
            if response.content_length is not None and response.content_length > max_bytes:
                raise FileTooLargeError(max_bytes)
            data = await read_capped(response.content.iter_chunked(_CHUNK_BYTES), max_bytes)
            return data, response.content_type
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise FetchError("the download failed", f"{type(exc).__name__}: {exc}") from exc
