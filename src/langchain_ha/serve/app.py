"""``create_app``: any LangChain Runnable as a replica that a load balancer can trust."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from langchain_core.embeddings import Embeddings
from langchain_core.runnables import Runnable
from prometheus_client import CollectorRegistry
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse, Response

from langchain_ha.serve import openai_wire
from langchain_ha.serve.admission import Admission
from langchain_ha.serve.answer import Served
from langchain_ha.serve.drain import DrainState
from langchain_ha.serve.gate import Gate, route_path
from langchain_ha.serve.gateway import build_gateway, found_embeddings
from langchain_ha.serve.health import HealthCheck, breaker_check, build_health
from langchain_ha.serve.idempotency import (
    IdempotencyStore,
    InMemoryIdempotencyStore,
    SharedIdempotencyStore,
)
from langchain_ha.serve.jsonbody import BodyLimitExceeded
from langchain_ha.serve.metrics import ServerMetrics
from langchain_ha.serve.routes import build_router
from langchain_ha.serve.settings import ServeSettings


class ReplicaApp:
    """The ASGI app plus the handles the server and tests need (drain state, metrics)."""

    def __init__(self, fastapi: FastAPI, gate: Gate, drain: DrainState,
                 metrics: ServerMetrics) -> None:
        self.fastapi = fastapi
        self.gate = gate
        self.drain = drain
        self.metrics = metrics
        self.admission = gate.admission
        self.warm: Callable[[], Awaitable[Any]] | None = None
        """The runnable's ``awarm()``: run by ``lcha serve`` before /readyz says ready."""

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self.gate(scope, receive, send)


def create_app(
    runnable: Runnable[Any, Any],
    settings: ServeSettings | None = None,
    *,
    registry: CollectorRegistry | None = None,
    checks: Mapping[str, HealthCheck] | None = None,
    breakers: Mapping[str, Any] | None = None,
    idempotency: IdempotencyStore | None = None,
    embeddings: Embeddings | None = None,
) -> ReplicaApp:
    """Serve ``runnable`` with probes, metrics, auth, limits, idempotency and draining.

    Besides the replica's own routes (``/v1/invoke``, ``/v1/batch``, ``/v1/stream``) it
    answers OpenAI's API (:mod:`langchain_ha.serve.gateway`): chat completions (a faithful
    OpenAI endpoint when ``runnable`` is a chat model), ``/v1/models``, and ``/v1/embeddings``
    over ``embeddings`` (default: the runnable's ``embeddings`` attribute, if it is a
    LangChain ``Embeddings``).

    The app may be mounted under a prefix (``Mount("/api", create_app(...))``) or served
    under uvicorn's ``root_path`` (``LCHA_ROOT_PATH``): auth and limits apply to the route
    path below the prefix (:func:`~langchain_ha.serve.gate.route_path`), the same either way.

    Adaptive admission samples the event loop while the app's lifespan runs (uvicorn runs it;
    mounted without a lifespan, the limit stays at ``max_inflight``).

    ``breakers`` defaults to the runnable's own ``breakers`` attribute (a
    :class:`~langchain_ha.resilience.chat.ResilientChatModel` has one); they feed ``/health``
    and ``/admin/breakers``.
    """
    settings = settings or ServeSettings()
    registry = registry if registry is not None else CollectorRegistry()
    metrics = ServerMetrics(registry)
    drain = DrainState()
    served = Served(settings, metrics, idempotency or InMemoryIdempotencyStore())
    found = breakers if breakers is not None else getattr(runnable, "breakers", None)
    breaker_map: Mapping[str, Any] = found if isinstance(found, Mapping) else {}
    all_checks = dict(checks or {})
    if breaker_map and "llm" not in all_checks:
        all_checks["llm"] = breaker_check(breaker_map)

    admission = Admission(settings.max_inflight, floor=settings.min_inflight,
                          slo_s=settings.admission_slo_s,
                          target_lag_s=settings.target_loop_lag_ms / 1000,
                          adaptive=settings.adaptive_admission)
    metrics.admission_limit.set(int(admission.limit))

    def on_tick(a: Admission) -> None:
        metrics.admission_limit.set(int(a.limit))
        metrics.loop_lag.observe(a.lag_s)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        # The sampler lives as long as the server does (uvicorn runs the lifespan).
        sampler = asyncio.ensure_future(admission.run(on_tick))
        shared = served.idempotency if isinstance(served.idempotency,
                                                  SharedIdempotencyStore) else None
        if shared is not None:
            await shared.open()  # on the loop that serves: psycopg's pools belong to one
        try:
            yield
        finally:
            sampler.cancel()
            await asyncio.gather(sampler, return_exceptions=True)
            if shared is not None:
                await shared.close()

    app = FastAPI(title="langchain-ha replica", docs_url=None, redoc_url=None,
                  openapi_url="/openapi.json", lifespan=lifespan)
    app.include_router(build_router(runnable, served))
    app.include_router(build_gateway(runnable, served, found_embeddings(runnable, embeddings)))
    app.include_router(build_health(served, drain, all_checks, breaker_map, admission))

    def openai_path(request: Request) -> bool:
        return openai_wire.is_openai_path(route_path(request.scope))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> Response:
        if openai_path(request):
            return openai_wire.validation_response(exc.errors(), exc.body)
        fields = [{"field": ".".join(str(p) for p in e["loc"] if p != "body") or "body",
                   "message": e["msg"]} for e in exc.errors()]
        first = fields[0] if fields else {"field": "body", "message": "invalid"}
        return JSONResponse({"error": {"type": "invalid_request", "message":
                                       f"{first['field']}: {first['message']}",
                                       "fields": fields[:10]}}, status_code=422)

    @app.exception_handler(BodyLimitExceeded)
    async def body_limit(request: Request, exc: BodyLimitExceeded) -> Response:
        if openai_path(request):
            return openai_wire.error_response(400, str(exc.detail), code=exc.limit_name)
        return JSONResponse({"error": {"type": "limit_exceeded", "message": str(exc.detail),
                                       "field": "body", "limit": exc.limit}}, status_code=422)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> Response:
        if openai_path(request):
            return Response(openai_wire.error_body(exc.status_code, str(exc.detail)),
                            status_code=exc.status_code, media_type="application/json",
                            headers=exc.headers)
        return JSONResponse({"error": {"type": "http_error", "message": str(exc.detail)}},
                            status_code=exc.status_code, headers=exc.headers)

    drain.started = True
    replica = ReplicaApp(app, Gate(app, settings, drain, metrics, admission), drain, metrics)
    replica.warm = getattr(runnable, "awarm", None)
    return replica
