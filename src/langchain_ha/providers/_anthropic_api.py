"""Anthropic-compatible route: ``POST /v1/messages`` (plain, streaming events, tool use)."""

from __future__ import annotations

import uuid
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from langchain_ha.providers._answers import answer_for, chunks, tool_call_for
from langchain_ha.providers._core import Sim, json_response, text_of, usage_words

_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
          404: "not_found_error", 413: "request_too_large", 429: "rate_limit_error",
          529: "overloaded_error"}


def errors(status: int, message: str) -> dict[str, Any]:
    """An error body shaped like Anthropic's."""
    kind = _TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")
    return {"type": "error", "error": {"type": kind, "message": message}}


def _conversation(body: dict[str, Any]) -> list[tuple[str, str]]:
    conv: list[tuple[str, str]] = []
    system = text_of(body.get("system"))
    if system:
        conv.append(("system", system))
    for m in body.get("messages") or []:
        if not isinstance(m, dict):
            continue
        content = m.get("content")
        if isinstance(content, list) and any(
            isinstance(p, dict) and p.get("type") == "tool_result" for p in content
        ):
            conv.append(("tool", text_of(content)))
        else:
            conv.append((str(m.get("role", "user")), text_of(content)))
    return conv


def _event(kind: str, data: dict[str, Any]) -> bytes:
    return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps({"type": kind, **data}) + b"\n\n"


async def messages(sim: Sim, request: Request) -> Response:
    body = await sim.chat_request(request, errors)
    if isinstance(body, Response):
        return body
    conv = _conversation(body)
    if sim.too_long(conv):
        sim.stats.finish("chat", 400)
        return json_response(errors(400, f"prompt is too long: more than "
                                         f"{sim.max_context_chars} characters"), 400)
    tools = [(str(t.get("name", "")), t.get("input_schema") or {})
             for t in body.get("tools") or [] if isinstance(t, dict)]
    choice = body.get("tool_choice") or {}
    forced: str | bool = choice.get("type") == "any" or (
        choice.get("type") == "tool" and str(choice.get("name", "")))
    call = tool_call_for(conv, tools, forced) if tools and choice.get("type") != "none" else None
    text = "" if call else answer_for(conv)
    model = str(body.get("model") or "sim-claude")
    in_tokens, out_tokens = usage_words(conv, text or "tool")
    ident = f"msg_{uuid.uuid4().hex[:24]}"
    tool_block = None
    if call:
        tool_block = {"type": "tool_use", "id": f"toolu_{uuid.uuid4().hex[:20]}",
                      "name": call[0], "input": call[1]}
    stop_reason = "tool_use" if call else "end_turn"
    if body.get("stream"):
        start: dict[str, Any] = {
            "id": ident, "type": "message", "role": "assistant", "model": model, "content": [],
            "stop_reason": None, "stop_sequence": None,
            "usage": {"input_tokens": in_tokens, "output_tokens": 1},
        }
        events = [_event("message_start", {"message": start})]
        if tool_block and call:
            events.append(_event("content_block_start", {
                "index": 0, "content_block": {**tool_block, "input": {}}}))
            events.append(_event("content_block_delta", {"index": 0, "delta": {
                "type": "input_json_delta", "partial_json": orjson.dumps(call[1]).decode()}}))
        else:
            events.append(_event("content_block_start", {
                "index": 0, "content_block": {"type": "text", "text": ""}}))
            events.extend(_event("content_block_delta", {
                "index": 0, "delta": {"type": "text_delta", "text": piece}})
                for piece in chunks(text))
        events.append(_event("content_block_stop", {"index": 0}))
        events.append(_event("message_delta", {
            "delta": {"stop_reason": stop_reason, "stop_sequence": None},
            "usage": {"output_tokens": out_tokens}}))
        events.append(_event("message_stop", {}))
        return sim.stream("chat", events)
    content = [tool_block] if tool_block else [{"type": "text", "text": text}]
    return sim.ok("chat", {
        "id": ident, "type": "message", "role": "assistant", "model": model,
        "content": content, "stop_reason": stop_reason, "stop_sequence": None,
        "usage": {"input_tokens": in_tokens, "output_tokens": out_tokens},
    })
