"""The replica's own answering routes: invoke, batch and stream (SSE).

The OpenAI-compatible routes are in :mod:`langchain_ha.serve.gateway`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from fastapi import APIRouter, Request
from langchain_core.messages import BaseMessage
from langchain_core.runnables import Runnable
from starlette.responses import Response

from langchain_ha.resilience.continuation import RESTART_KEY, accept_restarts
from langchain_ha.serve.answer import (
    Served,
    answer_response,
    call_runnable,
    error_response,
    jsonable,
    request_scope,
    run_keyed,
)
from langchain_ha.serve.jsonbody import limited_json_route
from langchain_ha.serve.schemas import BatchRequest, InvokeRequest, check_input
from langchain_ha.serve.streaming import FirstChunkStreamingResponse, sse


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


def build_router(runnable: Runnable[Any, Any], served: Served) -> APIRouter:
    """The API routes around ``runnable``."""
    settings = served.settings
    api = APIRouter(route_class=limited_json_route(settings.max_depth, settings.max_nodes))

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

    async def _events(request: Request, value: Any, render: Any) -> AsyncIterator[bytes]:
        # This route's clients are told to discard what they have on a restart signal
        # (``event: restart``), so the router may restart an answer instead of failing.
        with request_scope(served, request) as degraded, accept_restarts():
            try:
                async for chunk in runnable.astream(value):
                    for item in render(chunk):
                        yield item
            except Exception as exc:
                yield sse("error", {"error": {"type": "stream_failed", "message":
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
                    return [sse("restart", restart)]
                return [sse("data", jsonable(chunk))]
            return [sse("end", served.envelope(request, degraded))]

        return FirstChunkStreamingResponse(_events(request, body.input, render),
                                           media_type="text/event-stream")

    return api
