"""The chat model port: any OpenAI-compatible server through the `openai` SDK, or the offline model.

Every SDK failure leaves here as a `ModelError` whose `user_message` is safe to post and whose text
is for the log. Retries with backoff on 429/5xx/connection errors are the SDK's (`max_retries`),
honouring `retry-after`; we add none of our own.
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator, Sequence
from typing import Any, cast
from uuid import uuid4

import openai
from openai import AsyncOpenAI, Omit, omit
from openai.types.chat import ChatCompletion, ChatCompletionMessageParam, ChatCompletionToolUnionParam

from core.agent import AgentFactory
from core.context import reply_tokens_parameter
from core.errors import ContextTooLongError, ImagesRefusedError, ModelError, ModelRejectedError, ModelTimeoutError
from core.messages import ChatMessage, ToolCall
from core.model import DeltaCallback, ModelReply, ModelUsage, ToolChoice
from core.settings import Settings

__all__ = ["ModelBusyError", "OfflineChatModel", "OpenAIChatClient", "OpenAIChatModel"]

DEFAULT_MODEL = "gpt-4o-mini"
# How servers word "your request is longer than my context window" (OpenAI, vLLM, llama.cpp, LM Studio).
log = logging.getLogger(__name__)
_TOO_LONG = re.compile(r"context.(length|size|window)|too many tokens|prompt is too long|reduce the length", re.I)
# How text-only servers refuse image parts (llama.cpp without --mmproj, vLLM, OpenAI, LM Studio, Ollama).
_NO_IMAGES = re.compile(
    r"image input is not supported|at most 0 image|image_url is only supported|does not support (image|vision)"
    r"|(images?|vision|multimodal) (input )?(is|are) not supported|not a multimodal model|unknown variant .image_url",
    re.I,
)


class ModelBusyError(ModelError):
    """The server kept answering 429 after the SDK's retries."""

    user_message = "The language model is busy right now, so I saved nothing. Please try again in a minute."


def translate_openai_error(exc: Exception, where: str) -> ModelError:
    """One `ModelError` per SDK failure; the text names the server and the cause for the operator."""
    detail = f"{type(exc).__name__} from {where}: {exc}"
    if _refuses_images(exc):
        return ImagesRefusedError(detail)
    if _is_too_long(exc):
        return ContextTooLongError(detail)
    if isinstance(exc, openai.APITimeoutError):
        return ModelTimeoutError(detail)
    if isinstance(exc, openai.RateLimitError):
        return ModelBusyError(detail)
    if isinstance(
        exc,
        openai.AuthenticationError
        | openai.PermissionDeniedError
        | openai.NotFoundError
        | openai.BadRequestError
        | openai.UnprocessableEntityError,
    ):
        return ModelRejectedError(detail)
    return ModelError(detail)


def _is_too_long(exc: Exception) -> bool:
    if not isinstance(exc, openai.APIStatusError) or exc.status_code not in (400, 413, 422):
        return False
    return getattr(exc, "code", None) == "context_length_exceeded" or bool(_TOO_LONG.search(str(exc)))


def _refuses_images(exc: Exception) -> bool:
    # llama.cpp has answered this with a 500 in some versions, a 400 in others.
    if not isinstance(exc, openai.APIStatusError) or exc.status_code not in (400, 422, 500):
        return False
    return bool(_NO_IMAGES.search(str(exc)))


class OpenAIChatModel(AgentFactory):
    """A model behind the Chat Completions API. The SDK client is built on first use, never in `__init__`."""

    def __init__(
        self,
        model_id: str | None = None,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        async_client: AsyncOpenAI | None = None,
        timeout: float = 60.0,
        max_retries: int = 2,
        max_reply_tokens: int | None = None,
    ) -> None:
        self.model_id = model_id or DEFAULT_MODEL
        self.max_reply_tokens = max_reply_tokens
        self._api_key = api_key
        self._base_url = base_url
        self._timeout = timeout
        self._max_retries = max_retries
        self._client = async_client
        self._owns_client = async_client is None

    @property
    def client(self) -> AsyncOpenAI:
        if self._client is None:
            try:
                self._client = AsyncOpenAI(
                    # OpenAI-compatible local servers need no key, but the SDK insists on one.
                    api_key=self._api_key or ("not-needed" if self._base_url else None),
                    base_url=self._base_url,
                    timeout=self._timeout,
                    max_retries=self._max_retries,
                )
            except openai.OpenAIError as exc:
                raise ModelRejectedError(f"cannot build the OpenAI client: {exc}") from exc
        return self._client

    def _where(self) -> str:
        return f"{self.model_id} at {self.client.base_url}"

    async def complete(self, messages: Sequence[ChatMessage]) -> str:
        """The model's whole reply.

        Raises:
            ModelError: timeout, rejection, server error, or a reply without text.
        """
        return (await self.reply(messages)).text

    async def stream(self, messages: Sequence[ChatMessage]) -> AsyncIterator[str]:
        """The reply as text deltas, as the server sends them.

        Raises:
            ModelError: as `complete`, also when the stream breaks off midway or ends without any text.
        """
        client = self.client
        answered = False
        try:
            chunks = await client.chat.completions.create(
                model=self.model_id, messages=_params(messages), stream=True, **self._limits()
            )
            async for chunk in chunks:
                delta = chunk.choices[0].delta.content if chunk.choices else None
                if delta:
                    answered = True
                    yield delta
        except (openai.OpenAIError, ValueError) as exc:  # the SDK lets a garbled JSON body out as ValueError
            raise translate_openai_error(exc, self._where()) from exc
        if not answered:  # e.g. a server that died before its first token closes the stream cleanly
            raise ModelError(f"stream from {self._where()} ended with no text")

    async def reply(
        self,
        messages: Sequence[ChatMessage],
        *,
        tools: Sequence[dict[str, Any]] = (),
        tool_choice: ToolChoice | None = None,
        on_delta: DeltaCallback | None = None,
        model: str | None = None,
        temperature: float | None = None,
    ) -> ModelReply:
        """One call with `tools` offered: text and any tool calls, streamed to `on_delta` when given;
        `model` and `temperature`, when given, are this call's instead of the client's model and the server's default.

        Raises:
            ModelError: timeout, rejection (ContextTooLongError for a request too long), server error,
                or a malformed reply.
        """
        client = self.client
        offered = cast("list[ChatCompletionToolUnionParam]", list(tools)) if tools else omit
        choice: ToolChoice | Omit = tool_choice if tools and tool_choice else omit
        model_id = model or self.model_id
        options = {**self._limits(model_id), **({"temperature": temperature} if temperature is not None else {})}
        try:
            if on_delta is not None:
                chunks = await client.chat.completions.create(
                    model=model_id, messages=_params(messages), tools=offered, tool_choice=choice, stream=True,
                    stream_options={"include_usage": True}, **options,
                )  # fmt: skip
                streamed = await _assemble(chunks, on_delta)
                if streamed.text or streamed.tool_calls:
                    return streamed
                # Nothing at all: some servers (llama.cpp's) end a stream they refused without a word, or
                # died before the first token. Asked once more without streaming, they say which it was.
                log.warning("stream from %s ended with no text; asking again without streaming", self._where())
            completion = await client.chat.completions.create(
                model=model_id, messages=_params(messages), tools=offered, tool_choice=choice, **options
            )
        except (openai.OpenAIError, ValueError) as exc:  # the SDK lets a garbled JSON body out as ValueError
            raise translate_openai_error(exc, self._where()) from exc
        answer = self._reply_of(completion)
        if on_delta is not None:
            if not answer.text and not answer.tool_calls:
                raise ModelError(f"stream from {self._where()} ended with no text")
            if answer.text:
                await on_delta(answer.text)
        return answer

    def _limits(self, model_id: str | None = None) -> dict[str, Any]:
        if not self.max_reply_tokens:
            return {}
        return {reply_tokens_parameter(model_id or self.model_id): self.max_reply_tokens}

    def _reply_of(self, completion: ChatCompletion) -> ModelReply:
        choices = getattr(completion, "choices", None)
        message = choices[0].message if choices else None
        text = getattr(message, "content", None)
        calls = tuple(
            ToolCall(id=call.id or _call_id(), name=call.function.name, arguments=call.function.arguments or "{}")
            for call in (getattr(message, "tool_calls", None) or ())
            if getattr(call, "function", None) is not None
        )
        if not isinstance(text, str) and not (calls and text is None):
            raise ModelError(f"malformed reply from {self._where()}: no text in {str(completion)[:200]!r}")
        finish = choices[0].finish_reason if choices else None
        return ModelReply(text or "", calls, finish, _usage_of(getattr(completion, "usage", None)))

    async def aclose(self) -> None:
        if self._owns_client and self._client is not None:
            await self._client.close()


# The reference notebook's name for the same thing.
OpenAIChatClient = OpenAIChatModel


class OfflineChatModel(AgentFactory):
    """A deterministic stand-in used when no model is configured, so the gateway runs and memory shows."""

    model_id = "offline"

    async def complete(self, messages: Sequence[ChatMessage]) -> str:
        conversation = [m for m in messages if m.role != "system"]
        latest = conversation[-1].text if conversation else ""
        earlier = conversation[:-1]
        first_user = next((m.text for m in earlier if m.role == "user"), None)
        memory = (
            f"I was given {len(earlier)} earlier messages; the first thing you told me was “{_clip(first_user)}”."
            if first_user is not None
            else "This is the start of our conversation: I was given no earlier messages."
        )
        return (
            f"[offline model] You said “{_clip(latest)}”. {memory} "
            "Set OPENAI_API_KEY or OPENAI_BASE_URL to talk to a real model."
        )

    async def stream(self, messages: Sequence[ChatMessage]) -> AsyncIterator[str]:
        text = await self.complete(messages)
        words = text.split(" ")
        for index, word in enumerate(words):
            yield word if index == len(words) - 1 else word + " "

    async def reply(
        self,
        messages: Sequence[ChatMessage],
        *,
        tools: Sequence[dict[str, Any]] = (),
        tool_choice: ToolChoice | None = None,
        on_delta: DeltaCallback | None = None,
        model: str | None = None,
        temperature: float | None = None,
    ) -> ModelReply:
        """As `complete`; the offline model calls no tools and has no other models or temperature."""
        if on_delta is None:
            return ModelReply(await self.complete(messages), finish_reason="stop")
        parts = []
        async for delta in self.stream(messages):
            parts.append(delta)
            await on_delta(delta)
        return ModelReply("".join(parts), finish_reason="stop")

    async def aclose(self) -> None:
        """Nothing to close."""


def _params(messages: Sequence[ChatMessage]) -> list[ChatCompletionMessageParam]:
    # to_openai() builds exactly the role/content dicts these TypedDicts describe.
    return cast("list[ChatCompletionMessageParam]", [m.to_openai() for m in messages])


async def _assemble(chunks: AsyncIterator[Any], on_delta: DeltaCallback) -> ModelReply:
    """A streamed reply put together: text deltas passed on, tool-call deltas joined by their index."""
    parts: list[str] = []
    calls: dict[int, dict[str, str]] = {}
    finish: str | None = None
    usage: ModelUsage | None = None
    async for chunk in chunks:
        # Asked for with stream_options.include_usage, it comes in a last chunk of its own, without choices.
        usage = _usage_of(getattr(chunk, "usage", None)) or usage
        if not chunk.choices:
            continue
        choice = chunk.choices[0]
        delta = choice.delta
        if delta.content:
            parts.append(delta.content)
            await on_delta(delta.content)
        for piece in delta.tool_calls or ():
            slot = calls.setdefault(piece.index, {"id": "", "name": "", "arguments": ""})
            slot["id"] = piece.id or slot["id"]
            if piece.function is not None:
                slot["name"] += piece.function.name or ""
                slot["arguments"] += piece.function.arguments or ""
        finish = choice.finish_reason or finish
    tool_calls = tuple(
        ToolCall(id=slot["id"] or _call_id(), name=slot["name"], arguments=slot["arguments"] or "{}")
        for _, slot in sorted(calls.items())
    )
    return ModelReply("".join(parts), tool_calls, finish, usage)


def _usage_of(usage: Any) -> ModelUsage | None:
    """The server's `usage`, if it sent one with numbers in it (some send nulls or nothing)."""
    prompt = getattr(usage, "prompt_tokens", None)
    completion = getattr(usage, "completion_tokens", None)
    if not isinstance(prompt, int) or not isinstance(completion, int):
        return None
    return ModelUsage(prompt, completion)


def _call_id() -> str:
    # Some OpenAI-compatible servers send calls without IDs; tool messages must still name one.
    return f"call_{uuid4().hex[:24]}"


def _clip(text: str | None, limit: int = 80) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def model_from_settings(settings: Settings) -> OpenAIChatModel | OfflineChatModel:
    """The configured model: OpenAI-compatible when a key or base URL is set, else the offline model."""
    if settings.openai_api_key is None and settings.openai_base_url is None:
        return OfflineChatModel()
    key = settings.openai_api_key.get_secret_value() if settings.openai_api_key is not None else None
    return OpenAIChatModel(
        settings.openai_model,
        api_key=key,
        base_url=settings.openai_base_url,
        timeout=settings.model_timeout_seconds,
        max_retries=settings.model_max_retries,
        max_reply_tokens=settings.max_reply_tokens or None,
    )
