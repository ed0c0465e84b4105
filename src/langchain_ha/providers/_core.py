"""The simulator's shared request path: stats, auth, latency, faults, streaming."""

from __future__ import annotations

import asyncio
import os
import random
import zlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from langchain_ha.providers._faults import NO_FAULTS, Faults, Stats

ErrorFormat = Callable[[int, str], dict[str, Any]]
_HANG_POLL_S = 0.1
_HANG_MAX_S = 600.0


class StreamCut(Exception):
    """Raised inside a streaming body to drop the connection mid-stream."""


def json_response(
    body: object, status: int = 200, headers: dict[str, str] | None = None
) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json",
                    headers=headers)


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
        self.faults: Faults = NO_FAULTS
        self.stats = Stats()
        self.rng = random.Random()

    def fault_for(self, route: str) -> Faults:
        return self.faults if self.faults.applies(route) else NO_FAULTS

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

    def key_ok(self, request: Request) -> bool:
        auth = request.headers.get("authorization", "")
        key = auth[7:].strip() if auth.lower().startswith("bearer ") else ""
        key = key or request.headers.get("x-api-key", "").strip()
        if not key or key.startswith("invalid"):
            return False
        return not self.keys or key in self.keys

    async def gate(self, request: Request, route: str, errors: ErrorFormat,
                   *, auth: bool = True, jitter_key: bytes | None = None) -> Response | None:
        """Everything before the answer; returns an error response, or None to answer."""
        self.stats.arrive(route)
        fault = self.fault_for(route)
        if auth and not self.key_ok(request):
            return self.fail(route, 401, "invalid or missing API key", errors)
        delay = self.delay_ms(jitter_key) + fault.latency_ms
        if delay:
            await asyncio.sleep(delay / 1000.0)
        if fault.hang:
            await _hang(request)
            self.stats.finish(route, "hang")
            return Response(status_code=504)
        status = fault.error_status(self.rng)
        if status is not None:
            headers = {}
            if fault.retry_after_s is not None:
                headers["retry-after"] = f"{fault.retry_after_s:g}"
            return self.fail(route, status, f"simulated failure ({status})", errors, headers)
        return None

    async def chat_request(
        self, request: Request, errors: ErrorFormat
    ) -> dict[str, Any] | Response:
        """A chat request's JSON body after the gate; an error response if it has no messages."""
        body = await read_json(request)
        messages = body.get("messages") if body is not None else None
        last = messages[-1] if isinstance(messages, list) and messages else None
        key = text_of(last.get("content")).encode() if isinstance(last, dict) else None
        early = await self.gate(request, "chat", errors, jitter_key=key)
        if early is not None:
            return early
        if body is None or not isinstance(body.get("messages"), list) or not body["messages"]:
            return self.fail("chat", 400, "messages: must be a non-empty list", errors)
        return body

    def too_long(self, conversation: list[tuple[str, str]]) -> bool:
        """True if the prompt exceeds the simulated context window."""
        return sum(len(t) for _, t in conversation) > self.max_context_chars

    def fail(self, route: str, status: int, message: str, errors: ErrorFormat,
             headers: dict[str, str] | None = None) -> Response:
        self.stats.finish(route, status)
        return json_response(errors(status, message), status, headers)

    def ok(self, route: str, body: object) -> Response:
        self.stats.finish(route, 200)
        return json_response(body, headers={"x-lcha-provider": self.name})

    def stream(self, route: str, events: list[bytes]) -> StreamingResponse:
        """Stream ``events``, honouring the current fault's chunk delay and disconnect."""
        fault = self.fault_for(route)
        self.stats.finish(route, 200)

        async def body() -> AsyncIterator[bytes]:
            for i, event in enumerate(events):
                if fault.disconnect_after_chunks is not None and i >= fault.disconnect_after_chunks:
                    raise StreamCut(f"simulated disconnect after {i} chunks")
                if fault.slow_stream_ms and i:
                    await asyncio.sleep(fault.slow_stream_ms / 1000.0)
                yield event

        return StreamingResponse(body(), media_type="text/event-stream",
                                 headers={"x-lcha-provider": self.name,
                                          "cache-control": "no-cache"})


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
    """Text of an OpenAI/Anthropic message content (a string or a list of parts)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
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


def usage_words(conversation: list[tuple[str, str]], answer: str) -> tuple[int, int]:
    prompt = sum(len(t.split()) for _, t in conversation)
    return max(1, prompt), max(1, len(answer.split()))
