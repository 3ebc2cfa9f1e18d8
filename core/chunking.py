"""Splitting a long reply into messages a platform accepts, for every adapter.

Breaks fall between paragraphs where possible, then between lines, then between words, and never
inside a code block without closing it there and reopening it, with its language, in the next part.
Past `max_parts`, the last part ends with a clear truncation note.
"""

from __future__ import annotations

import re

__all__ = ["split_message"]

_FENCE = re.compile(r"^\s*(```+|~~~+)(.*)$")


def _segments(text: str) -> list[tuple[str, str]]:
    """Paragraphs and whole fenced code blocks, as (fence opener or "", text)."""
    segments: list[tuple[str, str]] = []
    paragraph: list[str] = []
    code: list[str] | None = None
    opener = closer = ""
    for line in text.split("\n"):
        if code is not None:
            code.append(line)
            if line.strip().startswith(closer) and line.strip().strip(closer[0]) == "":
                segments.append((opener, "\n".join(code)))
                code = None
            continue
        fence = _FENCE.match(line)
        if fence:
            if paragraph:
                segments.append(("", "\n".join(paragraph)))
                paragraph = []
            code, opener, closer = [line], line.strip(), fence.group(1)
        elif line.strip() == "":
            if paragraph:
                segments.append(("", "\n".join(paragraph)))
                paragraph = []
        else:
            paragraph.append(line)
    if code is not None:  # an unclosed block: close it so every part renders alike
        segments.append((opener, "\n".join([*code, closer])))
    if paragraph:
        segments.append(("", "\n".join(paragraph)))
    return segments


def _cut(text: str, limit: int, separators: tuple[str, ...]) -> list[str]:
    """Greedy pieces of at most `limit`, breaking at the first separator that helps; hard cuts last."""
    if len(text) <= limit:
        return [text]
    if not separators:
        return [text[i : i + limit] for i in range(0, len(text), limit)]
    separator, finer = separators[0], separators[1:]
    pieces: list[str] = []
    current = ""
    for unit in text.split(separator):
        candidate = f"{current}{separator}{unit}" if current else unit
        if len(candidate) <= limit:
            current = candidate
            continue
        if current:
            pieces.append(current)
        *whole, current = _cut(unit, limit, finer)
        pieces.extend(whole)
    if current:
        pieces.append(current)
    return pieces


def _split_segment(opener: str, text: str, limit: int) -> list[str]:
    if not opener:
        return _cut(text, limit, ("\n", " "))
    closer = re.match(r"\s*(`+|~+)", opener).group(1)  # type: ignore[union-attr]  # openers always start with a fence
    body = text.split("\n")[1:-1]
    room = limit - len(opener) - len(closer) - 2
    return [f"{opener}\n{piece}\n{closer}" for piece in _cut("\n".join(body), max(room, 1), ("\n",))]


def split_message(text: str, limit: int, *, max_parts: int | None = None) -> list[str]:
    """Parts of at most `limit` characters that together read as `text`."""
    if len(text) <= limit:
        return [text]
    parts: list[str] = []
    current = ""
    for opener, segment in _segments(text):
        if len(segment) > limit:
            # The pieces of one oversized segment stand alone: joining them would change its spacing.
            parts.extend(p for p in [current, *_split_segment(opener, segment, limit)] if p)
            current = parts.pop()
        elif current and len(current) + 2 + len(segment) <= limit:
            current = f"{current}\n\n{segment}"
        else:
            if current:
                parts.append(current)
            current = segment
    if current:
        parts.append(current)
    if max_parts is not None and len(parts) > max_parts:
        parts = _truncate(parts, limit, max_parts)
    return parts


def _truncate(parts: list[str], limit: int, max_parts: int) -> list[str]:
    dropped = sum(len(p) for p in parts[max_parts:])
    note = f"\n\n_(reply truncated: {dropped:,} more characters not shown)_"
    kept = parts[:max_parts]
    last = kept[-1]
    if len(last) + len(note) > limit:
        last = last[: max(limit - len(note), 0)]
        if last.count("```") % 2 == 1:  # a cut inside a code block must still close it
            last = last[: max(limit - len(note) - 4, 0)] + "\n```"
    kept[-1] = last + note
    return kept
