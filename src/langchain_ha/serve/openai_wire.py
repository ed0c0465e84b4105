"""OpenAI's API as data: the request bodies the gateway accepts and the error shape it answers.

Requests are validated strictly (``extra="forbid"``): a field the gateway does not know, or
knows and cannot honour, is a 400 naming it, never dropped.  Errors on these paths are
OpenAI's exact shape, ``{"error": {"message", "type", "param", "code"}}``, with the status
OpenAI would use (validation is a 400, not FastAPI's 422), so the official SDKs raise the
exception class a client expects (``BadRequestError``, ``NotFoundError``...).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import Response

OPENAI_PATHS = frozenset({"/v1/chat/completions", "/v1/models", "/v1/embeddings"})
"""Route paths answered in OpenAI's shape (``/v1/models/{id}`` too)."""

_TYPES = {400: "invalid_request_error", 401: "invalid_request_error", 403: "permission_error",
          404: "invalid_request_error", 408: "invalid_request_error", 409: "invalid_request_error",
          413: "invalid_request_error", 429: "requests"}

# Fields of OpenAI's API the gateway knows but cannot honour, with the reason given.
REFUSED_FIELDS = {
    "audio": "audio output is not supported",
    "prediction": "predicted outputs are not supported",
    "web_search_options": "web search is not supported",
    "reasoning_effort": "reasoning effort cannot be honoured by every provider",
    "verbosity": "verbosity cannot be honoured by every provider",
    "functions": "the deprecated 'functions' API is not supported; use 'tools'",
    "function_call": "the deprecated 'function_call' is not supported; use 'tool_choice'",
    "prompt_cache_key": "prompt caching hints are not supported",
    "safety_identifier": "not supported; use 'user'",
}


def is_openai_path(path: str) -> bool:
    """True for a route path answered in OpenAI's shape."""
    return path in OPENAI_PATHS or path.startswith("/v1/models/")


def error_body(status: int, message: str, *, param: str | None = None, code: str | None = None,
               kind: str | None = None) -> bytes:
    """OpenAI's error body; ``kind`` (the ``type``) defaults to OpenAI's for ``status``."""
    kind = kind or _TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    return json.dumps({"error": {"message": message, "type": kind, "param": param,
                                 "code": code}}).encode()


def error_response(status: int, message: str, *, param: str | None = None,
                   code: str | None = None, kind: str | None = None,
                   retry_after: float | None = None) -> Response:
    """An error in OpenAI's shape (``Retry-After`` on 429 and 503)."""
    headers = None
    if retry_after is not None or status in (429, 503):
        headers = {"retry-after": f"{max(1, round(retry_after or 1))}"}
    return Response(error_body(status, message, param=param, code=code, kind=kind),
                    status_code=status, media_type="application/json", headers=headers)


class BadRequest(Exception):
    """A request the gateway refuses: a 400 naming ``param``."""

    def __init__(self, param: str | None, message: str, code: str | None = None,
                 status: int = 400) -> None:
        super().__init__(message)
        self.param = param
        self.message = message
        self.code = code
        self.status = status

    def response(self) -> Response:
        return error_response(self.status, self.message, param=self.param, code=self.code)


def validation_response(errors: Sequence[Mapping[str, Any]], body: Any) -> Response:
    """A 400 for pydantic's errors: the one that reaches deepest into the body, naming the
    field as a path (``messages[0].content``)."""
    if not errors:
        return error_response(400, "invalid request body")
    best = max(errors, key=lambda e: len(_path(e.get("loc", ()), body)[1]))
    param, _ = _path(best.get("loc", ()), body)
    kind = best.get("type")
    if kind == "json_invalid":
        return error_response(400, "We could not parse the JSON body of your request. (HINT: "
                              "This likely means you aren't using your HTTP library "
                              "correctly.)")
    if kind == "extra_forbidden":
        name = param or "?"
        reason = REFUSED_FIELDS.get(name)
        message = (f"{name}: {reason}" if reason else
                   f"Unrecognized request argument supplied: {name}")
        return error_response(400, message, param=name, code="unsupported_parameter"
                              if reason else "unknown_parameter")
    if kind == "missing":
        return error_response(400, f"Missing required parameter: '{param}'.", param=param,
                              code="missing_required_parameter")
    return error_response(400, f"{param or 'body'}: {best.get('msg', 'invalid')}", param=param,
                          code="invalid_value")


def _path(loc: Sequence[Any], body: Any) -> tuple[str | None, list[Any]]:
    """``loc`` as a field path, keeping the parts that exist in ``body`` (pydantic adds union
    members' names and tags), and the last part of a missing or extra field."""
    parts = list(loc[1:] if loc and loc[0] == "body" else loc)
    kept: list[Any] = []
    node = body
    for i, part in enumerate(parts):
        present = ((isinstance(part, int) and isinstance(node, list) and 0 <= part < len(node))
                   or (isinstance(part, str) and isinstance(node, dict) and part in node))
        if present:
            kept.append(part)
            node = node[part]
        elif i == len(parts) - 1 and isinstance(part, str) and part.isidentifier():
            kept.append(part)  # the missing field itself
    if not kept:
        return None, kept
    text = ""
    for part in kept:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text, kept


# -- chat completions ------------------------------------------------------------------------

_Strict = ConfigDict(extra="forbid")
_NAME = r"^[a-zA-Z0-9_-]{1,64}$"


class TextPart(BaseModel):
    """A text content part."""

    model_config = _Strict
    type: Literal["text"]
    text: str


class ImageUrl(BaseModel):
    """An image by URL (``https://`` or a ``data:`` URL)."""

    model_config = _Strict
    url: str = Field(min_length=1)
    detail: Literal["auto", "low", "high"] | None = None


class ImagePart(BaseModel):
    """An image content part (user messages only)."""

    model_config = _Strict
    type: Literal["image_url"]
    image_url: ImageUrl


class RefusalPart(BaseModel):
    """A refusal content part (assistant messages only)."""

    model_config = _Strict
    type: Literal["refusal"]
    refusal: str


UserPart = Annotated[TextPart | ImagePart, Field(discriminator="type")]
AssistantPart = Annotated[TextPart | RefusalPart, Field(discriminator="type")]


class FunctionCall(BaseModel):
    """A tool call's function: its name and JSON-encoded arguments."""

    model_config = _Strict
    name: str = Field(pattern=_NAME)
    arguments: str


class ToolCall(BaseModel):
    """A tool call made by the assistant in an earlier turn."""

    model_config = _Strict
    id: str = Field(min_length=1, max_length=200)
    type: Literal["function"] = "function"
    function: FunctionCall


class SystemMessage(BaseModel):
    """A system or developer message (both become LangChain system messages)."""

    model_config = _Strict
    role: Literal["system", "developer"]
    content: str | list[TextPart]
    name: str | None = Field(default=None, max_length=64)


class UserMessage(BaseModel):
    """A user message: text, or content parts (text and images)."""

    model_config = _Strict
    role: Literal["user"]
    content: str | list[UserPart]
    name: str | None = Field(default=None, max_length=64)


class AssistantMessage(BaseModel):
    """An earlier assistant turn: text and/or tool calls."""

    model_config = _Strict
    role: Literal["assistant"]
    content: str | list[AssistantPart] | None = None
    name: str | None = Field(default=None, max_length=64)
    tool_calls: list[ToolCall] | None = Field(default=None, max_length=128)
    refusal: str | None = None
    annotations: list[dict[str, Any]] | None = Field(default=None, max_length=256)
    """Output metadata of that turn (clients send a response's message back as it came);
    nothing in it is for the model."""


class ToolMessage(BaseModel):
    """A tool's result, answering an assistant tool call by its id."""

    model_config = _Strict
    role: Literal["tool"]
    content: str | list[TextPart]
    tool_call_id: str = Field(min_length=1, max_length=200)


Message = Annotated[SystemMessage | UserMessage | AssistantMessage | ToolMessage,
                    Field(discriminator="role")]


class FunctionDef(BaseModel):
    """A function the model may call."""

    model_config = _Strict
    name: str = Field(pattern=_NAME)
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class Tool(BaseModel):
    """A tool definition (functions only)."""

    model_config = _Strict
    type: Literal["function"]
    function: FunctionDef


class NamedFunction(BaseModel):
    """The function a named tool choice forces."""

    model_config = _Strict
    name: str = Field(pattern=_NAME)


class NamedToolChoice(BaseModel):
    """``tool_choice`` forcing one function."""

    model_config = _Strict
    type: Literal["function"]
    function: NamedFunction


class JsonSchemaSpec(BaseModel):
    """``response_format.json_schema``."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    name: str = Field(pattern=_NAME)
    description: str | None = None
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    strict: bool | None = None


class TextFormat(BaseModel):
    """``response_format`` of type text (the default)."""

    model_config = _Strict
    type: Literal["text"]


class JsonObjectFormat(BaseModel):
    """``response_format`` of type json_object."""

    model_config = _Strict
    type: Literal["json_object"]


class JsonSchemaFormat(BaseModel):
    """``response_format`` of type json_schema (structured output)."""

    model_config = _Strict
    type: Literal["json_schema"]
    json_schema: JsonSchemaSpec


ResponseFormat = Annotated[TextFormat | JsonObjectFormat | JsonSchemaFormat,
                           Field(discriminator="type")]


class StreamOptions(BaseModel):
    """``stream_options``."""

    model_config = _Strict
    include_usage: bool | None = None
    include_obfuscation: bool | None = None


class ChatCompletionRequest(BaseModel):
    """``POST /v1/chat/completions``: OpenAI's request; every field is honoured or refused.

    ``model`` defaults to the gateway's alias.  Accepted as no-ops because they change nothing
    the client can observe here: ``store: false``, ``service_tier: "auto"|"default"``, empty
    ``metadata``/``logit_bias``, ``logprobs: false``, ``modalities: ["text"]``.
    """

    model_config = _Strict

    model: str | None = Field(default=None, max_length=200)
    messages: list[Message] = Field(min_length=1)
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    stop: str | list[str] | None = None
    seed: int | None = None
    n: int | None = Field(default=None, ge=1, le=128)
    user: str | None = Field(default=None, max_length=256)
    frequency_penalty: float | None = Field(default=None, ge=-2, le=2)
    presence_penalty: float | None = Field(default=None, ge=-2, le=2)
    tools: list[Tool] | None = Field(default=None, max_length=128)
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: bool | None = None
    response_format: ResponseFormat | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = Field(default=None, ge=0, le=20)
    store: bool | None = None
    service_tier: str | None = Field(default=None, max_length=32)
    metadata: dict[str, str] | None = None
    logit_bias: dict[str, float] | None = None
    modalities: list[str] | None = Field(default=None, max_length=4)


# -- embeddings ------------------------------------------------------------------------------


class EmbeddingRequest(BaseModel):
    """``POST /v1/embeddings``: text inputs (token arrays are refused: the gateway cannot know
    the tokenizer of every endpoint)."""

    model_config = _Strict

    model: str | None = Field(default=None, max_length=200)
    input: str | list[str] | list[int] | list[list[int]]
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(default=None, ge=1)
    user: str | None = Field(default=None, max_length=256)
