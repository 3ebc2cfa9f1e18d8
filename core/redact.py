"""Credentials out of everything shown: URLs' userinfo and query values, and known secret values.

The rule not to break: every log line passes through a `Redactor` (core.logs' formatters use one), and
anything else that prints a URL or an error text that may hold one (the CLI's `check`) redacts it first.
A URL keeps its scheme, host, port and path, so a line still says where things went; its password (or a
bare token before `@`) becomes `***`, and so does every query value (`?key=***&api-version=***`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import unquote, urlsplit

__all__ = ["MASK", "Redactor", "redact_text", "redact_url", "url_secrets"]

MASK = "***"
_MIN_SECRET_CHARS = 4  # shorter values would mask ordinary words; such secrets are no secret anyway
# scheme://[userinfo@]rest: a URL ends at whitespace or a quote/bracket a message wraps it in.
_URL = re.compile(r"""(?P<scheme>\b[A-Za-z][A-Za-z0-9+.\-]*://)(?P<rest>[^\s'"<>`]+)""")
_QUERY_VALUE = re.compile(r"=([^&#]*)")
_TRAILING = ".,:;!?)]}"


def _redact_userinfo(userinfo: str) -> str:
    user, colon, _ = userinfo.partition(":")
    return f"{user}:{MASK}" if colon else MASK


def redact_url(url: str) -> str:
    """`url` with its password (or bare token) and every query value replaced by `***`."""
    match = _URL.fullmatch(url)
    return _redact_match(match) if match else url


def _redact_match(match: re.Match[str]) -> str:
    rest = match.group("rest")
    trailing = len(rest) - len(rest.rstrip(_TRAILING))  # "at http://h/v1?x=1: boom": the colon is prose
    rest, after = rest[: len(rest) - trailing], rest[len(rest) - trailing :]
    authority_end = len(rest)
    for stop in "/?#":
        at = rest.find(stop)
        if at != -1:
            authority_end = min(authority_end, at)
    authority, tail = rest[:authority_end], rest[authority_end:]
    userinfo, at_sign, hosts = authority.rpartition("@")
    if at_sign:
        authority = f"{_redact_userinfo(userinfo)}@{hosts}"
    path, question, query = tail.partition("?")
    if question:
        query, hash_sign, fragment = query.partition("#")
        tail = f"{path}?{_QUERY_VALUE.sub(f'={MASK}', query)}{hash_sign}{fragment}"
    return f"{match.group('scheme')}{authority}{tail}{after}"


def redact_text(text: str) -> str:
    """Every URL in `text` redacted as `redact_url` does."""
    return _URL.sub(_redact_match, text) if "://" in text else text


def url_secrets(url: str | None) -> list[str]:
    """The secret parts of a URL (password or bare token, query values), as written and decoded."""
    if not url:
        return []
    parts = urlsplit(url)
    userinfo = parts.netloc.rpartition("@")[0]
    found: list[str] = []
    if userinfo:
        user, colon, password = userinfo.partition(":")
        found.append(password if colon else user)
    found += [value for value in _QUERY_VALUE.findall(parts.query)]
    return [form for value in found if value for form in {value, unquote(value)}]


class Redactor:
    """Redacts URLs and masks the given secret values wherever they occur (the settings' tokens and keys)."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        values = {value for value in secrets if len(value) >= _MIN_SECRET_CHARS}
        self._secrets = sorted(values, key=len, reverse=True)  # a secret containing another goes first

    def __call__(self, text: str) -> str:
        text = redact_text(text)
        for value in self._secrets:
            if value in text:
                text = text.replace(value, MASK)
        return text
