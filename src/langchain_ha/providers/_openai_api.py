"""OpenAI-compatible routes: chat completions (plain, SSE, tool calls), embeddings, models."""

from __future__ import annotations

import time
import uuid
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from langchain_ha.providers._answers import answer_for, chunks, tool_call_for
from langchain_ha.providers._core import Sim, json_response, read_json, text_of, usage_words
from langchain_ha.providers._embeddings import embed, embed_tokens

_TYPES = {400: "invalid_request_error", 401: "invalid_request_error", 403: "permission_error",
          404: "not_found_error", 429: "rate_limit_exceeded"}


def errors(status: int, message: str) -> dict[str, Any]:
    """An error body shaped like OpenAI's."""
    kind = _TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    code = {401: "invalid_api_key", 429: "rate_limit_exceeded"}.get(status)
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


def _conversation(messages: list[Any]) -> list[tuple[str, str]]:
    conv = []
    for m in messages:
        if isinstance(m, dict):
            conv.append((str(m.get("role", "user")), text_of(m.get("content"))))
    return conv


def _sse(obj: object) -> bytes:
    return b"data: " + orjson.dumps(obj) + b"\n\n"


async def chat(sim: Sim, request: Request) -> Response:
    body = await sim.chat_request(request, errors)
    if isinstance(body, Response):
        return body
    conv = _conversation(body["messages"])
    if sim.too_long(conv):
        msg = (f"This model's maximum context length is {sim.max_context_chars} characters; "
               "your messages are longer (context_length_exceeded).")
        resp = errors(400, msg)
        resp["error"]["code"] = "context_length_exceeded"
        sim.stats.finish("chat", 400)
        return json_response(resp, 400)
    tools = [(str(t["function"].get("name", "")), t["function"].get("parameters") or {})
             for t in body.get("tools") or [] if isinstance(t, dict) and "function" in t]
    choice = body.get("tool_choice")
    forced: str | bool = choice == "required" or (
        isinstance(choice, dict) and str((choice.get("function") or {}).get("name", "")))
    call = tool_call_for(conv, tools, forced) if tools and choice != "none" else None
    text = "" if call else answer_for(conv)
    model = str(body.get("model") or "sim-chat")
    prompt_tokens, completion_tokens = usage_words(conv, text or "tool")
    usage = {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
             "total_tokens": prompt_tokens + completion_tokens}
    ident = f"chatcmpl-{uuid.uuid4().hex[:24]}"
    created = int(time.time())
    tool_calls: list[dict[str, Any]] | None = None
    if call:
        tool_calls = [{"id": f"call_{uuid.uuid4().hex[:20]}", "type": "function",
                       "function": {"name": call[0], "arguments": orjson.dumps(call[1]).decode()}}]
    finish = "tool_calls" if call else "stop"
    if body.get("stream"):
        base = {"id": ident, "object": "chat.completion.chunk", "created": created,
                "model": model, "system_fingerprint": sim.name}

        def chunk(delta: dict[str, Any], reason: str | None = None) -> bytes:
            choice = {"index": 0, "delta": delta, "finish_reason": reason}
            return _sse({**base, "choices": [choice]})

        events = [chunk({"role": "assistant", "content": ""})]
        if tool_calls:
            tc = tool_calls[0]
            assert call is not None
            events.append(chunk({"tool_calls": [{"index": 0, "id": tc["id"], "type": "function",
                                                 "function": {"name": call[0],
                                                              "arguments": ""}}]}))
            events.append(chunk({"tool_calls": [{"index": 0, "function": {
                "arguments": orjson.dumps(call[1]).decode()}}]}))
        else:
            events.extend(chunk({"content": piece}) for piece in chunks(text))
        events.append(chunk({}, finish))
        if (body.get("stream_options") or {}).get("include_usage"):
            events.append(_sse({**base, "choices": [], "usage": usage}))
        events.append(b"data: [DONE]\n\n")
        return sim.stream("chat", events)
    message: dict[str, Any] = {"role": "assistant", "content": text or None}
    if tool_calls:
        message["tool_calls"] = tool_calls
    return sim.ok("chat", {
        "id": ident, "object": "chat.completion", "created": created, "model": model,
        "system_fingerprint": sim.name,
        "choices": [{"index": 0, "message": message, "finish_reason": finish,
                     "logprobs": None}],
        "usage": usage,
    })


async def embeddings(sim: Sim, request: Request) -> Response:
    body = await read_json(request)
    early = await sim.gate(request, "embeddings", errors)
    if early is not None:
        return early
    raw = None if body is None else body.get("input")
    inputs: list[Any] = raw if isinstance(raw, list) else [raw]
    if raw is None or not inputs:
        return sim.fail("embeddings", 400, "'input' must be a string or a list", errors)
    if all(isinstance(x, int) for x in inputs):
        inputs = [inputs]
    dim = body.get("dimensions") if body else None
    dim = dim if isinstance(dim, int) and 1 <= dim <= 4096 else 256
    data = []
    for i, item in enumerate(inputs):
        if isinstance(item, str):
            vec = embed(item, dim)
        elif isinstance(item, list) and all(isinstance(t, int) for t in item):
            vec = embed_tokens(item, dim)
        else:
            return sim.fail("embeddings", 400, f"input[{i}] must be a string or token list",
                            errors)
        data.append({"object": "embedding", "index": i, "embedding": vec})
    tokens = sum(len(str(x).split()) for x in inputs)
    return sim.ok("embeddings", {"object": "list", "data": data,
                                 "model": str(body.get("model") if body else "sim-embed"),
                                 "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})


async def models(sim: Sim, request: Request) -> Response:
    early = await sim.gate(request, "models", errors, auth=False)
    if early is not None:
        return early
    names = ["sim-chat", "sim-embed", "sim-claude"]
    return sim.ok("models", {"object": "list", "data": [
        {"id": n, "object": "model", "created": 0, "owned_by": sim.name} for n in names]})
