"""Running the served Runnable for one request: deadline, degradation scope, request key,
idempotent replays, error mapping and the answer envelope.

Errors are rendered by an :class:`ErrorShape`: :data:`LCHA_ERRORS` (``{"error": {"type",
"message", ...}}``) for the replica's own routes; the OpenAI-compatible routes bring OpenAI's
(:mod:`langchain_ha.serve.gateway`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from langchain_core.messages import BaseMessage
from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import Response

from langchain_ha._context import caller_scope, request_key_scope
from langchain_ha._usage import InvalidInput
from langchain_ha.resilience.deadline import deadline
from langchain_ha.resilience.degrade import degradation_scope
from langchain_ha.resilience.errors import AllProvidersFailed, DeadlineExceeded
from langchain_ha.serve.gate import route_path
from langchain_ha.serve.idempotency import (
    IdempotencyStore,
    fingerprint,
    renew_while,
    scoped_key,
    wait_or_take_over,
)
from langchain_ha.serve.metrics import ServerMetrics
from langchain_ha.serve.settings import ServeSettings

log = logging.getLogger("langchain_ha.serve")

try:  # optional tracing: spans are no-ops unless the application configures an OTel SDK
    from opentelemetry import trace as _otel

    _tracer: Any = _otel.get_tracer("langchain_ha.serve")
except ImportError:  # pragma: no cover - opentelemetry-api comes with fastapi
    _tracer = None
_KEY_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.:")


@dataclass
class Served:
    """What the routes share: settings, metrics and the idempotency store."""

    settings: ServeSettings
    metrics: ServerMetrics
    idempotency: IdempotencyStore

    def envelope(self, request: Request, degraded: list[str]) -> dict[str, Any]:
        return {"degraded": degraded, "replica": self.settings.replica_id,
                "zone": self.settings.zone, "request_id": request.scope["state"]["request_id"]}

    def note_degraded(self, request: Request, degraded: list[str]) -> None:
        request.scope["state"]["degraded"] = degraded
        for component in degraded:
            self.metrics.degraded.labels(component).inc()


def jsonable(value: Any) -> Any:
    """A JSON-friendly form of a Runnable's output."""
    if isinstance(value, BaseMessage):
        out: dict[str, Any] = {"type": value.type, "content": value.content}
        tool_calls = getattr(value, "tool_calls", None)
        if tool_calls:
            out["tool_calls"] = tool_calls
        if value.response_metadata:
            out["response_metadata"] = jsonable(value.response_metadata)
        return out
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)


def error_response(status: int, kind: str, message: str, **extra: Any) -> Response:
    """An error in the replica's own shape: ``{"error": {"type", "message", ...}}``."""
    headers = {"retry-after": "1"} if status == 503 else None
    body = json.dumps({"error": {"type": kind, "message": message, **extra}})
    return Response(body, status_code=status, media_type="application/json", headers=headers)


class ErrorShape(Protocol):
    """How a family of routes answers a client's mistake, and a request that failed."""

    def client_error(self, status: int, kind: str, message: str, field: str) -> Response:
        """A 4xx naming ``field`` (``kind`` is the replica's label, e.g. ``conflict``)."""
        ...

    def failure(self, request: Request, exc: Exception) -> Response:
        """The answer to a request whose Runnable raised ``exc`` (logged here, by error id)."""
        ...


class _LchaErrors:
    """The replica's own routes: invalid input 422, no provider 503, deadline 504, else 502."""

    def client_error(self, status: int, kind: str, message: str, field: str) -> Response:
        return error_response(status, kind, message, field=field)

    def failure(self, request: Request, exc: Exception) -> Response:
        if isinstance(exc, InvalidInput):
            return error_response(422, "invalid_input", str(exc), field="input")
        if isinstance(exc, AllProvidersFailed):
            return failed(request, 503, "unavailable", "no provider could answer", exc)
        if isinstance(exc, DeadlineExceeded | TimeoutError):
            return failed(request, 504, "timeout", "the request deadline passed", exc)
        return failed(request, 502, "runnable_error", "the application failed", exc)


LCHA_ERRORS: ErrorShape = _LchaErrors()


@contextlib.contextmanager
def request_scope(served: Served, request: Request) -> Iterator[set[str]]:
    """The request's degradation scope (yielded), request key, caller and deadline."""
    with degradation_scope() as degraded, request_key_scope(request_key(request)), \
            caller_scope(request.scope["state"].get("caller")), \
            deadline(served.settings.request_timeout_s):
        yield degraded


def idempotency_key(request: Request) -> str | None:
    """The request's Idempotency-Key, validated (raises ValueError with the reason)."""
    key = request.headers.get("idempotency-key")
    if key is None:
        return None
    if not 1 <= len(key) <= 200 or not set(key) <= _KEY_CHARS:
        raise ValueError("Idempotency-Key must be 1-200 characters of A-Z a-z 0-9 - _ . :")
    return key


def request_key(request: Request) -> str:
    """The request's key for the app's side effects, scoped to the caller.

    From the Idempotency-Key when the client sent one (then it is also the key the answer is
    stored under), else from the request id (a balancer's retry carries the same one).
    """
    state = request.scope["state"]
    client_key = request.headers.get("idempotency-key")
    key = client_key if client_key is not None else "request-id\0" + state["request_id"]
    return scoped_key(state.get("caller"), request.method, route_path(request.scope), key)


async def run_keyed(served: Served, request: Request,
                    produce: Callable[[], Awaitable[Response]],
                    errors: ErrorShape = LCHA_ERRORS) -> Response:
    """Answer once per Idempotency-Key and caller: replays get the stored answer, byte for
    byte; the same key with another body is a 422."""
    try:
        client_key = idempotency_key(request)
    except ValueError as exc:
        return errors.client_error(400, "invalid_header", str(exc), "Idempotency-Key")
    if client_key is None:
        return await produce()
    key = request_key(request)
    body_print = fingerprint(await request.body())
    store = served.idempotency
    ttl = served.settings.idempotency_ttl_s
    lease = served.settings.idempotency_lease_s
    stored = await store.get(key)
    if stored is None and not await store.claim(key, lease):
        stored, took_over = await wait_or_take_over(
            store, key, lease_s=lease, timeout_s=served.settings.request_timeout_s)
        if stored is None and not took_over:
            return errors.client_error(409, "conflict", "a request with this Idempotency-Key is "
                                       "still running; retry later", "Idempotency-Key")
    served.metrics.idempotency.labels(
        store="shared" if store.shared_now else "local",
        outcome="replayed" if stored is not None else "answered").inc()
    if stored is not None:
        if stored.fingerprint != body_print:
            return errors.client_error(422, "idempotency_key_reused", "Idempotency-Key was "
                                       "already used with a different request body; send a "
                                       "new key for a new request", "Idempotency-Key")
        return Response(stored.body, status_code=stored.status, media_type="application/json",
                        headers={**stored.headers, "idempotent-replayed": "true"})
    renewer = asyncio.ensure_future(renew_while(store, key, lease))
    try:
        response = await produce()
    finally:
        renewer.cancel()
        await asyncio.gather(renewer, return_exceptions=True)
    if response.status_code < 500:
        headers = {k: v for k, v in response.headers.items()
                   if k.startswith("x-lcha-degraded")}
        await store.put(key, response.status_code, bytes(response.body), headers, ttl,
                        fingerprint=body_print)
    else:
        await store.release(key)
    return response


async def call_runnable(served: Served, request: Request, call: Callable[[], Awaitable[Any]],
                        errors: ErrorShape = LCHA_ERRORS) -> tuple[Any, list[str]] | Response:
    """Run ``call`` under the request's deadline, key, caller and degradation scope."""
    span_cm = (_tracer.start_as_current_span("lcha.answer", attributes={
        "lcha.route": request.url.path, "lcha.replica": served.settings.replica_id,
        "lcha.zone": served.settings.zone, "lcha.request_id": request.scope["state"]["request_id"],
    }) if _tracer is not None else contextlib.nullcontext())
    with span_cm as span, request_scope(served, request) as degraded:
        try:
            output = await call()
        except Exception as exc:
            return errors.failure(request, exc)
        found = sorted(degraded)
        if span is not None:
            span.set_attribute("lcha.degraded", ",".join(found))
    served.note_degraded(request, found)
    return output, found


def log_failure(request: Request, exc: Exception, *, traceback: bool) -> str:
    """Log a failed request under a new error id (returned: the client gets the id only)."""
    error_id = uuid.uuid4().hex[:12]
    log.error("request %s failed (error id %s): %r", request.scope["state"]["request_id"],
              error_id, exc, exc_info=traceback)
    return error_id


def failed(request: Request, status: int, kind: str, message: str, exc: Exception) -> Response:
    """A 5xx in the replica's shape, the error logged under the id it carries."""
    error_id = log_failure(request, exc, traceback=status == 502)
    return error_response(status, kind, message, error_id=error_id)


def answer_response(served: Served, request: Request, body: dict[str, Any],
                    degraded: list[str]) -> Response:
    payload = json.dumps({**body, **served.envelope(request, degraded)})
    return Response(payload, media_type="application/json",
                    headers={"x-lcha-degraded": ",".join(degraded)})
