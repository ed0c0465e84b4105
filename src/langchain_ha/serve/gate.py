"""The ASGI gate in front of every route: request id, auth, body, admission, metrics,
one structured log line per request.

It fails closed.  It judges the *route path*: ``scope["path"]`` without ``root_path``, computed
exactly as Starlette's router does, so mounting the app (``Mount("/api", create_app(...))``)
or running it under uvicorn's ``--root-path`` changes nothing.  Every path is one of:

- a probe (``/livez``, ``/readyz``, ``/health``, ``/metrics``): open, its body never read,
  never shed.  The balancer and Prometheus call them without a client's key; they hold no
  secret (which dependencies are up, request counts).  Keep them off the public ingress;
- ``/admin`` and below: the admin token (an API key is a 403), then the body limits; never
  shed, so an operator can still drain an overloaded replica;
- anything else, unknown paths and ``/openapi.json`` included: a valid API key (401 without,
  so the route table does not leak; with one, the router answers 404 for an unknown path),
  then the body, then admission (a request over the limit may wait for a slot, see
  :mod:`~langchain_ha.serve.admission`; every admitted request's end is reported to it).

Errors on the OpenAI-compatible paths (:data:`~langchain_ha.serve.openai_wire.OPENAI_PATHS`)
are in OpenAI's shape (``{"error": {"message", "type", "param", "code"}}``), elsewhere in the
replica's own.

The body is read *before* admission, within ``max_body_bytes`` (413) and ``body_timeout_s``
(408, and the connection is closed), then replayed to the app: a slow client holds a
connection (bounded by ``max_connections``), never one of the in-flight slots.

Pure ASGI (no BaseHTTPMiddleware): it costs one function call per request, so serving stays
within a few percent of a bare endpoint.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from langchain_ha.serve import openai_wire
from langchain_ha.serve.admission import Admission
from langchain_ha.serve.drain import DrainState
from langchain_ha.serve.metrics import ServerMetrics
from langchain_ha.serve.settings import ServeSettings, caller_id, hash_key

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

access_log = logging.getLogger("langchain_ha.access")
_SANE_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
PROBES = frozenset({"/livez", "/readyz", "/health", "/metrics"})
ROUTES = frozenset({"/v1/invoke", "/v1/batch", "/v1/stream", "/openapi.json"}) | PROBES | \
    openai_wire.OPENAI_PATHS
"""Route paths counted under their own name in the metrics (any other is ``other``)."""


def json_error(status: int, kind: str, message: str, **extra: Any) -> tuple[int, bytes]:
    """A JSON error body: ``{"error": {"type", "message", ...}}``."""
    return status, json.dumps({"error": {"type": kind, "message": message, **extra}}).encode()


def _shaped(openai: bool, status: int, kind: str, message: str, **extra: Any
            ) -> tuple[int, bytes]:
    """:func:`json_error`, or the same error in OpenAI's shape (``kind`` is its ``code``)."""
    if not openai:
        return json_error(status, kind, message, **extra)
    field = extra.get("field")
    return status, openai_wire.error_body(status, message, code=kind,
                                          param=field if isinstance(field, str) else None)


def route_path(scope: Scope) -> str:
    """The path the router matches: ``scope["path"]`` below ``scope["root_path"]``.

    ASGI servers and Starlette's ``Mount`` keep the full path in ``path`` and the prefix in
    ``root_path``; this is Starlette's own rule (``starlette._utils.get_route_path``), so the
    gate and the router never disagree about which route a request reaches.
    """
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    if not root or not path.startswith(root):
        return path
    if path == root:
        return ""
    return path[len(root):] if path[len(root)] == "/" else path


class Gate:
    """Wraps the app; see the module docstring."""

    def __init__(self, app: ASGIApp, settings: ServeSettings, drain: DrainState,
                 metrics: ServerMetrics, admission: Admission) -> None:
        self.app = app
        self.settings = settings
        self.drain = drain
        self.metrics = metrics
        self.admission = admission
        self.key_hashes = settings.key_hashes()
        self.admin_hash = hash_key(settings.admin_token) if settings.admin_token else None
        self.ident = [(b"x-lcha-replica", settings.replica_id.encode()),
                      (b"x-lcha-zone", settings.zone.encode())]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self.app(scope, receive, send)
            return
        if scope["type"] != "http":  # no websocket routes: refuse before anything runs
            await receive()  # websocket.connect
            await send({"type": "websocket.close", "code": 1008})
            return
        path = route_path(scope)
        admin = path == "/admin" or path.startswith("/admin/")
        kind = "probe" if path in PROBES else "admin" if admin else "api"
        openai = openai_wire.is_openai_path(path)
        route = path if path in ROUTES else ("/admin" if admin else "other")
        headers = {k.lower(): v for k, v in scope["headers"]}
        incoming = headers.get(b"x-request-id", b"").decode("latin-1")
        request_id = incoming if _SANE_ID.match(incoming) else uuid.uuid4().hex
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        status = [0]
        extra = [(b"x-request-id", request_id.encode()), *self.ident]

        async def send_with_ids(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
                message["headers"] = [*message.get("headers", []), *extra]
            await send(message)

        began = time.perf_counter()
        try:
            if kind == "probe":
                await self.app(scope, receive, send_with_ids)
                return
            token = _bearer(headers)
            digest = hash_key(token) if token else ""
            refusal = (self._refuse_admin(token, digest) if admin
                       else self._refuse_api(digest, openai))
            if refusal is not None:
                await _respond(send_with_ids, *refusal)
                return
            # Who is calling, for the app and the idempotency keys: only a verified API key
            # names a caller (with no keys configured, every client is the same one).
            verified = digest and self.key_hashes and not admin
            state["caller"] = caller_id(digest) if verified else None
            body = await self._read_body(receive, headers, openai)
            if body is None:  # the client went away mid-body: nobody to answer
                return
            if isinstance(body, tuple):
                await _respond(send_with_ids, *body, close=body[0] == 408)
                return
            if admin:
                await self.app(scope, _replay(body, receive), send_with_ids)
                return
            # Counted for draining while queued too: a draining replica answers what it took.
            self.drain.enter()
            try:
                admitted = self.admission.try_admit()
                if not admitted and self.admission.may_wait(self.settings.request_timeout_s):
                    self.metrics.queued.inc()
                    self.metrics.waiting.inc()
                    try:
                        await self.admission.wait()
                    finally:
                        self.metrics.waiting.dec()
                    admitted = True
                if not admitted:
                    self.metrics.rejected.inc()
                    full = self.admission.active + self.admission.waiting >= self.admission.ceiling
                    why = ("replica at its in-flight limit" if full else
                           "replica too busy to start it in time (predicted start in "
                           f"{self.admission.predicted_start():.2f}s)")
                    await _respond(send_with_ids, *_shaped(
                        openai, 503, "overloaded", f"{why}; retry elsewhere",
                        limit=int(self.admission.limit)), retry_after=True)
                    return
                self.metrics.inflight.inc()
                try:
                    await self.app(scope, _replay(body, receive), send_with_ids)
                finally:
                    self.metrics.inflight.dec()
                    self.admission.release()
            finally:
                self.drain.leave()
        finally:
            elapsed = time.perf_counter() - began
            self.metrics.requests.labels(route, str(status[0])).inc()
            self.metrics.seconds.labels(route).observe(elapsed)
            if kind != "probe":
                access_log.info(json.dumps({
                    "request_id": request_id, "route": route, "method": scope["method"],
                    "status": status[0], "ms": round(elapsed * 1000, 2),
                    "degraded": state.get("degraded", []),
                    "replica": self.settings.replica_id, "zone": self.settings.zone,
                }))

    def _refuse_admin(self, token: str, digest: str) -> tuple[int, bytes] | None:
        if self.admin_hash is None:
            return json_error(403, "forbidden", "admin API disabled: set LCHA_ADMIN_TOKEN")
        if not token:
            return json_error(401, "unauthorized", "admin token required (Bearer)")
        if hmac.compare_digest(digest, self.admin_hash):
            return None
        if digest in self.key_hashes:
            return json_error(403, "forbidden", "an API key cannot use the admin API")
        return json_error(401, "unauthorized", "invalid admin token")

    def _refuse_api(self, digest: str, openai: bool) -> tuple[int, bytes] | None:
        if not self.key_hashes:  # no keys configured: `lcha serve` binds loopback only
            return None
        if not digest:
            return _shaped(openai, 401, "unauthorized" if not openai else "missing_api_key",
                           "API key required: Authorization: Bearer KEY")
        if not any(hmac.compare_digest(digest, h) for h in self.key_hashes):
            return _shaped(openai, 401, "unauthorized" if not openai else "invalid_api_key",
                           "invalid API key")
        return None

    async def _read_body(self, receive: Receive, headers: dict[bytes, bytes], openai: bool
                         ) -> bytes | tuple[int, bytes] | None:
        """The whole body; a (status, error) to answer instead; None if the client left."""
        limit = self.settings.max_body_bytes
        too_large = _shaped(openai, 413, "body_too_large",
                            f"request body exceeds max_body_bytes={limit}",
                            field="body", limit=limit)
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            return too_large
        chunks: list[bytes] = []
        size = 0
        timeout = self.settings.body_timeout_s
        try:
            async with asyncio.timeout(timeout):
                while True:
                    message = await receive()
                    if message["type"] != "http.request":
                        return None
                    chunk = message.get("body", b"")
                    size += len(chunk)
                    if size > limit:
                        return too_large
                    chunks.append(chunk)
                    if not message.get("more_body", False):
                        return b"".join(chunks)
        except TimeoutError:
            return _shaped(openai, 408, "body_timeout",
                           f"request body not received within body_timeout_s={timeout:g}",
                           field="body", limit=timeout)


def _bearer(headers: dict[bytes, bytes]) -> str:
    auth = headers.get(b"authorization", b"").decode("latin-1")
    return auth[7:].strip() if auth[:7].lower() == "bearer " else ""


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


async def _respond(send: Send, status: int, body: bytes, *, retry_after: bool = False,
                   close: bool = False) -> None:
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if retry_after:
        headers.append((b"retry-after", b"1"))
    if close:  # the rest of the body may never come: do not wait for it on this connection
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
