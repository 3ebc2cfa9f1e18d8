"""What kind of file a download is: an image by its first bytes, else a PDF or text by type, name and content.

Types come from the platform (Slack's `mimetype`, Discord's `content_type`), which may be missing or
generic (`application/octet-stream`), so the file's name and its bytes have the last word.
"""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import Literal

__all__ = ["FileKind", "file_kind", "image_type"]

FileKind = Literal["image", "pdf", "text", "other"]

_IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".gif", ".webp"})
_TEXT_TYPES = frozenset({
    "application/json", "application/x-ndjson", "application/xml", "application/yaml", "application/x-yaml",
    "application/toml", "application/javascript", "application/x-javascript", "application/typescript",
    "application/sql", "application/x-sh", "application/x-shellscript", "application/x-python",
    "application/csv", "application/x-httpd-php", "application/graphql", "application/ld+json",
})  # fmt: skip
_TEXT_SUFFIXES = frozenset({
    ".txt", ".text", ".md", ".markdown", ".rst", ".csv", ".tsv", ".json", ".jsonl", ".ndjson", ".yaml", ".yml",
    ".toml", ".ini", ".cfg", ".conf", ".env", ".properties", ".log", ".out", ".err", ".xml", ".html", ".htm",
    ".css", ".scss", ".py", ".pyi", ".js", ".mjs", ".cjs", ".ts", ".tsx", ".jsx", ".go", ".rs", ".java", ".kt",
    ".kts", ".scala", ".c", ".h", ".cc", ".cpp", ".hpp", ".cs", ".m", ".swift", ".rb", ".php", ".pl", ".lua",
    ".r", ".jl", ".sh", ".bash", ".zsh", ".fish", ".ps1", ".bat", ".sql", ".graphql", ".proto", ".tf", ".hcl",
    ".dockerfile", ".gradle", ".vue", ".svelte", ".diff", ".patch", ".tex", ".srt", ".vtt",
})  # fmt: skip
_TEXT_NAMES = frozenset({"dockerfile", "makefile", "readme", "license", "changelog", "procfile", "gemfile"})


def image_type(data: bytes) -> str | None:
    """The MIME type of a PNG, JPEG, GIF or WebP image by its signature; None for anything else."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data.startswith((b"GIF87a", b"GIF89a")):
        return "image/gif"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return None


def file_kind(name: str, mimetype: str, data: bytes) -> FileKind:
    """How to read a file that is not a recognised image."""
    path = PurePosixPath(name.lower())
    mime = mimetype.lower().partition(";")[0].strip()
    if mime.startswith("image/") or path.suffix in _IMAGE_SUFFIXES:
        return "image"
    if mime == "application/pdf" or path.suffix == ".pdf" or data.startswith(b"%PDF-"):
        return "pdf"
    named_text = path.suffix in _TEXT_SUFFIXES or path.name in _TEXT_NAMES
    if mime.startswith("text/") or mime in _TEXT_TYPES or mime.endswith(("+json", "+xml")) or named_text:
        return "text" if _looks_like_text(data) else "other"
    return "other"


def _looks_like_text(data: bytes) -> bool:
    # A NUL byte in the first few KB: a binary file under a text name (a .log that is really gzip).
    return b"\x00" not in data[:8192]
