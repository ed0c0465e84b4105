"""The answering routes: invoke, batch, stream (SSE) and OpenAI-compatible chat completions."""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from fastapi import APIRouter, Request
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import BaseMessage, convert_to_messages
from langchain_core.runnables import Runnable, RunnableBinding
from starlette.responses import Response, StreamingResponse
from starlette.types import Send

from langchain_ha._context import caller_scope, request_key_scope
from langchain_ha.resilience.continuation import RESTART_KEY, accept_restarts
from langchain_ha.resilience.deadline import deadline
from langchain_ha.resilience.degrade import degradation_scope
from langchain_ha.serve.answer import (
    Served,
    answer_response,
    call_runnable,
    error_response,
    jsonable,
    request_key,
    run_keyed,
)
from langchain_ha.serve.jsonbody import limited_json_route
from langchain_ha.serve.schemas import (
    BatchRequest,
    ChatRequest,
    InvokeRequest,
    check_chat,
    check_input,
    text_of,
)


def _is_chat_model(runnable: Runnable[Any, Any]) -> bool:
    while isinstance(runnable, RunnableBinding):
        runnable = runnable.bound
    return isinstance(runnable, BaseChatModel)


def answer_text(output: Any) -> str:
    """The text of an answer: an AIMessage's content, a str, or a dict's ``answer``."""
    if isinstance(output, BaseMessage):
        return output.content if isinstance(output.content, str) else json.dumps(output.content)
    if isinstance(output, str):
        return output
    if isinstance(output, dict) and isinstance(output.get("answer"), str):
        return str(output["answer"])
    return json.dumps(jsonable(output))


def restart_of(chunk: Any) -> dict[str, Any] | None:
    """The restart signal's details if ``chunk`` is one (a message chunk with
    ``response_metadata[RESTART_KEY]``, or an app's ``{RESTART_KEY: ...}``), else None."""
    if isinstance(chunk, BaseMessage):
        found = chunk.response_metadata.get(RESTART_KEY)
    elif isinstance(chunk, dict) and len(chunk) == 1:
        found = chunk.get(RESTART_KEY)
    else:
        return None
    return dict(found) if isinstance(found, dict) else None


def _sse(event: str, data: Any) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data)}\n\n".encode()


class FirstChunkStreamingResponse(StreamingResponse):
    """A stream whose headers go out with its first chunk, not before.

    Until then the replica has sent nothing, so if it dies while working on the answer the
    load balancer can still retry the request on another replica (it cannot once bytes are
    on the wire).
    """

    async def stream_response(self, send: Send) -> None:
        chunks = self.body_iterator.__aiter__()
        first: Any = None
        with contextlib.suppress(StopAsyncIteration):
            first = await chunks.__anext__()
        await send({"type": "http.response.start", "status": self.status_code,
                    "headers": self.raw_headers})
        if first is not None:
            await send({"type": "http.response.body", "body": _bytes(first, self.charset),
                        "more_body": True})
            async for chunk in chunks:
                await send({"type": "http.response.body", "body": _bytes(chunk, self.charset),
                            "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})


def _bytes(chunk: Any, charset: str) -> bytes:
    return bytes(chunk) if isinstance(chunk, bytes | memoryview) else str(chunk).encode(charset)


def build_router(runnable: Runnable[Any, Any], served: Served) -> APIRouter:
    """The API routes around ``runnable``."""
    settings = served.settings
    api = APIRouter(route_class=limited_json_route(settings.max_depth, settings.max_nodes))
    chat_model = _is_chat_model(runnable)

    async def answered(request: Request, call: Callable[[], Awaitable[Any]],
                       shape: Callable[[Any], dict[str, Any]]) -> Response:
        """Run ``call`` once per Idempotency-Key and wrap its output in the envelope."""

        async def produce() -> Response:
            result = await call_runnable(served, request, call)
            if isinstance(result, Response):
                return result
            output, degraded = result
            return answer_response(served, request, shape(output), degraded)

        return await run_keyed(served, request, produce)

    @api.post("/v1/invoke", summary="Run the application once")
    async def invoke(body: InvokeRequest, request: Request) -> Response:
        problem = check_input(body.input, settings, "input")
        if problem:
            return error_response(422, "limit_exceeded", problem)
        return await answered(request, lambda: runnable.ainvoke(body.input),
                              lambda out: {"output": jsonable(out)})

    @api.post("/v1/batch", summary="Run the application on several inputs")
    async def batch(body: BatchRequest, request: Request) -> Response:
        if len(body.inputs) > settings.max_batch:
            return error_response(422, "limit_exceeded",
                                  f"inputs: at most {settings.max_batch} items (max_batch)")
        for i, item in enumerate(body.inputs):
            problem = check_input(item, settings, f"inputs[{i}]")
            if problem:
                return error_response(422, "limit_exceeded", problem)
        return await answered(request, lambda: runnable.abatch(body.inputs),
                              lambda out: {"outputs": jsonable(out)})

    async def _events(request: Request, value: Any, render: Any, *, restarts: bool = False
                      ) -> AsyncIterator[bytes]:
        # ``restarts``: this route's clients are told to discard what they have on a restart
        # signal (``event: restart``), so the router may restart an answer instead of failing.
        with degradation_scope() as degraded, request_key_scope(request_key(request)), \
                caller_scope(request.scope["state"].get("caller")), \
                deadline(settings.request_timeout_s), \
                (accept_restarts() if restarts else contextlib.nullcontext()):
            try:
                async for chunk in runnable.astream(value):
                    for item in render(chunk):
                        yield item
            except Exception as exc:
                yield _sse("error", {"error": {"type": "stream_failed", "message":
                                               type(exc).__name__}})
                return
        found = sorted(degraded)
        served.note_degraded(request, found)
        for item in render(None, found):
            yield item

    @api.post("/v1/stream", summary="Stream the application's output (server-sent events)")
    async def stream(body: InvokeRequest, request: Request) -> Response:
        problem = check_input(body.input, settings, "input")
        if problem:
            return error_response(422, "limit_exceeded", problem)

        def render(chunk: Any, degraded: list[str] | None = None) -> list[bytes]:
            if degraded is None:
                restart = restart_of(chunk)
                if restart is not None:
                    return [_sse("restart", restart)]
                return [_sse("data", jsonable(chunk))]
            return [_sse("end", served.envelope(request, degraded))]

        return FirstChunkStreamingResponse(_events(request, body.input, render, restarts=True),
                                           media_type="text/event-stream")

    @api.post("/v1/chat/completions", summary="OpenAI-compatible chat completions")
    async def chat(body: ChatRequest, request: Request) -> Response:
        problem = check_chat(body, settings)
        if problem:
            return error_response(422, "limit_exceeded", problem)
        turns = [{"role": "system" if m.role == "developer" else m.role,
                  "content": text_of(m.content)} for m in body.messages]
        if chat_model:
            value: Any = convert_to_messages(turns)
        else:
            question = next(t["content"] for t in reversed(turns) if t["role"] == "user")
            session = body.user or request.headers.get("x-session-id")
            value = {"question": question, "session_id": session, "messages": turns}
        ident = f"chatcmpl-{uuid.uuid4().hex[:24]}"
        created = int(time.time())
        if body.stream:
            events = _chat_events(request, value, body.model, ident, created)
            return FirstChunkStreamingResponse(events, media_type="text/event-stream")
        return await answered(request, lambda: runnable.ainvoke(value), lambda out: {
            "id": ident, "object": "chat.completion", "created": created, "model": body.model,
            "choices": [{"index": 0, "finish_reason": "stop", "message": {
                "role": "assistant", "content": answer_text(out)}}],
        })

    async def _chat_events(request: Request, value: Any, model: str, ident: str,
                           created: int) -> AsyncIterator[bytes]:
        base = {"id": ident, "object": "chat.completion.chunk", "created": created,
                "model": model}

        def render(chunk: Any, degraded: list[str] | None = None) -> list[bytes]:
            if degraded is None:
                text = answer_text(chunk) if not isinstance(chunk, dict) else (
                    str(chunk.get("answer", "")) if "answer" in chunk else "")
                if isinstance(chunk, BaseMessage | str) or text:
                    delta = {"content": text}
                    return [b"data: " + json.dumps({**base, "choices": [
                        {"index": 0, "delta": delta, "finish_reason": None}]}).encode() + b"\n\n"]
                return []
            final = {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
                     **served.envelope(request, degraded)}
            return [b"data: " + json.dumps(final).encode() + b"\n\n", b"data: [DONE]\n\n"]

        async for item in _events(request, value, render):
            yield item

    return api
