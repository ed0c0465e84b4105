"""The ASGI gate in front of every route: request id, auth, admission, body limit, metrics,
one structured log line per request.

Pure ASGI (no BaseHTTPMiddleware): it costs one function call per request, so serving stays
within a few percent of a bare endpoint.
"""

from __future__ import annotations

import hmac
import json
import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from langchain_ha.serve.admission import Admission
from langchain_ha.serve.drain import DrainState
from langchain_ha.serve.metrics import ServerMetrics
from langchain_ha.serve.settings import ServeSettings, hash_key

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

access_log = logging.getLogger("langchain_ha.access")
_SANE_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
ROUTES = frozenset({"/v1/invoke", "/v1/batch", "/v1/stream", "/v1/chat/completions", "/livez",
                    "/readyz", "/health", "/metrics", "/openapi.json"})


def json_error(status: int, kind: str, message: str, **extra: Any) -> tuple[int, bytes]:
    """A JSON error body: ``{"error": {"type", "message", ...}}``."""
    return status, json.dumps({"error": {"type": kind, "message": message, **extra}}).encode()


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
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        route = path if path in ROUTES else ("/admin" if path.startswith("/admin/") else "other")
        headers = {k.lower(): v for k, v in scope["headers"]}
        incoming = headers.get(b"x-request-id", b"").decode("latin-1")
        request_id = incoming if _SANE_ID.match(incoming) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        status = [0]
        extra = [(b"x-request-id", request_id.encode()), *self.ident]

        async def send_with_ids(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
                message["headers"] = [*message.get("headers", []), *extra]
            await send(message)

        began = time.perf_counter()
        api = path.startswith("/v1/")
        try:
            refusal = self._refuse(path, api, headers)
            if refusal is not None:
                await _respond(send_with_ids, *refusal)
                return
            if not api:
                await self.app(scope, receive, send_with_ids)
                return
            if not self.admission.allows(self.drain.inflight):
                self.metrics.rejected.inc()
                await _respond(send_with_ids, *json_error(
                    503, "overloaded", "replica at its in-flight limit; retry elsewhere",
                    limit=int(self.admission.limit)), retry_after=True)
                return
            self.drain.enter()
            self.metrics.inflight.inc()
            try:
                body = await self._read_body(receive, headers)
                if body is None:
                    await _respond(send_with_ids, *json_error(
                        413, "body_too_large",
                        f"request body exceeds max_body_bytes={self.settings.max_body_bytes}"))
                    return
                await self.app(scope, _replay(body, receive), send_with_ids)
            finally:
                self.drain.leave()
                self.metrics.inflight.dec()
        finally:
            elapsed = time.perf_counter() - began
            self.metrics.requests.labels(route, str(status[0])).inc()
            self.metrics.seconds.labels(route).observe(elapsed)
            if api or route == "/admin":
                access_log.info(json.dumps({
                    "request_id": request_id, "route": route, "method": scope["method"],
                    "status": status[0], "ms": round(elapsed * 1000, 2),
                    "degraded": scope["state"].get("degraded", []),
                    "replica": self.settings.replica_id, "zone": self.settings.zone,
                }))

    def _refuse(
        self, path: str, api: bool, headers: dict[bytes, bytes]
    ) -> tuple[int, bytes] | None:
        if not api and not path.startswith("/admin/"):
            return None
        auth = headers.get(b"authorization", b"").decode("latin-1")
        token = auth[7:].strip() if auth[:7].lower() == "bearer " else ""
        digest = hash_key(token) if token else ""
        if path.startswith("/admin/"):
            if self.admin_hash is None:
                return json_error(403, "forbidden", "admin API disabled: set LCHA_ADMIN_TOKEN")
            if not token:
                return json_error(401, "unauthorized", "admin token required (Bearer)")
            if hmac.compare_digest(digest, self.admin_hash):
                return None
            if digest in self.key_hashes:
                return json_error(403, "forbidden", "an API key cannot use the admin API")
            return json_error(401, "unauthorized", "invalid admin token")
        if not self.key_hashes:
            return None
        if not token:
            return json_error(401, "unauthorized", "API key required: Authorization: Bearer KEY")
        if not any(hmac.compare_digest(digest, h) for h in self.key_hashes):
            return json_error(401, "unauthorized", "invalid API key")
        return None

    async def _read_body(self, receive: Receive, headers: dict[bytes, bytes]) -> bytes | None:
        limit = self.settings.max_body_bytes
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            return None
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


async def _respond(send: Send, status: int, body: bytes, *, retry_after: bool = False) -> None:
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if retry_after:
        headers.append((b"retry-after", b"1"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
