"""The OpenAI-compatible routes: ``/v1/chat/completions``, ``/v1/models``, ``/v1/embeddings``.

**Gateway mode** is when the served Runnable is a chat model (a
:class:`~langchain_ha.resilience.chat.ResilientChatModel`, or any ``BaseChatModel``): chat
completions are then a faithful OpenAI endpoint (conversion in
:mod:`langchain_ha.serve.openai_chat`).  Every parameter is passed to the provider that
answers in its own terms; a provider that cannot honour one is skipped for that request
(:meth:`~langchain_ha.resilience.chat.ResilientChatModel.with_options`), and if none can, the
request is a 400 naming the parameter.  Decisions:

- ``model``: the alias (``LCHA_MODEL_ALIAS``, default ``langchain-ha``) is the router; a
  provider's name pins the request to that provider alone (no failover: the client asked for
  that one); anything else is a 404 ``model_not_found``.  ``/v1/models`` lists the alias, the
  router's providers (with their own model names) and the embedding model if one is served.
- ``n``: honoured, as ``n`` independent requests through the router (each fails over on its
  own; any failing fails the request), usage summed; at most ``LCHA_MAX_N`` (8).
- Streams: a role chunk, content deltas, tool-call deltas (indexes renumbered from 0 per
  choice), a final chunk per choice with its ``finish_reason``; with
  ``stream_options.include_usage`` a last ``choices: []`` chunk with ``usage`` (``usage:
  null`` on the others).  ``model`` is the requested id until the answering provider's own
  name is known.  A failure before any chunk is a plain HTTP error with its status; a failure
  after (a stream cut mid-answer that no provider could continue in a verified way) is an
  error event in OpenAI's shape, which the official SDK raises as ``APIError``: never a
  silently truncated answer.  These streams do not accept the router's restart signal (there
  is no way to say "discard" in OpenAI's stream), so a fallback that restarted the answer is
  tried on the next provider, or the stream ends with that error.
- The degraded-answer contract: ``X-LCHA-Degraded`` (plain answers) and an ``lcha`` object —
  ``degraded``, ``replica``, ``zone``, ``request_id``, and the answering ``provider``,
  ``fallback``, ``attempts``, ``continued_after``, ``skipped`` — on the completion, on each
  choice's final chunk and the stream's last chunk; a mid-stream failover is a
  ``choices: []`` chunk with ``lcha.failover`` (the SDK's stream helpers ignore it).

**Served applications** (any other Runnable) keep getting ``{"question", "session_id",
"messages"}`` (``session_id`` from ``user`` or ``X-Session-ID``); what they cannot honour —
tools, ``n`` > 1, ``response_format``, sampling and length parameters, images — is a 400
naming the field.  Their ``model`` is any name (it names the application).

``/v1/embeddings`` serves the LangChain ``Embeddings`` given to
:func:`~langchain_ha.serve.app.create_app` (``embeddings=``, ``LCHA_EMBEDDINGS`` or the served
object's ``embeddings`` attribute), best a
:class:`~langchain_ha.resilience.embeddings.ResilientEmbeddings`: ``encoding_format``
``float`` or ``base64`` (little-endian float32, as OpenAI sends it), ``dimensions`` only
equal to the model's (a model cannot be shortened without knowing it supports that), text
inputs only.  ``usage`` is estimated (LangChain's ``Embeddings`` interface reports none): a
token per four characters, said so in ``lcha.usage_estimated``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import math
import sys
import time
import uuid
from array import array
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Mapping
from dataclasses import dataclass, field
from typing import Any

from fastapi import APIRouter, Request
from langchain_core.embeddings import Embeddings
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.runnables import Runnable, RunnableBinding
from starlette.responses import JSONResponse, Response

from langchain_ha._usage import InvalidInput
from langchain_ha.resilience.chat import ResilientChatModel
from langchain_ha.resilience.continuation import RESTART_KEY
from langchain_ha.resilience.embeddings import ResilientEmbeddings
from langchain_ha.resilience.errors import (
    AllProvidersFailed,
    BreakerOpenError,
    DeadlineExceeded,
    ErrorKind,
    ProviderRefused,
    StreamInterrupted,
    classify,
)
from langchain_ha.resilience.options import CallOptions, Unsupported, bind_options, kind_of
from langchain_ha.serve.answer import (
    Served,
    call_runnable,
    jsonable,
    log_failure,
    request_scope,
    run_keyed,
)
from langchain_ha.serve.jsonbody import limited_json_route
from langchain_ha.serve.openai_chat import (
    ChoiceStream,
    Restarted,
    choice_of,
    model_of,
    prompt_chars,
    provenance,
    refuse_for_app,
    sum_usage,
    text_turns,
    to_messages,
    to_options,
    usage_of,
)
from langchain_ha.serve.openai_wire import (
    BadRequest,
    ChatCompletionRequest,
    EmbeddingRequest,
    error_body,
    error_response,
)
from langchain_ha.serve.streaming import FirstChunkStreamingResponse, sse_data

_DONE = b"data: [DONE]\n\n"
_CHARS_PER_TOKEN = 4


# -- errors -----------------------------------------------------------------------------------


class _OpenAIErrors:
    """:class:`~langchain_ha.serve.answer.ErrorShape` in OpenAI's shape and statuses."""

    def client_error(self, status: int, kind: str, message: str, field: str) -> Response:
        return error_response(status, message, param=field, code=kind)

    def failure(self, request: Request, exc: Exception) -> Response:
        return failure_response(request, exc)


OPENAI_ERRORS = _OpenAIErrors()


def failure_response(request: Request, exc: Exception) -> Response:
    """OpenAI's answer to a request that failed with ``exc``.

    A parameter no provider honours: 400 naming it; the provider rejected the request: 400
    with its message (a prompt its content filter blocked: ``code: content_filter``); every
    provider over its context window: 400 ``context_length_exceeded``; every provider
    rate-limited: 429 with the longest Retry-After; the deadline passed: 504; none could
    answer: 503; anything else: 500 with an error id (the error itself is logged, not sent).
    """
    if isinstance(exc, BadRequest):
        return exc.response()
    if isinstance(exc, Unsupported):
        return error_response(400, f"{exc.option}: no provider serving this model can honour "
                              f"it ({exc})", param=exc.option, code="unsupported_parameter")
    if isinstance(exc, InvalidInput):
        return error_response(400, str(exc), param="messages", code="invalid_input")
    if isinstance(exc, ProviderRefused):
        return error_response(400, f"provider {exc.provider!r} refused the request "
                              f"({exc.reason})", param="messages", code="content_filter")
    if isinstance(exc, AllProvidersFailed):
        return _all_failed(request, exc)
    if isinstance(exc, DeadlineExceeded | TimeoutError):
        error_id = log_failure(request, exc, traceback=False)
        return error_response(504, f"The request deadline passed (error id {error_id}).",
                              code="timeout")
    error_id = log_failure(request, exc, traceback=True)
    return error_response(500, "The server had an error while processing your request "
                          f"(error id {error_id}).")


def _all_failed(request: Request, exc: AllProvidersFailed) -> Response:
    errors = [e for e in exc.exceptions if not isinstance(e, BreakerOpenError)]
    verdicts = [classify(e) for e in errors]
    if verdicts and verdicts[-1].kind is ErrorKind.FATAL and verdicts[-1].status in (400, 422):
        message, param = _provider_detail(errors[-1])
        return error_response(400, f"the provider rejected the request: {message}", param=param,
                              code="provider_rejected")
    if verdicts and verdicts[-1].reason == "deadline":
        error_id = log_failure(request, exc, traceback=False)
        return error_response(504, f"The request deadline passed before a provider answered "
                              f"(error id {error_id}).", code="timeout")
    if verdicts and all(v.kind is ErrorKind.CONTEXT_LENGTH for v in verdicts):
        return error_response(400, "The messages exceed the context window of every provider "
                              "serving this model.", param="messages",
                              code="context_length_exceeded")
    if verdicts and all(v.reason == "rate_limit" for v in verdicts):
        wait = max((v.retry_after or 1.0 for v in verdicts), default=1.0)
        return error_response(429, "Rate limit reached on every provider serving this model.",
                              code="rate_limit_exceeded", retry_after=wait)
    error_id = log_failure(request, exc, traceback=False)
    return error_response(503, f"No provider could answer (error id {error_id}); retry later.",
                          code="unavailable")


def _provider_detail(exc: BaseException) -> tuple[str, str | None]:
    """The message (and ``param``) a provider's error body gave, else the error's text."""
    seen: list[BaseException] = []
    err: BaseException | None = exc
    while err is not None and err not in seen and len(seen) < 4:
        seen.append(err)
        body = getattr(err, "body", None)
        if isinstance(body, Mapping):
            nested = body.get("error")
            inner: Mapping[str, Any] = nested if isinstance(nested, Mapping) else body
            message, param = inner.get("message"), inner.get("param")
            if isinstance(message, str) and message:
                return message[:500], param if isinstance(param, str) else None
        err = err.__cause__
    return str(exc)[:300], None


def _stream_error(exc: Exception, error_id: str) -> bytes:
    """The error event that ends a stream after part of the answer went out."""
    if isinstance(exc, StreamInterrupted):
        message = (f"the answer was interrupted after {len(exc.partial_text)} characters "
                   f"({exc.reason}) and no provider could finish it verifiably; discard the "
                   f"partial answer (error id {error_id})")
        code = "stream_interrupted"
    elif isinstance(exc, Restarted):
        message = ("a fallback provider restarted the answer, which this stream cannot say; "
                   f"discard the partial answer (error id {error_id})")
        code = "stream_interrupted"
    else:
        message = f"the stream failed (error id {error_id}); discard the partial answer"
        code = "stream_failed"
    return b"data: " + error_body(500, message, code=code) + b"\n\n"


# -- what is served ------------------------------------------------------------------------


def is_chat_model(runnable: Runnable[Any, Any]) -> bool:
    """True if ``runnable`` is a chat model (under any bindings): gateway mode."""
    while isinstance(runnable, RunnableBinding):
        runnable = runnable.bound
    return isinstance(runnable, BaseChatModel)


def _model_name(model: Runnable[Any, Any]) -> str | None:
    while isinstance(model, RunnableBinding):
        model = model.bound
    for attr in ("model_name", "model"):
        value = getattr(model, attr, None)
        if isinstance(value, str) and value:
            return value
    return None


@dataclass
class _Plan:
    """One chat completion request, checked and converted."""

    value: Any
    model: Runnable[Any, Any]
    model_id: str
    n: int
    stream: bool
    include_usage: bool
    skipped: dict[str, str] = field(default_factory=dict)


class Gateway:
    """The served Runnable (and embeddings) as OpenAI's API sees them."""

    def __init__(self, runnable: Runnable[Any, Any], served: Served,
                 embeddings: Embeddings | None) -> None:
        self.runnable = runnable
        self.served = served
        self.settings = served.settings
        self.alias = served.settings.model_alias
        self.chat = is_chat_model(runnable)
        self.router = runnable if isinstance(runnable, ResilientChatModel) else None
        self.embeddings = embeddings
        named = getattr(embeddings, "model", None)
        self.embedding_model = named if isinstance(named, str) and named else \
            f"{self.alias}-embeddings"

    # -- models --------------------------------------------------------------------------------

    def cards(self) -> list[dict[str, Any]]:
        """``/v1/models``: the alias, the router's providers, the embedding model."""
        def card(ident: str, **lcha: Any) -> dict[str, Any]:
            return {"id": ident, "object": "model", "created": 0, "owned_by": "langchain-ha",
                    "lcha": {k: v for k, v in lcha.items() if v is not None}}

        if self.router is not None:
            out = [card(self.alias, kind="router",
                        providers=[p.name for p in self.router.providers])]
            out += [card(p.name, kind=kind_of(p.model), model=_model_name(p.model),
                         provider_of=self.alias) for p in self.router.providers]
        elif self.chat:
            out = [card(self.alias, kind=kind_of(self.runnable),
                        model=_model_name(self.runnable))]
        else:
            out = [card(self.alias, kind="application")]
        if self.embeddings is not None:
            endpoints = [e.name for e in self.embeddings.endpoints] if isinstance(
                self.embeddings, ResilientEmbeddings) else None
            out.append(card(self.embedding_model, kind="embeddings", endpoints=endpoints))
        return out

    def _pinned(self, model: str | None) -> str | None:
        """The provider a request is pinned to (None: the router); 404 for an unknown id."""
        if model is None or model == self.alias or not self.chat:
            return None
        if self.router is not None and model in {p.name for p in self.router.providers}:
            return model
        raise BadRequest("model", f"The model `{model}` does not exist or you do not have access "
                         f"to it; GET /v1/models lists what this replica serves.",
                         code="model_not_found", status=404)

    # -- requests ------------------------------------------------------------------------------

    def plan(self, body: ChatCompletionRequest, request: Request) -> _Plan:
        """Check ``body`` against the limits and what is served; raises :class:`BadRequest`."""
        settings = self.settings
        if len(body.messages) > settings.max_messages:
            raise BadRequest("messages", f"messages: at most {settings.max_messages} messages "
                             "(max_messages)", code="limit_exceeded")
        if prompt_chars(body) > settings.max_prompt_chars:
            raise BadRequest("messages", f"messages: at most {settings.max_prompt_chars} "
                             "characters (max_prompt_chars)", code="limit_exceeded")
        n = body.n or 1
        if n > settings.max_n:
            raise BadRequest("n", f"n: at most {settings.max_n} (max_n)", code="limit_exceeded")
        stream = bool(body.stream)
        include_usage = bool(stream and body.stream_options and body.stream_options.include_usage)
        if not self.chat:
            refuse_for_app(body)
            turns = text_turns(body)
            question = next((t["content"] for t in reversed(turns) if t["role"] == "user"),
                            None)
            if question is None:
                raise BadRequest("messages", "messages: at least one message must have role "
                                 "'user'")
            session = body.user or request.headers.get("x-session-id")
            value = {"question": question, "session_id": session, "messages": turns}
            return _Plan(value, self.runnable, body.model or self.alias, 1, stream, False)
        pinned = self._pinned(body.model)
        messages = to_messages(body)
        options = to_options(body, stream=stream)
        try:
            model, skipped = self._bound(options, pinned)
        except Unsupported as exc:
            name = exc.option
            if name == "max_tokens" and body.max_completion_tokens is not None:
                name = "max_completion_tokens"
            raise BadRequest(name, f"{name}: no provider serving `{body.model or self.alias}` "
                             f"can honour it ({exc})", code="unsupported_parameter") from None
        return _Plan(messages, model, body.model or self.alias, n, stream, include_usage,
                     skipped)

    def _bound(self, options: CallOptions, pinned: str | None
               ) -> tuple[Runnable[Any, Any], dict[str, str]]:
        if self.router is not None:
            bound = self.router.with_options(options, only=pinned)
            skipped = {k: v for k, v in bound.excluded.items()
                       if pinned is None or not v.startswith("the request is pinned")}
            return bound, skipped
        return bind_options(self.runnable, options), {}

    # -- answers -------------------------------------------------------------------------------

    def envelope(self, request: Request, degraded: list[str], plan: _Plan) -> dict[str, Any]:
        out = self.served.envelope(request, degraded)
        if plan.skipped:
            out["skipped"] = plan.skipped
        return out

    async def complete(self, plan: _Plan, request: Request) -> Response:
        """A plain (not streamed) completion."""
        async def call() -> list[Any]:
            if plan.n == 1:
                return [await plan.model.ainvoke(plan.value)]
            tasks = [asyncio.ensure_future(plan.model.ainvoke(plan.value))
                     for _ in range(plan.n)]
            try:
                return list(await asyncio.gather(*tasks))
            except BaseException:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                raise

        result = await call_runnable(self.served, request, call, OPENAI_ERRORS)
        if isinstance(result, Response):
            return result
        outputs, degraded = result
        ident, created = _ident()
        if self.chat:
            messages = [o if isinstance(o, AIMessage) else AIMessage(content=answer_text(o))
                        for o in outputs]
            choices = [choice_of(i, m) for i, m in enumerate(messages)]
            usage = sum_usage([usage_of(m.usage_metadata) for m in messages])
            model = model_of(messages[0].response_metadata, plan.model_id)
            lcha = {**provenance(messages[0].response_metadata),
                    **self.envelope(request, degraded, plan)}
            if plan.n > 1:
                lcha["choices"] = [provenance(m.response_metadata) for m in messages]
        else:
            choices = [{"index": 0, "message": {"role": "assistant",
                                                "content": answer_text(outputs[0]),
                                                "refusal": None}, "logprobs": None,
                        "finish_reason": "stop"}]
            usage, model = None, plan.model_id
            lcha = self.envelope(request, degraded, plan)
        body = {"id": ident, "object": "chat.completion", "created": created, "model": model,
                "choices": choices, "usage": usage, "system_fingerprint": None, "lcha": lcha}
        return Response(json.dumps(body), media_type="application/json",
                        headers={"x-lcha-degraded": ",".join(degraded)})

    async def events(self, plan: _Plan, request: Request) -> AsyncIterator[Any]:
        """A streamed completion: OpenAI's chunks, or an error response before any."""
        ident, created = _ident()
        base: dict[str, Any] = {"id": ident, "object": "chat.completion.chunk",
                                "created": created, "model": plan.model_id,
                                "system_fingerprint": None}
        if plan.include_usage:
            base["usage"] = None
        choices = [ChoiceStream(i) for i in range(plan.n)]

        def frame(payload: dict[str, Any], choice: ChoiceStream | None = None) -> bytes:
            model = choice.model if choice is not None and choice.model else plan.model_id
            return sse_data({**base, "model": model, **payload})

        sent = False
        last: ChoiceStream | None = None
        with request_scope(self.served, request) as degraded:
            streams = [self._chunks(plan) for _ in range(plan.n)]
            remaining = plan.n
            try:
                async with contextlib.aclosing(_merged(streams)) as merged:
                    async for i, chunk in merged:
                        choice = choices[i]
                        if chunk is _END:
                            remaining -= 1
                            if remaining:
                                yield frame(choice.end(), choice)
                            else:
                                last = choice
                            continue
                        for payload in choice.feed(chunk):
                            yield frame(payload, choice)
                            sent = True
            except Exception as exc:
                if not sent:
                    yield failure_response(request, exc)
                    return
                error_id = log_failure(request, exc, traceback=not isinstance(
                    exc, StreamInterrupted | Restarted))
                yield _stream_error(exc, error_id)
                return
        found = sorted(degraded)
        self.served.note_degraded(request, found)
        if last is not None:
            final = last.end()
            final["lcha"] = {**final["lcha"], **self.envelope(request, found, plan)}
            yield frame(final, last)
        if plan.include_usage:
            usage = sum_usage([usage_of(c.usage) for c in choices])
            yield sse_data({**base, "choices": [], "usage": usage})
        yield _DONE

    async def _chunks(self, plan: _Plan) -> AsyncIterator[Any]:
        """One answer's chunks, as message chunks (an application's turned into text)."""
        if self.chat:
            async for chunk in plan.model.astream(plan.value):
                yield chunk
            return
        deltas = False
        async for item in plan.model.astream(plan.value):
            if isinstance(item, dict) and RESTART_KEY in item:
                raise Restarted(str(item[RESTART_KEY]))
            if isinstance(item, BaseMessage):
                yield AIMessageChunk(content=item.text)
                continue
            if isinstance(item, dict):
                if isinstance(item.get("delta"), str):
                    deltas = True
                    text = item["delta"]
                elif not deltas and "answer" in item:
                    text = answer_text(item)
                else:
                    continue
            else:
                text = answer_text(item)
            if text:
                yield AIMessageChunk(content=text)

    # -- embeddings ----------------------------------------------------------------------------

    async def embed(self, body: EmbeddingRequest, request: Request) -> Response:
        """``/v1/embeddings``: OpenAI's shape over the served embeddings."""
        embeddings = self.embeddings
        if embeddings is None:
            return error_response(404, "This replica serves no embeddings model.",
                                  param="model", code="model_not_found")
        if body.model is not None and body.model != self.embedding_model:
            return error_response(404, f"The model `{body.model}` does not exist or you do not "
                                  f"have access to it; this replica embeds with "
                                  f"`{self.embedding_model}`.", param="model",
                                  code="model_not_found")
        if body.user is not None:
            return error_response(400, "user: not passed to the embedding providers",
                                  param="user", code="unsupported_parameter")
        texts = [body.input] if isinstance(body.input, str) else body.input
        if not texts:
            return error_response(400, "input: must not be empty", param="input")
        if not all(isinstance(t, str) for t in texts):
            return error_response(400, "input: token arrays are not supported here (the "
                                  "gateway cannot know every endpoint's tokenizer); send text",
                                  param="input", code="unsupported_parameter")
        strings = [str(t) for t in texts]
        if len(strings) > self.settings.max_embedding_inputs:
            return error_response(400, f"input: at most {self.settings.max_embedding_inputs} "
                                  "inputs (max_embedding_inputs)", param="input")
        if sum(map(len, strings)) > self.settings.max_prompt_chars:
            return error_response(400, f"input: at most {self.settings.max_prompt_chars} "
                                  "characters (max_prompt_chars)", param="input")
        if any(not s for s in strings):
            return error_response(400, "input: an input is empty", param="input")
        known = getattr(embeddings, "dimensions", None)
        if body.dimensions is not None and body.dimensions != known:
            return error_response(400, f"dimensions: this model has {known or 'unknown'} "
                                  "dimensions and is not shortened here", param="dimensions",
                                  code="unsupported_parameter")

        async def call() -> tuple[list[list[float]], dict[str, Any]]:
            if isinstance(embeddings, ResilientEmbeddings):
                done = await embeddings.aembed(strings)
                return done.vectors, {"endpoint": done.endpoint, "fallback": done.fallback,
                                      "attempts": done.attempts}
            return await embeddings.aembed_documents(strings), {}

        result = await call_runnable(self.served, request, call, OPENAI_ERRORS)
        if isinstance(result, Response):
            return result
        (vectors, how), degraded = result
        if body.dimensions is not None and any(len(v) != body.dimensions for v in vectors):
            return error_response(500, "the embedding model answered other dimensions than "
                                  "asked", code="wrong_dimensions")
        data = [{"object": "embedding", "index": i,
                 "embedding": _base64(v) if body.encoding_format == "base64" else v}
                for i, v in enumerate(vectors)]
        tokens = sum(max(1, math.ceil(len(s) / _CHARS_PER_TOKEN)) for s in strings)
        payload = {"object": "list", "data": data, "model": self.embedding_model,
                   "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
                   "lcha": {**how, "usage_estimated": True,
                            **self.served.envelope(request, degraded)}}
        return Response(json.dumps(payload), media_type="application/json",
                        headers={"x-lcha-degraded": ",".join(degraded)})


def answer_text(output: Any) -> str:
    """The text of an answer: an AIMessage's content, a str, or a dict's ``answer``."""
    if isinstance(output, BaseMessage):
        return output.text if not isinstance(output.content, str) else output.content
    if isinstance(output, str):
        return output
    if isinstance(output, dict) and isinstance(output.get("answer"), str):
        return str(output["answer"])
    return json.dumps(jsonable(output))


def _ident() -> tuple[str, int]:
    return f"chatcmpl-{uuid.uuid4().hex[:24]}", int(time.time())


def _base64(vector: list[float]) -> str:
    packed = array("f", vector)
    if sys.byteorder != "little":
        packed.byteswap()
    return base64.b64encode(packed.tobytes()).decode()


_END: Any = object()


async def _merged(streams: list[AsyncIterator[Any]]) -> AsyncGenerator[tuple[int, Any], None]:
    """``(choice, chunk)`` from several streams as they come, ``(choice, _END)`` when one
    ends; the first error cancels the others and is raised."""
    if len(streams) == 1:
        async for chunk in streams[0]:
            yield 0, chunk
        yield 0, _END
        return
    queue: asyncio.Queue[tuple[int, Any, BaseException | None]] = asyncio.Queue(maxsize=64)

    async def pump(i: int, stream: AsyncIterator[Any]) -> None:
        try:
            async for chunk in stream:
                await queue.put((i, chunk, None))
        except Exception as exc:
            await queue.put((i, None, exc))
            return
        await queue.put((i, _END, None))

    tasks = [asyncio.ensure_future(pump(i, s)) for i, s in enumerate(streams)]
    try:
        left = len(streams)
        while left:
            i, chunk, exc = await queue.get()
            if exc is not None:
                raise exc
            if chunk is _END:
                left -= 1
            yield i, chunk
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def build_gateway(runnable: Runnable[Any, Any], served: Served,
                  embeddings: Embeddings | None = None) -> APIRouter:
    """The OpenAI-compatible routes around ``runnable`` (and ``embeddings``)."""
    settings = served.settings
    api = APIRouter(route_class=limited_json_route(settings.max_depth, settings.max_nodes))
    gateway = Gateway(runnable, served, embeddings)

    @api.post("/v1/chat/completions", summary="OpenAI-compatible chat completions")
    async def chat(body: ChatCompletionRequest, request: Request) -> Response:
        try:
            plan = gateway.plan(body, request)
        except BadRequest as exc:
            return exc.response()
        if plan.stream:
            return FirstChunkStreamingResponse(gateway.events(plan, request),
                                               media_type="text/event-stream")

        def produce() -> Awaitable[Response]:
            return gateway.complete(plan, request)

        return await run_keyed(served, request, produce, OPENAI_ERRORS)

    @api.get("/v1/models", summary="The models this replica serves (OpenAI-compatible)")
    async def models() -> Response:
        return JSONResponse({"object": "list", "data": gateway.cards()})

    @api.get("/v1/models/{model_id:path}", summary="One model (OpenAI-compatible)")
    async def model(model_id: str) -> Response:
        card = next((c for c in gateway.cards() if c["id"] == model_id), None)
        if card is None:
            return error_response(404, f"The model `{model_id}` does not exist or you do not "
                                  "have access to it.", param="model", code="model_not_found")
        return JSONResponse(card)

    @api.post("/v1/embeddings", summary="OpenAI-compatible embeddings")
    async def embed(body: EmbeddingRequest, request: Request) -> Response:
        def produce() -> Awaitable[Response]:
            return gateway.embed(body, request)

        return await run_keyed(served, request, produce, OPENAI_ERRORS)

    return api


def found_embeddings(runnable: Runnable[Any, Any], given: Embeddings | None
                     ) -> Embeddings | None:
    """The embeddings to serve: ``given``, else the served object's ``embeddings``."""
    if given is not None:
        return given
    attr = getattr(runnable, "embeddings", None)
    return attr if isinstance(attr, Embeddings) else None


__all__ = ["Gateway", "build_gateway", "failure_response", "found_embeddings",
           "is_chat_model"]
