"""Liveness, readiness, deep health, metrics and the admin routes.

``/readyz`` never looks at shared dependencies: if it failed whenever the LLM provider or the
database was down, every replica would leave the balancer at once.  ``/health`` reports every
dependency and answers 503 only when an *essential* one is down (the replica cannot answer).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from fastapi import APIRouter
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest
from starlette.responses import JSONResponse, Response

from langchain_ha.serve.admission import Admission
from langchain_ha.serve.answer import Served
from langchain_ha.serve.drain import DrainState

Status = Literal["ok", "degraded", "down"]
CheckFn = Callable[[], Awaitable[tuple[Status, dict[str, Any]]]]


@dataclass(frozen=True)
class HealthCheck:
    """A dependency check; ``essential`` means the replica cannot answer without it."""

    check: CheckFn
    essential: bool = False
    timeout_s: float = 2.0


def breaker_check(breakers: Mapping[str, Any]) -> HealthCheck:
    """LLM providers: all breakers open → down; some open → degraded."""

    async def check() -> tuple[Status, dict[str, Any]]:
        states = {name: b.state.value for name, b in breakers.items()}
        open_ = [n for n, s in states.items() if s == "open"]
        status: Status = "down" if states and len(open_) == len(states) else (
            "degraded" if open_ else "ok")
        return status, {"breakers": states}

    return HealthCheck(check, essential=True)


async def _run(name: str, hc: HealthCheck) -> tuple[str, dict[str, Any]]:
    began = time.perf_counter()
    try:
        status, detail = await asyncio.wait_for(hc.check(), hc.timeout_s)
    except Exception as exc:
        status, detail = "down", {"error": type(exc).__name__}
    ms = round((time.perf_counter() - began) * 1000, 2)
    return name, {"status": status, "latency_ms": ms, "essential": hc.essential, **detail}


def build_health(served: Served, drain: DrainState, checks: Mapping[str, HealthCheck],
                 breakers: Mapping[str, Any], admission: Admission | None = None
                 ) -> APIRouter:
    """The probe, metrics and admin routes.  ``/readyz`` reports ``admission``'s room (see
    :meth:`~langchain_ha.serve.admission.Admission.room`) for the balancer."""
    api = APIRouter()
    settings = served.settings

    @api.get("/livez", summary="The process's event loop answers")
    async def livez() -> dict[str, str]:
        return {"status": "ok"}

    @api.get("/readyz", summary="This replica can take traffic (never depends on shared deps)")
    async def readyz() -> Response:
        # Load never makes a replica unready: the balancer would take every replica out at
        # once under overload and queue requests itself, when admission control answers a
        # fast 503 + Retry-After instead.
        reason = "starting" if not drain.started else "draining" if drain.draining else None
        body = {"ready": reason is None, "reason": reason, "inflight": drain.inflight,
                "room": admission.room() if admission is not None else None,
                "replica": settings.replica_id, "zone": settings.zone}
        return JSONResponse(body, status_code=200 if reason is None else 503)

    @api.get("/health", summary="Every dependency: ok, degraded or down")
    async def health() -> Response:
        results = dict(await asyncio.gather(*(_run(n, hc) for n, hc in checks.items())))
        cannot = [n for n, r in results.items() if r["essential"] and r["status"] == "down"]
        overall = "down" if cannot else (
            "degraded" if any(r["status"] != "ok" for r in results.values()) else "ok")
        body = {"status": overall, "can_answer": not cannot, "dependencies": results,
                "replica": settings.replica_id, "zone": settings.zone,
                "draining": drain.draining}
        return JSONResponse(body, status_code=503 if cannot else 200)

    @api.get("/metrics", summary="Prometheus metrics")
    async def metrics() -> Response:
        served.metrics.draining.set(1 if drain.draining else 0)
        body = generate_latest(served.metrics.registry)
        if served.metrics.registry is not REGISTRY:  # the router's metrics and process stats
            body += generate_latest(REGISTRY)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    @api.post("/admin/drain", summary="Leave the balancer (readyz 503); keep serving")
    async def admin_drain() -> dict[str, Any]:
        drain.begin_drain()
        return {"draining": True, "inflight": drain.inflight}

    @api.get("/admin/breakers", summary="Circuit breakers of the LLM providers")
    async def admin_breakers() -> dict[str, Any]:
        return {name: b.snapshot() for name, b in breakers.items()}

    @api.post("/admin/breakers/{name}/reset", summary="Close a circuit breaker")
    async def admin_reset(name: str) -> Response:
        breaker = breakers.get(name)
        if breaker is None:
            return JSONResponse({"error": {"type": "not_found", "message":
                                           f"no breaker named {name!r}"}}, status_code=404)
        breaker.reset()
        return JSONResponse(breaker.snapshot())

    return api
