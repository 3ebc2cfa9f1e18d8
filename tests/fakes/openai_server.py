"""A fake OpenAI-compatible Chat Completions server for tests.

The fake is a real HTTP server (aiohttp) bound to ``127.0.0.1`` on a free
port, so code under test can talk to it through the real ``openai`` SDK::

    async with FakeOpenAI() as fake:
        client = openai.AsyncOpenAI(api_key="sk-test", base_url=fake.base_url)
        reply = await client.chat.completions.create(model="m", messages=[...])
        request = await asyncio.wait_for(fake.received.get(), 5)

Routes
    ``POST /v1/chat/completions``
        Non-streaming JSON (``object: "chat.completion"``) or, with
        ``"stream": true``, Server-Sent Events: a role chunk, one
        ``chat.completion.chunk`` per piece of the reply (per word, or per
        ``chunk_size`` characters), a final chunk carrying ``finish_reason``,
        an optional usage chunk (``stream_options.include_usage``) and
        ``data: [DONE]``.
    ``GET /v1/models``
        A model list holding only the configured ``model``.
    anything else
        404 with an OpenAI-style error body.

Recording
    Every request (any route) is appended to ``fake.requests`` as a
    :class:`RecordedRequest` (method, path, headers, parsed JSON body) and
    put on the ``fake.received`` queue, before any behaviour runs.

Replies
    By default a chat completion answers ``"echo: <last user message text>"``.
    ``fake.reply_with(fn)`` replaces that with ``fn(messages) -> str``.

Scripted behaviours
    ``fake.script(*behaviours)`` queues behaviours; each chat-completion
    request consumes exactly one, in order; once the queue is empty the
    default reply is used again.

    * ``Reply(text, finish_reason="stop")`` -- answer with this text.
    * ``Status(code, message=None, retry_after=None, ...)`` -- an error
      status with an OpenAI error body; ``retry_after`` (seconds) sets both
      ``retry-after`` (whole seconds, rounded up) and ``retry-after-ms``.
    * ``Garbage(body=..., content_type="application/json")`` -- a 200 whose
      body is not valid JSON (for ``stream: true`` it is sent as one SSE
      ``data:`` line).
    * ``Hang(then=None)`` -- no answer until ``fake.release()`` (then
      ``then``, or the default reply) or until the server closes, at which
      point the handler is cancelled and the connection dropped.
    * ``Delay(seconds, then=None)`` -- wait, then answer with ``then`` (or
      the default reply).
    * ``ToolCalls(("name", {"arg": 1}), ..., text="")`` -- answer with these
      tool calls (``finish_reason: "tool_calls"``), IDs ``call_fake<n>``.
      Streamed, each call's first delta carries its index, ID and name, and
      its arguments follow in pieces of ``chunk_size`` (default 8) characters,
      as OpenAI sends them.

OpenAI's request rules
    Like OpenAI, the fake answers 400 (before consuming a script) when the
    messages break the tool-message rules: a ``tool`` message that does not
    answer a call of the assistant message before it, a ``tool`` message
    without ``tool_call_id``, or an assistant message with ``tool_calls``
    not followed by a ``tool`` message for each of its call IDs. Models whose
    name starts with ``o1``..``o9`` or ``gpt-5`` refuse ``max_tokens``
    (``unsupported_parameter``), as OpenAI's reasoning models do.
    ``fake.report_usage = False`` answers like a server that reports no token
    usage: no ``usage`` in completions, and no usage chunk even when
    ``stream_options.include_usage`` asks for one. (Usage counts words.)
    ``fake.context_window = n`` refuses requests whose messages hold more than
    ``n`` words (tool-call arguments included) with ``context_length_exceeded``.

    ``fake.vision = False`` refuses any request carrying an ``image_url`` part
    with the 400 a text-only llama.cpp server answers (no ``--mmproj``):
    ``image input is not supported - hint: if this is unexpected, you may
    need to provide the mmproj``.

    ``fake.fail_all(status)`` makes every request on every route fail with
    that status (``int`` or :class:`Status`) without consuming scripts, until
    ``fake.reset()``. ``fake.reset()`` also drops queued scripts and any
    ``reply_with`` function; recorded requests are kept.

Authentication
    With ``FakeOpenAI(api_key="sk-...")`` any request whose ``Authorization``
    header is not ``Bearer <api_key>`` gets a 401 ``invalid_api_key`` error.
    Without it, any (or no) key is accepted.

Lifecycle
    ``await fake.start()`` / ``await fake.close()`` or ``async with``.
    ``close()`` cancels hanging and delayed handlers first, so shutdown never
    waits on them.
"""

from __future__ import annotations

__all__ = [
    "Behaviour",
    "Delay",
    "FakeOpenAI",
    "Garbage",
    "Hang",
    "Outcome",
    "RecordedRequest",
    "Reply",
    "ReplyFn",
    "Status",
    "ToolCalls",
    "echo_last_user_message",
    "image_parts",
]

import asyncio
import itertools
import json
import math
import re
import time
from collections import deque
from collections.abc import Callable, Coroutine, Iterator, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from types import TracebackType
from typing import Any, Final, Self, TypeAlias

from aiohttp import web
from aiohttp.typedefs import Handler
from multidict import CIMultiDict, CIMultiDictProxy

JSONObject: TypeAlias = dict[str, Any]
ReplyFn: TypeAlias = Callable[[list[JSONObject]], str]

# Loopback only: the fake must never be reachable from another host.
_HOST: Final = "127.0.0.1"
_WORD: Final = re.compile(r"\s*\S+\s*")


@dataclass(frozen=True)
class Reply:
    """Answer successfully with ``text``."""

    text: str
    finish_reason: str = "stop"


@dataclass(frozen=True)
class Status:
    """Answer with an HTTP error status and an OpenAI-style error body.

    ``error_type``/``code``/``message`` default to what OpenAI sends for the
    status. ``headers`` are added verbatim (e.g. ``{"x-should-retry": "false"}``).
    """

    status: int
    message: str | None = None
    retry_after: float | None = None
    error_type: str | None = None
    code: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not 400 <= self.status <= 599:
            raise ValueError(f"Status must be an HTTP error (4xx/5xx), got {self.status}")
        if self.retry_after is not None and self.retry_after < 0:
            raise ValueError("retry_after must be >= 0")


@dataclass(frozen=True)
class Garbage:
    """Answer 200 with a body that is not valid JSON."""

    body: str = '{"id": "chatcmpl-garbage", "choices": [tru'
    content_type: str = "application/json"


@dataclass(frozen=True, init=False)
class ToolCalls:
    """Answer with tool calls: ``ToolCalls(("lookup", {"id": "1"}), ("add", '{"a": 1}'), text="")``."""

    calls: tuple[tuple[str, str], ...]
    text: str

    def __init__(self, *calls: tuple[str, Mapping[str, Any] | str], text: str = "") -> None:
        arguments = tuple((name, args if isinstance(args, str) else json.dumps(args)) for name, args in calls)
        object.__setattr__(self, "calls", arguments)
        object.__setattr__(self, "text", text)


Outcome: TypeAlias = Reply | Status | Garbage | ToolCalls


@dataclass(frozen=True)
class Hang:
    """Do not answer until ``FakeOpenAI.release()``; then answer ``then``."""

    then: Outcome | None = None


@dataclass(frozen=True)
class Delay:
    """Wait ``seconds``, then answer ``then`` (default reply if ``None``)."""

    seconds: float
    then: Outcome | None = None

    def __post_init__(self) -> None:
        if self.seconds < 0:
            raise ValueError("Delay seconds must be >= 0")


Behaviour: TypeAlias = Reply | Status | Garbage | ToolCalls | Hang | Delay


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the fake received it.

    ``seq`` is the request's index in ``FakeOpenAI.requests``. ``headers`` is
    case-insensitive. ``body`` is the parsed JSON object, or ``None`` when the
    body was empty or not a JSON object.
    """

    seq: int
    method: str
    path: str
    headers: CIMultiDictProxy[str]
    body: JSONObject | None

    @property
    def authorization(self) -> str | None:
        return self.headers.get("Authorization")

    @property
    def messages(self) -> list[JSONObject]:
        messages = (self.body or {}).get("messages")
        return messages if isinstance(messages, list) else []


_RECORD: Final = web.RequestKey("fake_openai_record", RecordedRequest)


def echo_last_user_message(messages: list[JSONObject]) -> str:
    """The default reply: ``"echo: "`` plus the last user message's text."""
    for message in reversed(messages):
        if message.get("role") == "user":
            return f"echo: {_message_text(message)}"
    return "echo: "


class FakeOpenAI:
    """An OpenAI-compatible Chat Completions server on 127.0.0.1.

    :param model: the model listed by ``/v1/models`` and reported when a
        request names no model.
    :param chunk_size: stream replies in pieces of this many characters;
        ``None`` streams one word (with its trailing whitespace) per delta.
    :param api_key: if set, only ``Authorization: Bearer <api_key>`` is
        accepted.
    :param shutdown_timeout: how long ``close()`` lets ordinary in-flight
        handlers finish before aiohttp cancels them.
    """

    def __init__(
        self,
        *,
        model: str = "fake-model",
        chunk_size: int | None = None,
        api_key: str | None = None,
        shutdown_timeout: float = 5.0,
    ) -> None:
        if chunk_size is not None and chunk_size < 1:
            raise ValueError("chunk_size must be >= 1")
        self.model = model
        self.chunk_size = chunk_size
        self.api_key = api_key
        self.context_window: int | None = None
        self.report_usage = True
        self.vision = True
        self.requests: list[RecordedRequest] = []
        self.received: asyncio.Queue[RecordedRequest] = asyncio.Queue()
        self._shutdown_timeout = shutdown_timeout
        self._scripts: deque[Behaviour] = deque()
        self._reply_fn: ReplyFn = echo_last_user_message
        self._failing: Status | None = None
        self._ids = itertools.count(1)
        # release() frees every request received so far, tracked by seq, so a
        # Hang request is freed even if it has not reached its wait yet.
        self._released_upto = -1
        self._release_changed = asyncio.Event()
        self._parked: set[asyncio.Task[Any]] = set()
        self._runner: web.AppRunner | None = None
        self._port: int | None = None

    # -- lifecycle ---------------------------------------------------------

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def start(self) -> None:
        """Start serving on a free loopback port."""
        if self._runner is not None:
            raise RuntimeError("FakeOpenAI is already started")
        runner = web.AppRunner(
            self._build_app(),
            access_log=None,
            handle_signals=False,
            shutdown_timeout=self._shutdown_timeout,
        )
        await runner.setup()
        try:
            await web.TCPSite(runner, _HOST, 0).start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self._port = int(runner.addresses[0][1])

    async def close(self) -> None:
        """Stop serving; cancels hanging/delayed handlers. Idempotent."""
        runner, self._runner = self._runner, None
        if runner is None:
            return
        await self._cancel_parked()
        await runner.cleanup()

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("FakeOpenAI is not started")
        return self._port

    @property
    def url(self) -> str:
        """Server root, e.g. ``http://127.0.0.1:PORT``."""
        return f"http://{_HOST}:{self.port}"

    @property
    def base_url(self) -> str:
        """What to pass as the SDK's ``base_url``: ``http://127.0.0.1:PORT/v1``."""
        return f"{self.url}/v1"

    # -- configuration -----------------------------------------------------

    def script(self, *behaviours: Behaviour) -> None:
        """Queue behaviours; each chat-completion request consumes one."""
        self._scripts.extend(behaviours)

    @property
    def pending_scripts(self) -> int:
        """How many scripted behaviours have not been consumed yet."""
        return len(self._scripts)

    def reply_with(self, fn: ReplyFn | None) -> None:
        """Compute default replies with ``fn(messages)``; ``None`` restores echo."""
        self._reply_fn = fn if fn is not None else echo_last_user_message

    def fail_all(self, status: int | Status) -> None:
        """Fail every request with ``status`` until ``reset()``."""
        self._failing = status if isinstance(status, Status) else Status(status)

    def reset(self) -> None:
        """Drop scripts, ``fail_all`` and ``reply_with``; keep recordings."""
        self._scripts.clear()
        self._failing = None
        self._reply_fn = echo_last_user_message

    def release(self) -> None:
        """Let every request received so far out of ``Hang``."""
        self._released_upto = len(self.requests) - 1
        self._release_changed.set()
        self._release_changed = asyncio.Event()

    # -- server internals --------------------------------------------------

    def _build_app(self) -> web.Application:
        app = web.Application(middlewares=[self._gate])
        app.router.add_post("/v1/chat/completions", self._chat_completions)
        app.router.add_get("/v1/models", self._models)
        app.router.add_route("*", "/{tail:.*}", self._not_found)
        return app

    @web.middleware
    async def _gate(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        record = await self._record(request)
        request[_RECORD] = record
        if not self._authorized(record):
            return _error_response(Status(401), self._next_request_id())
        if self._failing is not None:
            return _error_response(self._failing, self._next_request_id())
        return await handler(request)

    async def _record(self, request: web.Request) -> RecordedRequest:
        raw = await request.read()
        record = RecordedRequest(
            seq=len(self.requests),
            method=request.method,
            path=request.path,
            headers=CIMultiDictProxy(CIMultiDict(request.headers)),
            body=_parse_object(raw),
        )
        self.requests.append(record)
        self.received.put_nowait(record)
        return record

    def _authorized(self, record: RecordedRequest) -> bool:
        return self.api_key is None or record.authorization == f"Bearer {self.api_key}"

    async def _chat_completions(self, request: web.Request) -> web.StreamResponse:
        record = request[_RECORD]
        body = record.body
        request_id = self._next_request_id()
        if body is None:
            return _error_response(Status(400, message="We could not parse the JSON body of your request."), request_id)
        refusal = (
            _tool_rule_error(record.messages)
            or _parameter_error(body)
            or self._image_error(record.messages)
            or self._length_error(record.messages)
        )
        if refusal is not None:
            return _error_response(refusal, request_id)
        # Consume the script before any await so request order decides which
        # request gets which behaviour.
        behaviour = self._scripts.popleft() if self._scripts else None
        outcome = await self._settle(behaviour, record.seq)
        if outcome is None:
            outcome = Reply(self._reply_fn(record.messages))
        if isinstance(outcome, Status):
            return _error_response(outcome, request_id)
        if isinstance(outcome, ToolCalls):
            ids = [f"call_fake{next(self._ids)}" for _ in outcome.calls]
            if body.get("stream") is True:
                return await self._stream_chunks(request, self._tool_chunks(body, outcome, ids), request_id)
            return web.json_response(self._tool_completion(body, outcome, ids), headers=_id_header(request_id))
        if body.get("stream") is True:
            return await self._stream(request, body, outcome, request_id)
        if isinstance(outcome, Garbage):
            return _garbage_response(outcome, request_id)
        return web.json_response(self._completion(body, outcome), headers=_id_header(request_id))

    def _image_error(self, messages: list[JSONObject]) -> Status | None:
        if self.vision or not any(image_parts(message) for message in messages):
            return None
        message = "image input is not supported - hint: if this is unexpected, you may need to provide the mmproj"
        return Status(400, message=message)

    def _length_error(self, messages: list[JSONObject]) -> Status | None:
        if self.context_window is None:
            return None
        used = _word_count(messages)
        if used <= self.context_window:
            return None
        message = (
            f"This model's maximum context length is {self.context_window} tokens. However, your messages "
            f"resulted in {used} tokens. Please reduce the length of the messages."
        )
        return Status(400, message=message, code="context_length_exceeded")

    async def _stream_chunks(
        self, request: web.Request, chunks: Iterator[JSONObject], request_id: str
    ) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache", **_id_header(request_id)}
        )
        await response.prepare(request)
        for chunk in chunks:
            await response.write(f"data: {json.dumps(chunk)}\n\n".encode())
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response

    def _tool_chunks(self, body: JSONObject, outcome: ToolCalls, ids: list[str]) -> Iterator[JSONObject]:
        envelope = self._envelope(body, "chat.completion.chunk")
        yield {**envelope, "choices": [_delta({"role": "assistant", "content": None})]}
        for piece in _split(outcome.text, self.chunk_size):
            yield {**envelope, "choices": [_delta({"content": piece})]}
        for index, ((name, arguments), call_id) in enumerate(zip(outcome.calls, ids, strict=True)):
            first = {"index": index, "id": call_id, "type": "function", "function": {"name": name, "arguments": ""}}
            yield {**envelope, "choices": [_delta({"tool_calls": [first]})]}
            size = self.chunk_size or 8
            for start in range(0, len(arguments), size):
                part = {"index": index, "function": {"arguments": arguments[start : start + size]}}
                yield {**envelope, "choices": [_delta({"tool_calls": [part]})]}
        yield {**envelope, "choices": [_delta({}, "tool_calls")]}
        if self.report_usage and (body.get("stream_options") or {}).get("include_usage") is True:
            yield {**envelope, "choices": [], "usage": _usage(body, outcome.text)}

    def _tool_completion(self, body: JSONObject, outcome: ToolCalls, ids: list[str]) -> JSONObject:
        calls = [
            {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}
            for (name, arguments), call_id in zip(outcome.calls, ids, strict=True)
        ]
        message = {"role": "assistant", "content": outcome.text or None, "refusal": None, "tool_calls": calls}
        choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": "tool_calls"}
        return {**self._envelope(body, "chat.completion"), "choices": [choice], **self._usage(body, outcome.text)}

    async def _settle(self, behaviour: Behaviour | None, seq: int) -> Outcome | None:
        """Run the waiting part of a behaviour and return what to answer."""
        if isinstance(behaviour, Hang):
            await self._park(self._wait_released(seq))
            return behaviour.then
        if isinstance(behaviour, Delay):
            await self._park(asyncio.sleep(behaviour.seconds))
            return behaviour.then
        return behaviour

    async def _wait_released(self, seq: int) -> None:
        while self._released_upto < seq:
            await self._release_changed.wait()

    async def _park(self, waiting: Coroutine[Any, Any, None]) -> None:
        # Parked handlers are cancelled by close(); aiohttp would otherwise
        # wait shutdown_timeout for them.
        task = asyncio.current_task()
        assert task is not None
        if self._runner is None:
            # close() has already cancelled the parked set, so nobody would
            # cancel a handler that parks now.
            waiting.close()
            raise asyncio.CancelledError
        self._parked.add(task)
        try:
            await waiting
        finally:
            self._parked.discard(task)

    async def _cancel_parked(self) -> None:
        parked = set(self._parked)
        for task in parked:
            task.cancel()
        if parked:
            await asyncio.wait(parked, timeout=self._shutdown_timeout)

    async def _stream(
        self, request: web.Request, body: JSONObject, outcome: Reply | Garbage, request_id: str
    ) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache", **_id_header(request_id)}
        )
        await response.prepare(request)
        if isinstance(outcome, Garbage):
            await response.write(f"data: {outcome.body}\n\n".encode())
        else:
            for chunk in self._chunks(body, outcome):
                await response.write(f"data: {json.dumps(chunk)}\n\n".encode())
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response

    def _chunks(self, body: JSONObject, reply: Reply) -> Iterator[JSONObject]:
        envelope = self._envelope(body, "chat.completion.chunk")
        yield {**envelope, "choices": [_delta({"role": "assistant", "content": ""})]}
        for piece in _split(reply.text, self.chunk_size):
            yield {**envelope, "choices": [_delta({"content": piece})]}
        yield {**envelope, "choices": [_delta({}, reply.finish_reason)]}
        if self.report_usage and (body.get("stream_options") or {}).get("include_usage") is True:
            yield {**envelope, "choices": [], "usage": _usage(body, reply.text)}

    def _completion(self, body: JSONObject, reply: Reply) -> JSONObject:
        choice = {
            "index": 0,
            "message": {"role": "assistant", "content": reply.text, "refusal": None},
            "logprobs": None,
            "finish_reason": reply.finish_reason,
        }
        return {**self._envelope(body, "chat.completion"), "choices": [choice], **self._usage(body, reply.text)}

    def _usage(self, body: JSONObject, completion: str) -> JSONObject:
        return {"usage": _usage(body, completion)} if self.report_usage else {}

    def _envelope(self, body: JSONObject, kind: str) -> JSONObject:
        model = body.get("model")
        return {
            "id": f"chatcmpl-fake{next(self._ids)}",
            "object": kind,
            "created": int(time.time()),
            "model": model if isinstance(model, str) and model else self.model,
            "system_fingerprint": "fp_fake",
        }

    async def _models(self, request: web.Request) -> web.StreamResponse:
        model = {"id": self.model, "object": "model", "created": 0, "owned_by": "fake-openai"}
        return web.json_response({"object": "list", "data": [model]}, headers=_id_header(self._next_request_id()))

    async def _not_found(self, request: web.Request) -> web.StreamResponse:
        status = Status(404, message=f"Invalid URL ({request.method} {request.path})")
        return _error_response(status, self._next_request_id())

    def _next_request_id(self) -> str:
        return f"req_fake{next(self._ids)}"


# -- wire-format helpers ---------------------------------------------------


def _message_text(message: Mapping[str, Any]) -> str:
    """Text of a message whose content is a string or a list of parts."""
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = (part.get("text", "") for part in content if isinstance(part, dict) and part.get("type") == "text")
        return "".join(texts)
    return ""


def image_parts(message: Mapping[str, Any]) -> list[str]:
    """The ``image_url`` URLs of a message whose content is a list of parts."""
    content = message.get("content")
    if not isinstance(content, list):
        return []
    return [
        str((part.get("image_url") or {}).get("url", ""))
        for part in content
        if isinstance(part, dict) and part.get("type") == "image_url"
    ]


def _tool_rule_error(messages: list[JSONObject]) -> Status | None:
    """The 400 OpenAI answers for messages that break its tool-message rules, or None."""
    waiting: list[str] = []  # call IDs of the last assistant message not answered yet
    answerable: set[str] = set()
    for message in messages:
        role = message.get("role")
        if role == "tool":
            call_id = message.get("tool_call_id")
            if not isinstance(call_id, str):
                return Status(400, message="Missing required parameter: 'messages[].tool_call_id'.")
            if call_id not in answerable:
                return Status(
                    400,
                    message="Invalid parameter: messages with role 'tool' must be a response to a preceeding "
                    "message with 'tool_calls'.",
                )
            answerable.discard(call_id)
            if call_id in waiting:
                waiting.remove(call_id)
            continue
        if waiting:
            return _unanswered(waiting)
        calls = message.get("tool_calls") if role == "assistant" else None
        ids = [c.get("id") for c in calls if isinstance(c, dict)] if isinstance(calls, list) else []
        waiting = [i for i in ids if isinstance(i, str)]
        answerable = set(waiting)
    return _unanswered(waiting) if waiting else None


def _unanswered(ids: list[str]) -> Status:
    return Status(
        400,
        message="An assistant message with 'tool_calls' must be followed by tool messages responding to each "
        f"'tool_call_id'. The following tool_call_ids did not have response messages: {', '.join(ids)}",
    )


def _parameter_error(body: JSONObject) -> Status | None:
    model = body.get("model")
    if isinstance(model, str) and re.match(r"^(o\d|gpt-5)", model) and "max_tokens" in body:
        return Status(
            400,
            message="Unsupported parameter: 'max_tokens' is not supported with this model. "
            "Use 'max_completion_tokens' instead.",
            code="unsupported_parameter",
        )
    return None


def _word_count(messages: list[JSONObject]) -> int:
    words = 0
    for message in messages:
        if not isinstance(message, dict):
            continue
        words += len(_message_text(message).split())
        for call in message.get("tool_calls") or []:
            words += len(str((call.get("function") or {}).get("arguments", "")).split())
    return words


def _parse_object(raw: bytes) -> JSONObject | None:
    try:
        parsed = json.loads(raw)
    except ValueError:
        return None
    return parsed if isinstance(parsed, dict) else None


def _split(text: str, chunk_size: int | None) -> list[str]:
    if chunk_size is not None:
        return [text[i : i + chunk_size] for i in range(0, len(text), chunk_size)]
    # Whitespace-only text has no words but must still reach the client.
    return _WORD.findall(text) or ([text] if text else [])


def _delta(delta: JSONObject, finish_reason: str | None = None) -> JSONObject:
    return {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}


def _usage(body: JSONObject, completion: str) -> JSONObject:
    # Word counts stand in for tokens: deterministic and good enough for tests.
    messages = body.get("messages")
    prompt = sum(
        len(_message_text(m).split()) for m in (messages if isinstance(messages, list) else []) if isinstance(m, dict)
    )
    completion_tokens = len(completion.split())
    return {"prompt_tokens": prompt, "completion_tokens": completion_tokens, "total_tokens": prompt + completion_tokens}


def _id_header(request_id: str) -> dict[str, str]:
    return {"x-request-id": request_id}


def _error_response(status: Status, request_id: str) -> web.Response:
    error_type, code, message = _default_error(status.status)
    error = {
        "message": status.message if status.message is not None else message,
        "type": status.error_type if status.error_type is not None else error_type,
        "param": None,
        "code": status.code if status.code is not None else code,
    }
    headers = {**_id_header(request_id), **_retry_headers(status.retry_after), **status.headers}
    return web.json_response({"error": error}, status=status.status, headers=headers)


def _default_error(status: int) -> tuple[str, str | None, str]:
    """``(type, code, message)`` close to what OpenAI sends for ``status``."""
    if status == 401:
        return "invalid_request_error", "invalid_api_key", "Incorrect API key provided."
    if status == 429:
        return "requests", "rate_limit_exceeded", "Rate limit reached for requests."
    if status >= 500:
        return "server_error", None, "The server had an error while processing your request."
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = f"HTTP {status}"
    return "invalid_request_error", None, f"{phrase}."


def _retry_headers(retry_after: float | None) -> dict[str, str]:
    if retry_after is None:
        return {}
    # retry-after must be whole seconds per RFC 9110; the ms header keeps precision.
    return {"retry-after": str(math.ceil(retry_after)), "retry-after-ms": str(round(retry_after * 1000))}


def _garbage_response(garbage: Garbage, request_id: str) -> web.Response:
    return web.Response(
        body=garbage.body.encode(),
        status=200,
        headers={"Content-Type": garbage.content_type, **_id_header(request_id)},
    )
