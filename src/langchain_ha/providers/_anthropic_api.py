"""Anthropic-compatible route: ``POST /v1/messages`` (plain, streaming events, tool use).

Shapes follow the ``anthropic`` SDK's types: ``usage`` in the message and in
``message_start``/``message_delta``; ``tool_use`` blocks streamed as ``content_block_start``
plus several ``input_json_delta`` pieces (in auto mode a short text block comes first, as
Claude writes one); ``stop_reason`` end_turn / tool_use / max_tokens / stop_sequence / refusal.
A conversation ending with an assistant message is a prefill: the answer continues it, and
the response holds only the continuation.  Errors are ``{"type": "error", "error": {type,
message}, "request_id"}`` with a ``request-id`` header.
"""

from __future__ import annotations

import secrets
import string
from typing import Any

import orjson
from starlette.requests import Request

from langchain_ha.providers._answers import ToolSpec, argument_pieces, chunks
from langchain_ha.providers._core import Api, ApiError, positive_int, text_of
from langchain_ha.providers._reply import Ask, Finish, Reply
from langchain_ha.providers._stream import Event

_ERRORS: dict[int, tuple[str, str]] = {
    400: ("invalid_request_error", "Invalid request (simulated)."),
    401: ("authentication_error", "invalid x-api-key"),
    403: ("permission_error", "Your API key does not have permission to use the specified "
                              "resource."),
    404: ("not_found_error", "The requested resource could not be found."),
    413: ("request_too_large", "Request exceeds the maximum allowed number of bytes."),
    429: ("rate_limit_error", "Number of request tokens has exceeded your per-minute rate "
                              "limit (https://docs.anthropic.com/en/api/rate-limits); see the "
                              "response headers for current usage. Please reduce the prompt "
                              "length or the maximum tokens requested, or try again later."),
    500: ("api_error", "Internal server error"),
    529: ("overloaded_error", "Overloaded"),
}
_STOP: dict[Finish, str] = {"stop": "end_turn", "stop_sequence": "stop_sequence",
                            "length": "max_tokens", "tool_calls": "tool_use",
                            "refusal": "refusal", "content_filter": "refusal",
                            "blocked": "refusal"}
_ALPHABET = string.ascii_letters + string.digits


def _ident(prefix: str) -> str:
    return prefix + "01" + "".join(secrets.choice(_ALPHABET) for _ in range(22))


def _event(kind: str, data: dict[str, Any], *, content: bool = False,
           terminator: bool = False) -> Event:
    return Event(b"event: " + kind.encode() + b"\ndata: " + orjson.dumps({"type": kind, **data})
                 + b"\n\n", content=content, terminator=terminator)


class AnthropicApi(Api):
    """Anthropic's Messages API."""

    def key(self, request: Request) -> str:
        key = request.headers.get("x-api-key", "").strip()
        return key or super().key(request)

    def failure(self, status: int, body: object, headers: dict[str, str] | None = None,
                ) -> ApiError:
        request_id = _ident("req_")
        if isinstance(body, dict):
            body = {**body, "request_id": request_id}
        return ApiError(status, body, {"request-id": request_id, **(headers or {})})

    def headers(self) -> dict[str, str]:
        return {"request-id": _ident("req_")}

    def error(self, status: int, message: str | None = None) -> ApiError:
        kind, default = _ERRORS.get(
            status, ("api_error" if status >= 500 else "invalid_request_error",
                     f"Simulated failure ({status})."))
        return self.failure(status, {"type": "error",
                                     "error": {"type": kind, "message": message or default}})

    def auth_error(self, key: str) -> ApiError:
        return self.error(401, "invalid x-api-key" if key else "x-api-key header is required")

    def retry_headers(self, seconds: float) -> dict[str, str]:
        return {"retry-after": f"{seconds:g}", "anthropic-ratelimit-requests-limit": "50",
                "anthropic-ratelimit-requests-remaining": "0"}

    def context_overflow(self, tokens: int, limit: int) -> ApiError:
        return self.error(400, f"prompt is too long: {tokens} tokens > {limit} maximum")

    def prompt_filtered(self) -> ApiError:
        return self.error(400, "Input blocked by content filtering policy")

    def prefill_rejected(self) -> ApiError:
        return self.error(400, "This model does not support assistant message prefill. The "
                               "conversation must end with a user message.")

    # -- parsing -------------------------------------------------------------------------------

    def parse(self, body: dict[str, Any], request: Request) -> Ask:
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise self.error(400, "model: Field required")
        if body.get("max_tokens") is None:
            raise self.error(400, "max_tokens: Field required")
        max_tokens = positive_int(body, "max_tokens", self, 1_000_000)
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise self.error(400, "messages: at least one message is required")
        conversation: list[tuple[str, str]] = []
        system = text_of(body.get("system"))
        if system:
            conversation.append(("system", system))
        for i, m in enumerate(messages):
            role = m.get("role") if isinstance(m, dict) else None
            if role not in ("user", "assistant"):
                raise self.error(400, f'messages.{i}.role: Unexpected role "{role}". The '
                                      "Messages API accepts a top-level `system` parameter, "
                                      'not "system" as an input message role.'
                                 if role == "system" else
                                 f"messages.{i}.role: Input should be 'user' or 'assistant'")
            assert isinstance(m, dict)
            conversation.extend(_turns(str(role), m.get("content")))
        last = messages[-1]
        if last.get("role") == "assistant" and _final_text(last.get("content")) != _final_text(
                last.get("content")).rstrip():
            raise self.error(400, "messages: final assistant content cannot end with trailing "
                                  "whitespace")
        tools: list[ToolSpec] = []
        for i, t in enumerate(body.get("tools") or []):
            name = t.get("name") if isinstance(t, dict) else None
            if not isinstance(name, str) or not name:
                raise self.error(400, f"tools.{i}.name: Field required")
            assert isinstance(t, dict)
            if "input_schema" in t or "type" not in t or t.get("type") == "custom":
                tools.append((name, t.get("input_schema") or {"type": "object"}))
        choice = body.get("tool_choice") or {"type": "auto"}
        kind = choice.get("type") if isinstance(choice, dict) else None
        if kind not in ("auto", "any", "tool", "none"):
            raise self.error(400, "tool_choice.type: Input should be 'auto', 'any', 'tool' or "
                                  "'none'")
        assert isinstance(choice, dict)
        forced: str | bool | None = {"auto": False, "any": True, "none": None}.get(kind, False)
        if kind == "tool":
            forced = str(choice.get("name") or "")
            if forced not in {t[0] for t in tools}:
                raise self.error(400, f"tool_choice.name: tool '{forced}' is not in tools")
        stops = body.get("stop_sequences") or []
        if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
            raise self.error(400, "stop_sequences: must be a list of strings")
        return Ask(conversation=conversation, model=model, stream=body.get("stream") is True,
                   tools=tools, tool_choice=forced,
                   parallel=choice.get("disable_parallel_tool_use") is not True,
                   max_tokens=max_tokens, stop=stops)

    # -- answers -------------------------------------------------------------------------------

    def _blocks(self, answer: Reply, ask: Ask) -> list[dict[str, Any]]:
        blocks: list[dict[str, Any]] = []
        if answer.calls:
            if ask.tool_choice is False:  # in auto mode Claude says what it is about to do
                many = len(answer.calls) > 1
                blocks.append({"type": "text", "text": "I'll look up those orders for you."
                               if many else "I'll look up that order for you."})
            blocks.extend({"type": "tool_use", "id": _ident("toolu_"), "name": name,
                           "input": args} for name, args in answer.calls)
        elif answer.text:
            blocks.append({"type": "text", "text": answer.text})
        return blocks

    def _stop(self, answer: Reply) -> dict[str, Any]:
        stop: dict[str, Any] = {"stop_reason": _STOP[answer.finish],
                                "stop_sequence": answer.stop_sequence}
        if stop["stop_reason"] == "refusal":
            stop["stop_details"] = {"type": "refusal", "category": None, "explanation": None}
        return stop

    def _usage(self, answer: Reply) -> dict[str, Any]:
        return {"input_tokens": answer.prompt_tokens, "output_tokens": answer.completion_tokens,
                "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0,
                "service_tier": "standard"}

    def render(self, answer: Reply, ask: Ask) -> object:
        return {"id": _ident("msg_"), "type": "message", "role": "assistant",
                "model": ask.model, "content": self._blocks(answer, ask), **self._stop(answer),
                "usage": self._usage(answer)}

    def events(self, answer: Reply, ask: Ask) -> list[Event]:
        start: dict[str, Any] = {"id": _ident("msg_"), "type": "message", "role": "assistant",
                 "model": ask.model, "content": [], "stop_reason": None, "stop_sequence": None,
                 "usage": {**self._usage(answer), "output_tokens": 1}}
        events = [_event("message_start", {"message": start}), _event("ping", {})]
        for index, block in enumerate(self._blocks(answer, ask)):
            if block["type"] == "tool_use":
                events.append(_event("content_block_start", {
                    "index": index, "content_block": {**block, "input": {}}}, content=True))
                pieces = ["", *argument_pieces(orjson.dumps(block["input"]).decode())]
                events.extend(_event("content_block_delta", {"index": index, "delta": {
                    "type": "input_json_delta", "partial_json": piece}}, content=True)
                    for piece in pieces)
            else:
                events.append(_event("content_block_start", {
                    "index": index, "content_block": {"type": "text", "text": ""}}))
                events.extend(_event("content_block_delta", {"index": index, "delta": {
                    "type": "text_delta", "text": piece}}, content=True)
                    for piece in chunks(block["text"]))
            events.append(_event("content_block_stop", {"index": index}))
        events.append(_event("message_delta", {
            "delta": self._stop(answer), "usage": {
                k: v for k, v in self._usage(answer).items() if k != "service_tier"}}))
        events.append(_event("message_stop", {}, terminator=True))
        return events


def _turns(role: str, content: Any) -> list[tuple[str, str]]:
    """The conversation turns of one message: a tool turn per ``tool_result`` block."""
    if not isinstance(content, list):
        return [(role, text_of(content))]
    turns = [("tool", text_of(p.get("content"))) for p in content
             if isinstance(p, dict) and p.get("type") == "tool_result"]
    text = text_of([p for p in content if not (isinstance(p, dict)
                                                and p.get("type") == "tool_result")])
    if text or not turns:
        turns.append((role, text))
    return turns


def _final_text(content: Any) -> str:
    if isinstance(content, list):
        texts = [p for p in content if isinstance(p, dict) and p.get("type") == "text"]
        return str(texts[-1].get("text", "")) if texts else ""
    return text_of(content)
