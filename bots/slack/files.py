"""Slack's files: the references a message event carries, and their download with the bot token.

Slack serves `url_private_download` only to a request with `Authorization: Bearer <bot token>` from an
app with the `files:read` scope; otherwise it answers 200 with its HTML sign-in page, not an error, which
is told apart here from the file and reported naming the scope. The token goes only to Slack's own hosts
(and to the host of SLACK_API_URL, where a test or proxy serves the API). A file an event names without a
link (`file_access: check_file_info`, as in Slack Connect channels) is looked up with `files.info` first.
"""

from __future__ import annotations

__all__ = ["MISSING_SCOPE", "SlackFiles", "attachments_of"]

from collections.abc import Mapping
from dataclasses import replace
from typing import Any, Final
from urllib.parse import urlsplit

import aiohttp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bots.downloads import download
from core.attachments import Attachment, Fetched, FetchError, FileTooLargeError

_ADD_SCOPE: Final = "this app lacks the files:read scope (add it under OAuth & Permissions and reinstall the app)"
MISSING_SCOPE: Final = f"Slack sent its sign-in page instead of the file, so {_ADD_SCOPE}"
_HTML_TYPES = frozenset({"text/html", "application/xhtml+xml"})


def attachments_of(event: Mapping[str, Any]) -> tuple[Attachment, ...]:
    """The files of a `message`/`app_mention` event, as references (nothing is downloaded here)."""
    files = event.get("files") or ()
    # A tombstone was deleted before we got here.
    return tuple(_attachment(item) for item in files if isinstance(item, Mapping) and item.get("mode") != "tombstone")


def _attachment(item: Mapping[str, Any]) -> Attachment:
    size = item.get("size")
    return Attachment(
        name=str(item.get("name") or item.get("title") or item.get("id") or "file"),
        mimetype=str(item.get("mimetype") or ""),
        size=size if isinstance(size, int) else None,
        url=str(item.get("url_private_download") or item.get("url_private") or ""),
        file_id=str(item.get("id") or ""),
    )


class SlackFiles:
    """The `FileFetcher` of Slack messages. Borrows `session` (the adapter's, closed by the adapter)."""

    def __init__(self, session: aiohttp.ClientSession, client: AsyncWebClient, *, token: str, api_url: str) -> None:
        self._session = session
        self._client = client
        self._token = token
        self._api_host = urlsplit(api_url).netloc.lower()

    async def fetch(self, attachment: Attachment, *, max_bytes: int) -> Fetched:
        """Raises: FetchError (MISSING_SCOPE when Slack answers with its sign-in page)."""
        if not attachment.url:
            attachment = await self._look_up(attachment)
            if attachment.size is not None and attachment.size > max_bytes:
                raise FileTooLargeError(max_bytes)
        url = attachment.url
        host = urlsplit(url).netloc.lower()
        if not self._trusted(host):
            raise FetchError("its link does not point at Slack", f"file host {host!r} is not Slack's")
        headers = {"Authorization": f"Bearer {self._token}"}
        data, content_type = await download(self._session, url, max_bytes=max_bytes, headers=headers)
        if content_type in _HTML_TYPES and attachment.mimetype not in _HTML_TYPES:
            raise FetchError(MISSING_SCOPE, "Slack answered the file download with an HTML page")
        return Fetched(data, attachment)

    async def _look_up(self, attachment: Attachment) -> Attachment:
        """A file the event named without its link, as files.info describes it."""
        file_id = attachment.file_id
        if not file_id:
            raise FetchError("Slack did not send a link to it (share it again, or upload it here)")
        try:
            found = await self._client.files_info(file=file_id)
        except SlackApiError as exc:
            code = str(exc.response.get("error") or "unknown_error")  # safe to log, never the token
            reason = f"Slack refused to describe it, so {_ADD_SCOPE}" if code == "missing_scope" else (
                "Slack would not give me its link"
            )  # fmt: skip
            raise FetchError(reason, f"files.info: {code}") from exc
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise FetchError("Slack would not give me its link", f"files.info: {type(exc).__name__}") from exc
        item = found.get("file")
        described = _attachment(item) if isinstance(item, Mapping) else attachment
        if not described.url:
            raise FetchError("Slack did not send a link to it (share it again, or upload it here)")
        return replace(described, file_id=file_id)

    def _trusted(self, host: str) -> bool:
        name = host.rpartition("@")[2].partition(":")[0]
        return host == self._api_host or name == "slack.com" or name.endswith(".slack.com")
