"""The simulator's shared request path: stats, auth, latency, faults, the chat pipeline.

Each API module subclasses :class:`Api` (how that provider spells keys, errors and answers);
:meth:`Sim.chat` runs one chat request the same way for all of them: gate (connection reset,
key, latency, hang, injected error), parse, the request checks a provider makes (prefill,
context window, prompt filter), the model's :func:`~langchain_ha.providers._reply.reply`, then
a plain JSON answer or a stream through :mod:`langchain_ha.providers._stream`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import socket
import struct
import zlib
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from langchain_ha.providers._faults import Faults, FaultSetting, Stats
from langchain_ha.providers._reply import Ask, Reply, context_overflow, reply
from langchain_ha.providers._stream import Event, stream_response

_HANG_POLL_S = 0.1
_HANG_MAX_S = 600.0


class ApiError(Exception):
    """A response an API answers a request with instead of an answer (status, body, headers)."""

    def __init__(self, status: int, body: object, headers: dict[str, str] | None = None) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status
        self.body = body
        self.headers = headers or {}


class Api:
    """How one provider's API spells keys, errors and answers (each API module subclasses it).

    The defaults serve routes without a provider shape (the tool API); chat APIs override the
    chat methods.
    """

    def key(self, request: Request) -> str:
        """The API key ``request`` carries ('' if none)."""
        auth = request.headers.get("authorization", "")
        return auth[7:].strip() if auth.lower().startswith("bearer ") else ""

    def headers(self) -> dict[str, str]:
        """Headers of every response (request ids)."""
        return {}

    def failure(self, status: int, body: object, headers: dict[str, str] | None = None,
                ) -> ApiError:
        """An :class:`ApiError` with this API's per-response headers."""
        return ApiError(status, body, {**self.headers(), **(headers or {})})

    def error(self, status: int, message: str | None = None) -> ApiError:
        """The API's error for ``status`` (``message`` or the provider's usual one)."""
        return self.failure(status, {"error": {"message": message or f"HTTP {status}",
                                               "status": status}})

    def invalid(self, message: str, param: str | None = None, code: str | None = None,
                status: int = 400) -> ApiError:
        """A bad request's error; ``param`` names the field (where the API's shape has a place
        for it, else the message does)."""
        return self.error(status, message)

    def auth_error(self, key: str) -> ApiError:
        """The answer to a missing (``key`` empty) or invalid key."""
        return self.error(401, "invalid or missing API key")

    def retry_headers(self, seconds: float) -> dict[str, str]:
        """Headers telling a client when to retry."""
        return {"retry-after": f"{seconds:g}"}

    def fault_error(self, status: int, retry_after_s: float | None) -> ApiError:
        """The error an injected failure answers with (retry advice when the fault gives it)."""
        err = self.error(status)
        if retry_after_s is not None:
            err.headers.update(self.retry_headers(retry_after_s))
        return err

    # -- chat --------------------------------------------------------------------------------

    def parse(self, body: dict[str, Any], request: Request) -> Ask:
        """The request as an :class:`Ask`; raises :class:`ApiError` for a bad one."""
        raise self.error(404, "no chat API here")

    def context_overflow(self, tokens: int, limit: int) -> ApiError:
        """The error for a prompt of ``tokens`` over a window of ``limit``."""
        return self.error(400, f"prompt is too long: {tokens} tokens > {limit} maximum")

    def prompt_filtered(self) -> ApiError | None:
        """The error for a prompt the content filter rejects; None if the API answers 200
        with a blocked reply instead (Gemini)."""
        return self.error(400, "prompt rejected by the content filter")

    def prefill_rejected(self) -> ApiError:
        """The error for a conversation ending with an assistant message, where refused."""
        return self.error(400, "the conversation must end with a user message")

    def render(self, answer: Reply, ask: Ask) -> object:
        """The plain (non-streaming) answer's JSON body."""
        raise NotImplementedError

    def events(self, answer: Reply, ask: Ask) -> list[Event]:
        """The streamed answer's events."""
        raise NotImplementedError

    def stream_media_type(self, ask: Ask) -> str:
        return "text/event-stream"


def json_response(
    body: object, status: int = 200, headers: dict[str, str] | None = None
) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json",
                    headers=headers)


class ConnectionReset(Response):
    """Not a response: the TCP connection is aborted (RST) before any byte is sent."""

    def __init__(self) -> None:
        super().__init__(status_code=502)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if abort_connection(receive):
            await asyncio.sleep(0.05)  # let the server see the connection lost before we return
            return
        await json_response({"error": {"message": "reset_before_headers: this server does not "
                                                  "let the simulator reach its connection"}},
                            502)(scope, receive, send)


def abort_connection(receive: object) -> bool:
    """Abort the TCP connection a request arrived on, with an RST; False if unreachable.

    ASGI hides the connection.  Under uvicorn, ``receive`` is a bound method of its
    per-request cycle object, whose ``transport`` attribute is the asyncio transport; a
    zero-timeout SO_LINGER makes the kernel answer the close with an RST instead of a FIN.
    Under another server (or a future uvicorn) there is no such attribute: return False and
    let the caller fall back to an ordinary error response.
    """
    transport: Any = getattr(getattr(receive, "__self__", None), "transport", None)
    # duck-typed: uvloop's TCPTransport does not derive from asyncio.BaseTransport
    if not callable(getattr(transport, "abort", None)) or not callable(
            getattr(transport, "get_extra_info", None)):
        return False
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError, AttributeError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()
    return True


class Sim:
    """One simulated provider's state: identity, latency model, faults and counters."""

    def __init__(self, name: str, latency_ms: float = 0.0, jitter_ms: float = 0.0,
                 max_context_chars: int | None = None) -> None:
        self.name = name
        self.latency_ms = latency_ms
        self.jitter_ms = jitter_ms
        self.max_context_chars = max_context_chars or int(
            os.environ.get("LCHA_SIM_MAX_CONTEXT_CHARS", "100000"))
        keys = os.environ.get("LCHA_SIM_KEYS", "")
        self.keys = {k.strip() for k in keys.split(",") if k.strip()}
        self.faults = FaultSetting()
        self.stats = Stats()
        self.rng = random.Random()

    def delay_ms(self, jitter_key: bytes | None = None) -> float:
        """Base latency plus jitter: drawn, or with ``jitter_key`` derived from it.

        Derived jitter makes the same question always wait as long, so contenders in a
        benchmark get paired samples (common random numbers) instead of independent noise.
        The key is the last message's text, not our name, so a primary and a secondary pair
        too.
        """
        if not self.jitter_ms:
            return self.latency_ms
        if jitter_key is None:
            return self.latency_ms + self.rng.uniform(0.0, self.jitter_ms)
        return self.latency_ms + zlib.crc32(jitter_key) / 0xFFFFFFFF * self.jitter_ms

    def key_ok(self, key: str) -> bool:
        """A key is valid unless empty, ``invalid…``, or outside ``LCHA_SIM_KEYS`` (if set)."""
        if not key or key.startswith("invalid"):
            return False
        return not self.keys or key in self.keys

    async def gate(self, request: Request, route: str, api: Api, *, auth: bool = True,
                   jitter_key: bytes | None = None, fault: Faults | None = None,
                   ) -> Response | None:
        """Everything before the answer; returns an error response, or None to answer.

        ``fault``: the faults this request meets, if the caller read them already (one
        request sees one state of a flapping fault).
        """
        self.stats.arrive(route)
        fault = fault or self.faults.for_route(route)
        if fault.reset_before_headers:
            self.stats.finish(route, "reset")
            return ConnectionReset()
        if auth:
            key = api.key(request)
            if not self.key_ok(key):
                return self.fail(route, api.auth_error(key))
        delay = self.delay_ms(jitter_key) + fault.latency_ms
        if delay:
            await asyncio.sleep(delay / 1000.0)
        if fault.hang:
            await _hang(request)
            self.stats.finish(route, "hang")
            return Response(status_code=504)
        status = fault.error_status(self.rng)
        if status is not None:
            return self.fail(route, api.fault_error(status, fault.retry_after_s))
        return None

    async def chat(self, request: Request, api: Api) -> Response:
        """One chat request through ``api``: gate, checks, the model's reply, plain or stream."""
        body = await read_json(request)
        messages = (body.get("messages") or body.get("contents")) if body is not None else None
        last = messages[-1] if isinstance(messages, list) and messages else None
        fault = self.faults.for_route("chat")
        early = await self.gate(request, "chat", api, jitter_key=_jitter_key(last), fault=fault)
        if early is not None:
            return early
        try:
            if body is None:
                raise api.error(400, "the request body must be a JSON object")
            ask = api.parse(body, request)
            if fault.reject_prefill and ask.ends_with_assistant:
                raise api.prefill_rejected()
            over = context_overflow(ask.conversation,
                                    fault.context_window_chars or self.max_context_chars)
            if over is not None:
                raise api.context_overflow(*over)
            if fault.content_filter == "prompt":
                blocked = api.prompt_filtered()
                if blocked is not None:
                    raise blocked
        except ApiError as err:
            return self.fail("chat", err)
        answer = reply(ask, fault)
        if ask.stream:
            self.stats.finish("chat", 200)
            return stream_response(api.events(answer, ask), fault,
                                   {**api.headers(), "x-lcha-provider": self.name},
                                   api.stream_media_type(ask))
        if fault.first_token_ms:
            await asyncio.sleep(fault.first_token_ms / 1000.0)
        return self.ok("chat", api.render(answer, ask), api.headers())

    def fail(self, route: str, err: ApiError) -> Response:
        self.stats.finish(route, err.status)
        return json_response(err.body, err.status, err.headers)

    def ok(self, route: str, body: object, headers: dict[str, str] | None = None) -> Response:
        self.stats.finish(route, 200)
        return json_response(body, headers={**(headers or {}), "x-lcha-provider": self.name})


def _jitter_key(last: object) -> bytes | None:
    if not isinstance(last, dict):
        return None
    if "parts" in last:  # Gemini
        return text_of(last.get("parts")).encode()
    return text_of(last.get("content")).encode()


async def _hang(request: Request) -> None:
    """Never answer: hold the request until the client goes away (or a long bound)."""
    waited = 0.0
    while waited < _HANG_MAX_S:
        if await request.is_disconnected():
            return
        await asyncio.sleep(_HANG_POLL_S)
        waited += _HANG_POLL_S


async def read_json(request: Request) -> dict[str, Any] | None:
    try:
        body = orjson.loads(await request.body())
    except orjson.JSONDecodeError:
        return None
    return body if isinstance(body, dict) else None


def text_of(content: Any) -> str:
    """Text of an OpenAI/Anthropic/Gemini message content (a string or a list of parts)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        return ""
    parts = []
    for part in content:
        if isinstance(part, dict):
            if part.get("type") in ("text", "input_text", None) and "text" in part:
                parts.append(str(part["text"]))
            elif part.get("type") == "tool_result":
                parts.append(text_of(part.get("content")))
        elif isinstance(part, str):
            parts.append(part)
    return "".join(parts)


def positive_int(body: dict[str, Any], name: str, api: Api, limit: int = 1_000_000,
                 field: str | None = None) -> int | None:
    """``body[name]`` as an int in 1..limit, None if absent; a 400 naming it otherwise."""
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= limit:
        raise api.invalid(f"{field or name}: must be an integer from 1 to {limit}, got "
                          f"{value!r}", param=field or name)
    return value
