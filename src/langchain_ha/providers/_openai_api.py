"""OpenAI-compatible routes: chat completions (plain, SSE, tools, structured output), embeddings,
models.

Shapes follow the ``openai`` SDK's types: ``usage`` in every plain answer and, with
``stream_options.include_usage``, in a final chunk with ``choices: []`` (every other chunk then
carries ``"usage": null``); tool-call arguments streamed in several pieces; ``refusal`` instead
of ``content`` when the model refuses; errors as ``{"error": {message, type, param, code}}``
with an ``x-request-id`` header.  A prompt the content filter rejects gets Azure OpenAI's 400
(``code: content_filter`` with ``innererror.content_filter_result``), the one OpenAI service
that filters prompts.  A conversation ending with an assistant message is continued like an
Anthropic prefill (OpenAI promises nothing there; the ``reject_prefill`` fault makes it a 400).
"""

from __future__ import annotations

import secrets
import time
import uuid
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from langchain_ha.providers._answers import ToolSpec, argument_pieces, chunks
from langchain_ha.providers._core import (
    Api,
    ApiError,
    Sim,
    positive_int,
    read_json,
    text_of,
)
from langchain_ha.providers._embeddings import embed, embed_tokens
from langchain_ha.providers._reply import Ask, Finish, Reply
from langchain_ha.providers._schema import strict_schema_problem
from langchain_ha.providers._stream import Event

MAX_N = 128
MAX_STOP = 4
_ERRORS: dict[int, tuple[str | None, str | None, str]] = {
    400: ("invalid_request_error", None, "Invalid request (simulated)."),
    401: ("invalid_request_error", "invalid_api_key",
          "Incorrect API key provided. You can find your API key at "
          "https://platform.openai.com/account/api-keys."),
    403: ("request_forbidden", "unsupported_country_region_territory",
          "Country, region, or territory not supported"),
    404: ("invalid_request_error", "model_not_found",
          "The model does not exist or you do not have access to it."),
    429: ("requests", "rate_limit_exceeded",
          "Rate limit reached for requests per min (RPM): Limit 500, Used 500, Requested 1. "
          "Visit https://platform.openai.com/account/rate-limits to learn more."),
    500: ("server_error", None,
          "The server had an error while processing your request. Sorry about that!"),
    503: ("server_error", None, "The server is overloaded or not ready yet."),
}
_FINISH: dict[Finish, str] = {"stop": "stop", "stop_sequence": "stop", "length": "length",
                              "tool_calls": "tool_calls", "refusal": "stop",
                              "content_filter": "content_filter", "blocked": "content_filter"}
_ROLES = {"developer": "system", "system": "system", "user": "user", "assistant": "assistant",
          "tool": "tool", "function": "tool"}
_FILTERED = {
    "hate": {"filtered": False, "severity": "safe"},
    "jailbreak": {"filtered": False, "detected": False},
    "self_harm": {"filtered": False, "severity": "safe"},
    "sexual": {"filtered": False, "severity": "safe"},
    "violence": {"filtered": True, "severity": "medium"},
}


def _mask(key: str) -> str:
    return f"{key[:3]}***{key[-4:]}" if len(key) > 12 else "***"


class OpenAIApi(Api):
    """OpenAI's chat completions API (and its error shapes for embeddings and models)."""

    def __init__(self, name: str) -> None:
        self.fingerprint = f"fp_{name}"

    def key(self, request: Request) -> str:
        auth = request.headers.get("authorization", "")
        return auth[7:].strip() if auth.lower().startswith("bearer ") else ""

    def headers(self) -> dict[str, str]:
        return {"x-request-id": f"req_{uuid.uuid4().hex}", "openai-processing-ms": "1",
                "openai-version": "2020-10-01"}

    def invalid(self, message: str, param: str | None = None, code: str | None = None,
                status: int = 400) -> ApiError:
        """A 400 ``invalid_request_error`` naming ``param``."""
        return self.failure(status, {"error": {"message": message,
                                               "type": "invalid_request_error",
                                               "param": param, "code": code}})

    def error(self, status: int, message: str | None = None) -> ApiError:
        kind, code, default = _ERRORS.get(
            status, ("server_error" if status >= 500 else "invalid_request_error", None,
                     f"Simulated failure ({status})."))
        return self.failure(status, {"error": {"message": message or default, "type": kind,
                                               "param": None, "code": code}})

    def auth_error(self, key: str) -> ApiError:
        if not key:
            return self.invalid(
                "You didn't provide an API key. You need to provide your API key in an "
                "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
                status=401)
        return self.invalid(f"Incorrect API key provided: {_mask(key)}. You can find your API "
                            "key at https://platform.openai.com/account/api-keys.",
                            code="invalid_api_key", status=401)

    def retry_headers(self, seconds: float) -> dict[str, str]:
        return {"retry-after": f"{seconds:g}", "retry-after-ms": f"{seconds * 1000:g}",
                "x-ratelimit-limit-requests": "500", "x-ratelimit-remaining-requests": "0",
                "x-ratelimit-reset-requests": f"{seconds:g}s"}

    def context_overflow(self, tokens: int, limit: int) -> ApiError:
        return self.invalid(
            f"This model's maximum context length is {limit} tokens. However, your messages "
            f"resulted in {tokens} tokens. Please reduce the length of the messages.",
            param="messages", code="context_length_exceeded")

    def prompt_filtered(self) -> ApiError:
        return self.failure(400, {"error": {
            "message": "The response was filtered due to the prompt triggering Azure OpenAI's "
                       "content management policy. Please modify your prompt and retry. To "
                       "learn more about our content filtering policies please read our "
                       "documentation: https://go.microsoft.com/fwlink/?linkid=2198766",
            "type": None, "param": "prompt", "code": "content_filter", "status": 400,
            "innererror": {"code": "ResponsibleAIPolicyViolation",
                           "content_filter_result": _FILTERED},
        }})

    def prefill_rejected(self) -> ApiError:
        return self.invalid("This model does not support assistant message prefill. The "
                            "conversation must end with a user message.", param="messages")

    # -- parsing -------------------------------------------------------------------------------

    def parse(self, body: dict[str, Any], request: Request) -> Ask:
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise self.invalid("you must provide a model parameter", param="model")
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise self.invalid("messages: must be a non-empty list of messages",
                               param="messages")
        conversation = []
        for i, m in enumerate(messages):
            role = _ROLES.get(str(m.get("role"))) if isinstance(m, dict) else None
            if role is None:
                raise self.invalid(f"messages[{i}].role: must be one of system, developer, "
                                   "user, assistant, tool", param=f"messages[{i}].role")
            conversation.append((role, text_of(m.get("content"))))
        tools = self._tools(body.get("tools"))
        stream = body.get("stream") is True
        options = body.get("stream_options")
        if options is not None and not stream:
            raise self.invalid("The 'stream_options' parameter is only allowed when 'stream' "
                               "is enabled.", param="stream_options")
        max_tokens = positive_int(body, "max_completion_tokens", self) or positive_int(
            body, "max_tokens", self)
        schema, json_object = self._response_format(body.get("response_format"), conversation)
        return Ask(
            conversation=conversation, model=model, stream=stream, tools=tools,
            tool_choice=self._tool_choice(body.get("tool_choice"), tools),
            parallel=body.get("parallel_tool_calls") is not False,
            schema=schema, json_object=json_object, max_tokens=max_tokens,
            stop=self._stop(body.get("stop")), n=positive_int(body, "n", self, MAX_N) or 1,
            stream_usage=isinstance(options, dict) and options.get("include_usage") is True,
        )

    def _tools(self, raw: Any) -> list[ToolSpec]:
        if raw is None:
            return []
        if not isinstance(raw, list):
            raise self.invalid("tools: must be a list", param="tools")
        tools: list[ToolSpec] = []
        for i, t in enumerate(raw):
            fn = t.get("function") if isinstance(t, dict) else None
            name = fn.get("name") if isinstance(fn, dict) else None
            if not isinstance(name, str) or not name:
                raise self.invalid(f"Missing required parameter: 'tools[{i}].function.name'.",
                                   param=f"tools[{i}].function.name",
                                   code="missing_required_parameter")
            assert isinstance(fn, dict)
            params = fn.get("parameters") or {"type": "object", "properties": {}}
            if fn.get("strict") is True:
                problem = strict_schema_problem(params)
                if problem:
                    raise self.invalid(f"Invalid schema for function '{name}': {problem}",
                                       param=f"tools[{i}].function.parameters",
                                       code="invalid_function_parameters")
            tools.append((name, params))
        return tools

    def _tool_choice(self, choice: Any, tools: list[ToolSpec]) -> str | bool | None:
        if choice is None:
            return False
        if not tools:
            raise self.invalid("Invalid value for 'tool_choice': 'tool_choice' is only allowed "
                               "when 'tools' are specified.", param="tool_choice")
        if choice in ("auto", "none", "required"):
            return {"auto": False, "none": None, "required": True}[choice]
        name = (choice.get("function") or {}).get("name") if isinstance(choice, dict) else None
        if not isinstance(name, str):
            raise self.invalid("Invalid value for 'tool_choice': must be 'none', 'auto', "
                               "'required' or a function.", param="tool_choice")
        if name not in {t[0] for t in tools}:
            raise self.invalid(f"Invalid value for 'tool_choice': function '{name}' is not in "
                               "'tools'.", param="tool_choice")
        return name

    def _response_format(self, fmt: Any, conversation: list[tuple[str, str]],
                         ) -> tuple[dict[str, Any] | None, bool]:
        if fmt is None:
            return None, False
        kind = fmt.get("type") if isinstance(fmt, dict) else None
        if kind == "text":
            return None, False
        if kind == "json_object":
            if not any("json" in text.lower() for _, text in conversation):
                raise self.invalid("'messages' must contain the word 'json' in some form, to "
                                   "use 'response_format' of type 'json_object'.",
                                   param="messages")
            return None, True
        if kind != "json_schema":
            raise self.invalid("response_format.type: must be 'text', 'json_object' or "
                               "'json_schema'", param="response_format.type")
        spec = fmt.get("json_schema")
        name = spec.get("name") if isinstance(spec, dict) else None
        if not isinstance(name, str) or not name:
            raise self.invalid("Missing required parameter: 'response_format.json_schema.name'.",
                               param="response_format.json_schema.name",
                               code="missing_required_parameter")
        assert isinstance(spec, dict)
        schema = spec.get("schema") or {"type": "object", "properties": {}}
        if not isinstance(schema, dict):
            raise self.invalid("response_format.json_schema.schema: must be an object",
                               param="response_format.json_schema.schema")
        if spec.get("strict") is True:
            problem = strict_schema_problem(schema)
            if problem:
                raise self.invalid(f"Invalid schema for response_format '{name}': {problem}",
                                   param="response_format")
        return schema, False

    def _stop(self, stop: Any) -> list[str]:
        if stop is None:
            return []
        stops = [stop] if isinstance(stop, str) else stop
        if (not isinstance(stops, list) or len(stops) > MAX_STOP
                or not all(isinstance(s, str) for s in stops)):
            raise self.invalid(f"stop: must be a string or a list of at most {MAX_STOP} "
                               "strings", param="stop")
        return stops

    # -- answers -------------------------------------------------------------------------------

    def _usage(self, answer: Reply, n: int) -> dict[str, Any]:
        completion = answer.completion_tokens * n
        return {"prompt_tokens": answer.prompt_tokens, "completion_tokens": completion,
                "total_tokens": answer.prompt_tokens + completion,
                "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
                "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
                                              "accepted_prediction_tokens": 0,
                                              "rejected_prediction_tokens": 0}}

    def _calls(self, answer: Reply) -> list[dict[str, Any]]:
        return [{"id": f"call_{secrets.token_hex(12)}", "type": "function",
                 "function": {"name": name, "arguments": orjson.dumps(args).decode()}}
                for name, args in answer.calls]

    def _head(self, ask: Ask) -> dict[str, Any]:
        return {"id": f"chatcmpl-{uuid.uuid4().hex[:29]}", "created": int(time.time()),
                "model": ask.model, "service_tier": "default",
                "system_fingerprint": self.fingerprint}

    def render(self, answer: Reply, ask: Ask) -> object:
        refused = answer.finish == "refusal"
        choices = []
        for i in range(ask.n):
            message: dict[str, Any] = {
                "role": "assistant", "content": None if refused or answer.calls else answer.text,
                "refusal": answer.text if refused else None, "annotations": []}
            if answer.calls:
                message["tool_calls"] = self._calls(answer)
            choices.append({"index": i, "message": message, "logprobs": None,
                            "finish_reason": _FINISH[answer.finish]})
        return {**self._head(ask), "object": "chat.completion", "choices": choices,
                "usage": self._usage(answer, ask.n)}

    def events(self, answer: Reply, ask: Ask) -> list[Event]:
        head = {**self._head(ask), "object": "chat.completion.chunk"}
        if ask.stream_usage:
            head["usage"] = None

        def event(i: int, delta: dict[str, Any], finish: str | None = None,
                  content: bool = False) -> Event:
            choice = {"index": i, "delta": delta, "logprobs": None, "finish_reason": finish}
            return Event(b"data: " + orjson.dumps({**head, "choices": [choice]}) + b"\n\n",
                         content=content)

        refused = answer.finish == "refusal"
        events = [event(i, {"role": "assistant", "content": None if refused or answer.calls
                            else "", "refusal": None}) for i in range(ask.n)]
        if answer.calls:
            for i in range(ask.n):
                for k, call in enumerate(self._calls(answer)):
                    fn = call["function"]
                    events.append(event(i, {"tool_calls": [{
                        "index": k, "id": call["id"], "type": "function",
                        "function": {"name": fn["name"], "arguments": ""}}]}, content=True))
                    events.extend(event(i, {"tool_calls": [{"index": k, "function": {
                        "arguments": piece}}]}, content=True)
                        for piece in argument_pieces(fn["arguments"]))
        elif answer.text:
            field = "refusal" if refused else "content"
            for piece in chunks(answer.text):
                events.extend(event(i, {field: piece}, content=True) for i in range(ask.n))
        events.extend(event(i, {}, _FINISH[answer.finish]) for i in range(ask.n))
        if ask.stream_usage:
            usage = {**head, "choices": [], "usage": self._usage(answer, ask.n)}
            events.append(Event(b"data: " + orjson.dumps(usage) + b"\n\n"))
        events.append(Event(b"data: [DONE]\n\n", terminator=True))
        return events


async def embeddings(sim: Sim, api: OpenAIApi, request: Request) -> Response:
    body = await read_json(request)
    early = await sim.gate(request, "embeddings", api)
    if early is not None:
        return early
    raw = None if body is None else body.get("input")
    inputs: list[Any] = raw if isinstance(raw, list) else [raw]
    if raw is None or not inputs:
        return sim.fail("embeddings", api.invalid("'input' must be a string or a list",
                                                  param="input"))
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
            return sim.fail("embeddings", api.invalid(
                f"input[{i}] must be a string or token list", param=f"input[{i}]"))
        data.append({"object": "embedding", "index": i, "embedding": vec})
    tokens = sum(len(str(x).split()) for x in inputs)
    return sim.ok("embeddings", {"object": "list", "data": data,
                                 "model": str(body.get("model") if body else "sim-embed"),
                                 "usage": {"prompt_tokens": tokens, "total_tokens": tokens}},
                  api.headers())


async def models(sim: Sim, api: OpenAIApi, request: Request) -> Response:
    early = await sim.gate(request, "models", api, auth=False)
    if early is not None:
        return early
    names = ["sim-chat", "sim-embed", "sim-claude", "gemini-2.5-flash"]
    return sim.ok("models", {"object": "list", "data": [
        {"id": n, "object": "model", "created": 0, "owned_by": sim.name} for n in names]},
        api.headers())
