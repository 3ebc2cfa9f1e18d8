"""What fits in one model request: context windows of known models, token estimates, trimming the history.

Two rules hold for every request built here: the history is cut only from its oldest end, and a tool
exchange (an assistant message with tool calls and the tool messages answering it) is sent whole or
not at all, so OpenAI never sees a tool result without its call or a call without its results.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any

from core.messages import ChatMessage

__all__ = [
    "DEFAULT_CONTEXT_TOKENS",
    "context_window",
    "default_context_tokens",
    "estimate_tokens",
    "fit_history",
    "reply_tokens_parameter",
    "tools_tokens",
    "well_formed",
]

DEFAULT_CONTEXT_TOKENS = 16000

# Input tokens a request may hold, by model-name prefix (the longest prefix wins). Figures from the
# providers' model pages; a model not listed gets DEFAULT_CONTEXT_TOKENS.
_WINDOWS: dict[str, int] = {
    "gpt-5": 272_000,
    "gpt-4.1": 1_047_576,
    "gpt-4o": 128_000,
    "gpt-4-turbo": 128_000,
    "gpt-4": 8_192,
    "gpt-3.5-turbo": 16_385,
    "o1-mini": 128_000,
    "o1": 200_000,
    "o3": 200_000,
    "o4-mini": 200_000,
}
# Reasoning models take max_completion_tokens and refuse max_tokens.
_COMPLETION_TOKENS_MODELS = re.compile(r"^(o\d|gpt-5)")


def _base_name(model_id: str) -> str:
    return model_id.lower().rpartition("/")[2]  # "openai/gpt-4o" as routers name it


def context_window(model_id: str) -> int | None:
    """The model's input window in tokens, if it is one we know."""
    name = _base_name(model_id)
    known = [prefix for prefix in _WINDOWS if name.startswith(prefix)]
    return _WINDOWS[max(known, key=len)] if known else None


def default_context_tokens(model_id: str, reply_tokens: int) -> int:
    """MAX_CONTEXT_TOKENS when it is not set: the known window less the reply's room, else 16000."""
    window = context_window(model_id)
    return DEFAULT_CONTEXT_TOKENS if window is None else max(window - reply_tokens, 1)


def reply_tokens_parameter(model_id: str) -> str:
    """The request field that caps the reply: `max_completion_tokens` for o-series and gpt-5, else `max_tokens`."""
    return "max_completion_tokens" if _COMPLETION_TOKENS_MODELS.match(_base_name(model_id)) else "max_tokens"


def estimate_tokens(message: ChatMessage) -> int:
    """A cheap upper-bound guess (4 characters a token plus framing), enough to keep under a context cap."""
    chars = len(message.text) + sum(len(call.name) + len(call.arguments) + 16 for call in message.tool_calls)
    return math.ceil(chars / 4) + 4


def tools_tokens(tools: Sequence[dict[str, Any]]) -> int:
    """The same guess for the tool definitions a request carries."""
    return math.ceil(sum(len(str(tool)) for tool in tools) / 4)


def fit_history(history: Sequence[ChatMessage], budget: int) -> list[ChatMessage]:
    """The newest well-formed part of `history` whose estimate stays within `budget` tokens."""
    kept: list[ChatMessage] = []
    for message in reversed(history):
        budget -= estimate_tokens(message)
        if budget < 0:
            break
        kept.append(message)
    return well_formed(kept[::-1])


def well_formed(history: Sequence[ChatMessage]) -> list[ChatMessage]:
    """`history` without broken tool exchanges: results whose call is missing, calls missing a result.

    A call whose results were cut loses its tool calls but keeps any text it had; a result that does
    not directly follow its call is dropped. Tool messages of older data (no call ID) stay: they are
    sent as plain text.
    """
    out: list[ChatMessage] = []
    index = 0
    while index < len(history):
        message = history[index]
        index += 1
        if message.role == "tool" and message.tool_call_id is not None:
            continue  # a result with no call right before it
        if message.role != "assistant" or not message.tool_calls:
            out.append(message)
            continue
        wanted = {call.id for call in message.tool_calls}
        results: list[ChatMessage] = []
        while index < len(history) and history[index].role == "tool" and history[index].tool_call_id in wanted:
            results.append(history[index])
            wanted.discard(history[index].tool_call_id)
            index += 1
        if not wanted:
            out += [message, *results]
        elif message.text:
            out.append(message.model_copy(update={"tool_calls": ()}))
    return out


# OpenAI's wording, which llama.cpp's and vLLM's servers copy: "maximum context length is 2048 tokens.
# However, you requested 5989 tokens (...)" / "... your messages resulted in 9000 tokens".
_REFUSED_SIZE = re.compile(r"maximum context length is (\d+) tokens.*?(?:requested|resulted in) (\d+) tokens", re.S)


def history_budget_after_refusal(refusal: str, sent: Sequence[ChatMessage], history: Sequence[ChatMessage]) -> int:
    """The history estimate to keep after the model refused `sent` (which ends with `history`'s part) for length.

    Where the refusal names the window and the size asked for, the estimate is scaled by their ratio (with a
    margin, since the estimate is only a guess); otherwise a quarter of the history is kept.
    """
    history_tokens = sum(estimate_tokens(m) for m in history)
    found = _REFUSED_SIZE.search(refusal)
    if found is None or int(found.group(2)) <= 0:
        return history_tokens // 4
    ratio = int(found.group(1)) / int(found.group(2))
    fixed = sum(estimate_tokens(m) for m in sent) - history_tokens
    return max(0, int((history_tokens + fixed) * ratio * 0.75) - fixed)
