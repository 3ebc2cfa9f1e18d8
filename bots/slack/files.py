"""Slack's files: the references a message event carries, and their download with the bot token.

Slack serves `url_private_download` only to a request with `Authorization: Bearer <bot token>` from an
app with the `files:read` scope; otherwise it answers 200 with its HTML sign-in page, not an error, which
is told apart here from the file and reported naming the scope. The token goes only to Slack's own hosts
(and to the host of SLACK_API_URL, where a test or proxy serves the API).
"""

from __future__ import annotations

__all__ = ["MISSING_SCOPE", "SlackFiles", "attachments_of"]

from collections.abc import Mapping
from typing import Any, Final
from urllib.parse import urlsplit

import aiohttp

from bots.downloads import download
from core.attachments import Attachment, FetchError

MISSING_SCOPE: Final = (
    "Slack sent its sign-in page instead of the file, so this app lacks the files:read scope "
    "(add it under OAuth & Permissions and reinstall the app)"
)
_HTML_TYPES = frozenset({"text/html", "application/xhtml+xml"})


def attachments_of(event: Mapping[str, Any]) -> tuple[Attachment, ...]:
    """The files of a `message`/`app_mention` event, as references (nothing is downloaded here)."""
    found = []
    for item in event.get("files") or ():
        if not isinstance(item, Mapping) or item.get("mode") == "tombstone":  # deleted before we got here
            continue
        size = item.get("size")
        found.append(
            Attachment(
                name=str(item.get("name") or item.get("title") or item.get("id") or "file"),
                mimetype=str(item.get("mimetype") or ""),
                size=size if isinstance(size, int) else None,
                url=str(item.get("url_private_download") or item.get("url_private") or ""),
                file_id=str(item.get("id") or ""),
            )
        )
    return tuple(found)


class SlackFiles:
    """The `FileFetcher` of Slack messages. Borrows `session` (the adapter's, closed by the adapter)."""

    def __init__(self, session: aiohttp.ClientSession, *, token: str, api_url: str) -> None:
        self._session = session
        self._token = token
        self._api_host = urlsplit(api_url).netloc.lower()

    async def fetch(self, attachment: Attachment, *, max_bytes: int) -> bytes:
        """Raises: FetchError (MISSING_SCOPE when Slack answers with its sign-in page)."""
        if not attachment.url:
            raise FetchError("Slack did not send a link to it (share it again, or upload it here)")
        host = urlsplit(attachment.url).netloc.lower()
        if not self._trusted(host):
            raise FetchError("its link does not point at Slack", f"file host {host!r} is not Slack's")
        headers = {"Authorization": f"Bearer {self._token}"}
        data, content_type = await download(self._session, attachment.url, max_bytes=max_bytes, headers=headers)
        if content_type in _HTML_TYPES and attachment.mimetype not in _HTML_TYPES:
            raise FetchError(MISSING_SCOPE, "Slack answered the file download with an HTML page")
        return data

    def _trusted(self, host: str) -> bool:
        name = host.rpartition("@")[2].partition(":")[0]
        return host == self._api_host or name == "slack.com" or name.endswith(".slack.com")
