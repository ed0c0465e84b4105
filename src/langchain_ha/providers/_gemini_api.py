"""Gemini-compatible routes (the Gemini Developer API, as the ``google-genai`` SDK calls it).

``POST /{v1,v1beta}/models/{model}:generateContent``, ``…:streamGenerateContent`` (SSE with
``?alt=sse``, which the SDK always asks for; a JSON array without it) and ``GET
/{v1,v1beta}/models``.  google-genai 3.x sends ``/v1/`` by default and ``/v1beta/`` when asked,
so both prefixes are served.  The key comes in ``x-goog-api-key`` or ``?key=``.

Shapes follow ``google.genai.types``: ``candidates[].content.parts`` with ``text`` or
``functionCall``; ``functionResponse`` parts in requests; ``usageMetadata`` (cumulative in
every stream chunk, as Gemini sends it); ``finishReason`` STOP / MAX_TOKENS / SAFETY (with
``safetyRatings``); a blocked prompt is a 200 with ``promptFeedback.blockReason`` and no
candidates.  Errors are ``{"error": {code, message, status, details}}``; as on the real API a
missing key is a 403 PERMISSION_DENIED and an invalid one a 400 INVALID_ARGUMENT with reason
``API_KEY_INVALID`` (a 401 UNAUTHENTICATED is what an injected ``status: 401`` gives).
"""

from __future__ import annotations

import secrets
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from langchain_ha.providers._answers import REFUSAL_TEXT, ToolSpec, chunks
from langchain_ha.providers._core import Api, ApiError, Sim, positive_int
from langchain_ha.providers._reply import Ask, Finish, Reply
from langchain_ha.providers._stream import Event

MODELS = ("gemini-2.5-flash", "gemini-2.5-pro", "gemini-2.0-flash")
_STATUS = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED",
           404: "NOT_FOUND", 409: "ABORTED", 429: "RESOURCE_EXHAUSTED", 499: "CANCELLED",
           500: "INTERNAL", 501: "NOT_IMPLEMENTED", 503: "UNAVAILABLE",
           504: "DEADLINE_EXCEEDED"}
_MESSAGES = {
    400: "Request contains an invalid argument.",
    401: "Request had invalid authentication credentials. Expected OAuth 2 access token, "
         "login cookie or other valid authentication credential. See "
         "https://developers.google.com/identity/sign-in/web/devconsole-project.",
    403: "The caller does not have permission",
    404: "Requested entity was not found.",
    429: "You exceeded your current quota, please check your plan and billing details. For "
         "more information on this error, head to: "
         "https://ai.google.dev/gemini-api/docs/rate-limits.",
    500: "An internal error has occurred. Please retry or report in "
         "https://developers.generativeai.google/guide/troubleshooting",
    503: "The model is overloaded. Please try again later.",
    504: "The request timed out. Please try again.",
}
_FINISH: dict[Finish, str] = {"stop": "STOP", "stop_sequence": "STOP", "tool_calls": "STOP",
                              "length": "MAX_TOKENS", "refusal": "SAFETY",
                              "content_filter": "SAFETY", "blocked": "SAFETY"}
_CATEGORIES = ("HARM_CATEGORY_HATE_SPEECH", "HARM_CATEGORY_DANGEROUS_CONTENT",
               "HARM_CATEGORY_HARASSMENT", "HARM_CATEGORY_SEXUALLY_EXPLICIT")


def _ratings(blocked: bool) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for category in _CATEGORIES:
        hit = blocked and category == "HARM_CATEGORY_DANGEROUS_CONTENT"
        rating: dict[str, Any] = {"category": category,
                                  "probability": "HIGH" if hit else "NEGLIGIBLE"}
        if hit:
            rating["blocked"] = True
        out.append(rating)
    return out


def _get(d: dict[str, Any], camel: str, snake: str) -> Any:
    """A field in either JSON spelling (the REST API accepts both)."""
    return d.get(camel, d.get(snake))


def _info(reason: str) -> dict[str, Any]:
    return {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": reason,
            "domain": "googleapis.com",
            "metadata": {"service": "generativelanguage.googleapis.com"}}


class GeminiApi(Api):
    """Google's Gemini Developer API (``generativelanguage.googleapis.com``)."""

    def key(self, request: Request) -> str:
        key = request.headers.get("x-goog-api-key", "").strip()
        return key or request.query_params.get("key", "").strip()

    def google_error(self, status: int, message: str,
                     details: list[dict[str, Any]] | None = None) -> ApiError:
        error: dict[str, Any] = {"code": status, "message": message,
                                 "status": _STATUS.get(status, "INTERNAL" if status >= 500
                                                       else "FAILED_PRECONDITION")}
        if details:
            error["details"] = details
        return self.failure(status, {"error": error})

    def error(self, status: int, message: str | None = None) -> ApiError:
        return self.google_error(status, message or _MESSAGES.get(
            status, f"Simulated failure ({status})."))

    def fault_error(self, status: int, retry_after_s: float | None) -> ApiError:
        details: list[dict[str, Any]] = []
        if status == 429:
            details = [
                {"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": [{
                    "quotaMetric": "generativelanguage.googleapis.com/"
                                   "generate_content_free_tier_requests",
                    "quotaId": "GenerateRequestsPerMinutePerProjectPerModel-FreeTier",
                    "quotaDimensions": {"location": "global", "model": "gemini-2.5-flash"},
                    "quotaValue": "10"}]},
                {"@type": "type.googleapis.com/google.rpc.Help", "links": [{
                    "description": "Learn more about Gemini API quotas",
                    "url": "https://ai.google.dev/gemini-api/docs/rate-limits"}]},
            ]
            if retry_after_s is not None:
                details.append({"@type": "type.googleapis.com/google.rpc.RetryInfo",
                                "retryDelay": f"{retry_after_s:g}s"})
        elif status == 401:
            details = [_info("ACCESS_TOKEN_TYPE_UNSUPPORTED")]
        return self.google_error(status, _MESSAGES.get(status, f"Simulated failure ({status})."),
                                 details)

    def auth_error(self, key: str) -> ApiError:
        if not key:
            return self.google_error(
                403, "Method doesn't allow unregistered callers (callers without established "
                     "identity). Please use API Key or other form of API consumer identity to "
                     "call this API.")
        return self.google_error(400, "API key not valid. Please pass a valid API key.",
                                 [_info("API_KEY_INVALID"), {
                                     "@type": "type.googleapis.com/google.rpc.LocalizedMessage",
                                     "locale": "en-US",
                                     "message": "API key not valid. Please pass a valid API "
                                                "key."}])

    def context_overflow(self, tokens: int, limit: int) -> ApiError:
        return self.error(400, f"The input token count ({tokens}) exceeds the maximum number "
                               f"of tokens allowed ({limit}).")

    def prompt_filtered(self) -> None:
        return None  # Gemini answers 200 with promptFeedback.blockReason (see render)

    def prefill_rejected(self) -> ApiError:
        return self.error(400, "Please ensure that multiturn requests end with a user role or "
                               "a function response.")

    # -- parsing -------------------------------------------------------------------------------

    def parse(self, body: dict[str, Any], request: Request) -> Ask:
        target = str(request.path_params.get("target", ""))
        model, _, method = target.partition(":")
        if method not in ("generateContent", "streamGenerateContent"):
            raise self.error(404, f"models/{target} is not found, or {method or 'this method'} "
                                  "is not supported. Call ListModels to see the list of "
                                  "available models and their supported methods.")
        contents = body.get("contents")
        if not isinstance(contents, list) or not contents:
            raise self.error(400, "* GenerateContentRequest.contents: contents is not "
                                  "specified")
        conversation: list[tuple[str, str]] = []
        system = _get(body, "systemInstruction", "system_instruction")
        if isinstance(system, dict):
            conversation.append(("system", _parts_text(system.get("parts"))))
        elif isinstance(system, str):
            conversation.append(("system", system))
        for i, content in enumerate(contents):
            role = content.get("role", "user") if isinstance(content, dict) else None
            if role not in ("user", "model"):
                raise self.error(400, f"contents[{i}].role: Please use a valid role: user, "
                                      "model.")
            assert isinstance(content, dict)
            conversation.extend(_turns(str(role), content.get("parts")))
        tools, forced = self._tools(body)
        config = _get(body, "generationConfig", "generation_config") or {}
        if not isinstance(config, dict):
            raise self.error(400, "generationConfig: must be an object")
        schema = _get(config, "responseJsonSchema", "response_json_schema") or _get(
            config, "responseSchema", "response_schema")
        mime = _get(config, "responseMimeType", "response_mime_type") or "text/plain"
        if schema is not None and mime != "application/json":
            raise self.error(400, "generationConfig.responseSchema: a response schema needs "
                                  "responseMimeType application/json")
        stops = _get(config, "stopSequences", "stop_sequences") or []
        if not isinstance(stops, list) or len(stops) > 5:
            raise self.error(400, "generationConfig.stopSequences: at most 5 strings")
        return Ask(
            conversation=conversation, model=model,
            stream=method == "streamGenerateContent", tools=tools, tool_choice=forced,
            schema=schema if isinstance(schema, dict) else None,
            json_object=mime == "application/json" and schema is None,
            max_tokens=positive_int(config, "maxOutputTokens", self, 1_000_000,
                                    "generationConfig.maxOutputTokens"),
            stop=[str(s) for s in stops],
            n=positive_int(config, "candidateCount", self, 8, "generationConfig.candidateCount")
            or 1,
            sse=request.query_params.get("alt") == "sse",
        )

    def _tools(self, body: dict[str, Any]) -> tuple[list[ToolSpec], str | bool | None]:
        tools: list[ToolSpec] = []
        for group in body.get("tools") or []:
            declared = _get(group, "functionDeclarations", "function_declarations") if \
                isinstance(group, dict) else None
            for fn in declared or []:
                if not isinstance(fn, dict) or not fn.get("name"):
                    raise self.error(400, "tools[].functionDeclarations[].name: required")
                params = _get(fn, "parametersJsonSchema", "parameters_json_schema") or fn.get(
                    "parameters") or {"type": "object"}
                tools.append((str(fn["name"]), params))
        config = _get(body, "toolConfig", "tool_config") or {}
        calling = _get(config, "functionCallingConfig", "function_calling_config") or {}
        mode = str(calling.get("mode") or "AUTO").upper()
        if mode not in ("AUTO", "ANY", "NONE", "VALIDATED", "MODE_UNSPECIFIED"):
            raise self.error(400, "toolConfig.functionCallingConfig.mode: must be AUTO, ANY, "
                                  "NONE or VALIDATED")
        if mode == "NONE":
            return tools, None
        allowed = _get(calling, "allowedFunctionNames", "allowed_function_names") or []
        if allowed:
            unknown = [n for n in allowed if n not in {t[0] for t in tools}]
            if unknown:
                raise self.error(400, "toolConfig.functionCallingConfig.allowedFunctionNames: "
                                      f"no function declaration named {unknown[0]!r}")
            tools = [t for t in tools if t[0] in allowed]
        if mode != "ANY":
            return tools, False
        return tools, (str(allowed[0]) if len(allowed) == 1 else True)

    # -- answers -------------------------------------------------------------------------------

    def _usage(self, answer: Reply, ask: Ask, output: int | None = None) -> dict[str, Any]:
        out = answer.completion_tokens * ask.n if output is None else output
        usage: dict[str, Any] = {"promptTokenCount": answer.prompt_tokens,
                                 "totalTokenCount": answer.prompt_tokens + out,
                                 "promptTokensDetails": [{"modality": "TEXT",
                                                          "tokenCount": answer.prompt_tokens}]}
        if out:
            usage["candidatesTokenCount"] = out
        return usage

    def _head(self, ask: Ask) -> dict[str, Any]:
        return {"modelVersion": ask.model, "responseId": secrets.token_urlsafe(16)}

    def _parts(self, answer: Reply) -> list[dict[str, Any]]:
        if answer.calls:
            return [{"functionCall": {"name": name, "args": args}} for name, args in answer.calls]
        return [{"text": answer.text}] if answer.text else []

    def _candidate(self, index: int, parts: list[dict[str, Any]],
                   finish: Finish | None) -> dict[str, Any]:
        candidate: dict[str, Any] = {"index": index}
        if parts:
            candidate["content"] = {"parts": parts, "role": "model"}
        if finish is not None:
            candidate["finishReason"] = _FINISH[finish]
            if candidate["finishReason"] == "SAFETY":
                candidate["safetyRatings"] = _ratings(blocked=True)
            if finish == "refusal":
                candidate["finishMessage"] = REFUSAL_TEXT
        return candidate

    def _blocked(self, answer: Reply, ask: Ask) -> dict[str, Any]:
        return {"promptFeedback": {"blockReason": "SAFETY", "safetyRatings": _ratings(True)},
                "usageMetadata": self._usage(answer, ask, 0), **self._head(ask)}

    def render(self, answer: Reply, ask: Ask) -> object:
        if answer.finish == "blocked":
            return self._blocked(answer, ask)
        parts = [] if answer.finish == "refusal" else self._parts(answer)
        return {"candidates": [self._candidate(i, parts, answer.finish) for i in range(ask.n)],
                "usageMetadata": self._usage(answer, ask), **self._head(ask)}

    def events(self, answer: Reply, ask: Ask) -> list[Event]:
        head = self._head(ask)
        bodies: list[tuple[dict[str, Any], bool]] = []
        if answer.finish == "blocked":
            bodies.append((self._blocked(answer, ask), True))
        elif answer.calls or answer.finish == "refusal" or not answer.text:
            parts = [] if answer.finish == "refusal" else self._parts(answer)
            bodies.append(({"candidates": [self._candidate(i, parts, answer.finish)
                                           for i in range(ask.n)],
                            "usageMetadata": self._usage(answer, ask), **head}, True))
        else:
            pieces = chunks(answer.text)
            filtered = answer.finish == "content_filter"
            sent = 0
            for k, piece in enumerate(pieces):
                sent += len(piece.split())
                last = k == len(pieces) - 1 and not filtered
                bodies.append(({"candidates": [
                    self._candidate(i, [{"text": piece}], answer.finish if last else None)
                    for i in range(ask.n)], "usageMetadata": self._usage(
                        answer, ask, sent * ask.n), **head}, True))
            if filtered:
                bodies.append(({"candidates": [self._candidate(i, [], answer.finish)
                                               for i in range(ask.n)],
                                "usageMetadata": self._usage(answer, ask), **head}, False))
        if ask.sse:
            return [Event(b"data: " + orjson.dumps(b) + b"\r\n\r\n", content=c)
                    for b, c in bodies]
        # Without alt=sse Gemini streams one JSON array, an element at a time.
        events = [Event((b"[" if k == 0 else b",\r\n") + orjson.dumps(b), content=c)
                  for k, (b, c) in enumerate(bodies)]
        return [*events, Event(b"]", terminator=True)]

    def stream_media_type(self, ask: Ask) -> str:
        return "text/event-stream" if ask.sse else "application/json"


def _parts_text(parts: Any) -> str:
    if not isinstance(parts, list):
        return ""
    return "".join(str(p["text"]) for p in parts if isinstance(p, dict) and "text" in p
                   and not p.get("thought"))


def _turns(role: str, parts: Any) -> list[tuple[str, str]]:
    """The turns of one content: a tool turn per ``functionResponse`` part."""
    turns: list[tuple[str, str]] = []
    for p in parts if isinstance(parts, list) else []:
        response = _get(p, "functionResponse", "function_response") if isinstance(p, dict) \
            else None
        if isinstance(response, dict):
            turns.append(("tool", _response_text(response.get("response"))))
    text = _parts_text(parts)
    if text or not turns:
        turns.append(("assistant" if role == "model" else "user", text))
    return turns


def _response_text(response: Any) -> str:
    """A function response as the tool's text: a lone string value as it is, else JSON."""
    if isinstance(response, dict) and len(response) == 1:
        (value,) = response.values()
        if isinstance(value, str):
            return value
    return orjson.dumps(response).decode() if response is not None else ""


async def models(sim: Sim, api: GeminiApi, request: Request) -> Response:
    """``GET /v1beta/models``: the models this simulator serves, in Gemini's shape."""
    early = await sim.gate(request, "models", api)
    if early is not None:
        return early
    return sim.ok("models", {"models": [{
        "name": f"models/{m}", "version": "001", "displayName": m.replace("-", " ").title(),
        "description": f"{m}, simulated by {sim.name}", "inputTokenLimit": 1_048_576,
        "outputTokenLimit": 65_536, "temperature": 1.0, "maxTemperature": 2.0, "topP": 0.95,
        "topK": 64, "supportedGenerationMethods": ["generateContent", "countTokens"]}
        for m in MODELS]})


def wants_gemini(request: Request) -> bool:
    """True if a ``GET /v1/models`` carries a Gemini key (then it gets Gemini's list)."""
    return bool(request.headers.get("x-goog-api-key") or request.query_params.get("key"))
