"""Splitting long replies: limits respected, paragraphs kept, code blocks closed and reopened."""

from __future__ import annotations

import pytest

from core.chunking import split_message


def test_short_text_is_one_part() -> None:
    assert split_message("hello", 2000) == ["hello"]


def test_breaks_fall_between_paragraphs() -> None:
    paragraphs = [f"Paragraph {i}. " + "word " * 60 for i in range(20)]
    parts = split_message("\n\n".join(p.strip() for p in paragraphs), 1000)
    assert len(parts) > 1 and all(len(p) <= 1000 for p in parts)
    assert all(p.startswith("Paragraph") for p in parts)
    assert " ".join(parts).count("Paragraph") == 20


def test_a_code_block_split_is_closed_and_reopened_with_its_language() -> None:
    code = "\n".join(f"print({i})  # line {i}" for i in range(400))
    text = f"Here is code:\n\n```python\n{code}\n```\n\nDone."
    parts = split_message(text, 2000)
    assert all(len(p) <= 2000 for p in parts)
    for part in parts:
        assert part.count("```") % 2 == 0, part[:80]
    code_parts = [p for p in parts if "print(" in p]
    assert all("```python\n" in p for p in code_parts)
    rebuilt = "".join(p for p in parts).replace("```python\n", "").replace("\n```", "")
    assert all(f"print({i})" in rebuilt for i in range(400))


def test_a_huge_single_line_is_hard_cut() -> None:
    parts = split_message("x" * 5000, 2000)
    assert [len(p) for p in parts] == [2000, 2000, 1000]


def test_unicode_heavy_text_splits_without_loss() -> None:
    text = " ".join(["你好👩🏽‍💻ünï"] * 1000)
    parts = split_message(text, 500)
    assert all(len(p) <= 500 for p in parts)
    assert " ".join(parts) == text


def test_past_max_parts_the_last_part_says_it_was_truncated() -> None:
    parts = split_message("\n\n".join(["para " * 100] * 50), 1000, max_parts=3)
    assert len(parts) == 3 and all(len(p) <= 1000 for p in parts)
    assert "reply truncated" in parts[-1]


def test_an_unclosed_code_block_is_closed() -> None:
    parts = split_message("```js\n" + "let a = 1;\n" * 300, 1000)
    assert all(p.count("```") % 2 == 0 for p in parts)


@pytest.mark.parametrize("limit", [50, 333, 2000, 4000])
def test_no_part_ever_exceeds_the_limit(limit: int) -> None:
    text = "# Title\n\n" + "\n\n".join(f"```\n{'y' * 700}\n```\n\n{'z ' * 300}" for _ in range(5))
    assert all(len(p) <= limit for p in split_message(text, limit))
