"""Open-loop load through the load balancer: a fixed arrival rate, a realistic mix.

Requests start on schedule whatever the earlier ones are doing (a closed loop would slow down
with the system and hide its failures).  The mix: RAG questions whose right source is known,
order-status questions answered through the tool, multi-turn conversations (so chat-history
writes happen) and streamed answers.  Every request is recorded: start, end, status, degraded
components, replica, zone, whether the answer was right, and its Idempotency-Key (the key its
chat-history write is stored under, so a drill can check acknowledged writes afterwards).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from langchain_ha.demo.corpus import load_questions
from langchain_ha.providers.simulator import order_status

CLIENTS = 16
CLIENT_CONNECTIONS = 64
KINDS = ("rag", "rag", "rag", "chat", "chat", "tool", "rag", "stream", "chat", "tool")


@dataclass
class Outcome:
    """One request as the client saw it."""

    index: int
    kind: str
    key: str
    start: float
    path: str = ""
    end: float = 0.0
    status: int = 0
    degraded: list[str] = field(default_factory=list)
    replica: str | None = None
    zone: str | None = None
    correct: bool | None = None
    error: str | None = None
    session: str | None = None
    retry_after: str | None = None

    @property
    def outcome(self) -> str:
        if self.status != 200:
            return "failed"
        return "degraded" if self.degraded else "ok"

    @property
    def latency_ms(self) -> float:
        return (self.end - self.start) * 1000

    @property
    def acked_write(self) -> bool:
        """The server said this turn was saved (a session, a 200, history not degraded)."""
        return bool(self.session) and self.status == 200 and "history" not in self.degraded


@dataclass(frozen=True)
class Request:
    kind: str
    path: str
    body: dict[str, Any]
    check: Callable[[dict[str, Any]], bool]
    session: str | None = None


def request_for(i: int, run_id: str) -> Request:
    """The ``i``-th request of the mix (deterministic)."""
    questions = load_questions()
    kind = KINDS[i % len(KINDS)]
    question, doc_id = questions[(i * 7) % len(questions)]
    rag_ok = _cites(doc_id)
    if kind == "tool":
        order = f"AB-{1000 + (i * 37) % 9000}"
        expected = str(order_status(order)["status"])
        return Request(kind, "/v1/invoke", {"input": {"question": f"Where is my order {order}?"}},
                       lambda out: expected in str(out.get("answer", "")))
    if kind == "chat":
        session = f"{run_id}-s{i % 40}"
        return Request(kind, "/v1/invoke", {"input": {"question": question,
                                                      "session_id": session}},
                       rag_ok, session=session)
    if kind == "stream":
        return Request(kind, "/v1/stream", {"input": {"question": question}}, rag_ok)
    return Request(kind, "/v1/invoke", {"input": {"question": question}}, rag_ok)


def _cites(doc_id: str) -> Callable[[dict[str, Any]], bool]:
    return lambda out: doc_id in out.get("sources", []) or f"[doc:{doc_id}]" in str(
        out.get("answer", ""))


async def send(client: httpx.AsyncClient, url: str, api_key: str, i: int, run_id: str,
               t0: float) -> Outcome:
    """Send the ``i``-th request and record what came back."""
    req = request_for(i, run_id)
    key = f"{run_id}-{i}"
    rec = Outcome(index=i, kind=req.kind, key=key, start=time.monotonic() - t0,
                  path=req.path, session=req.session)
    headers = {"Authorization": f"Bearer {api_key}", "Idempotency-Key": key}
    try:
        if req.kind == "stream":
            output, meta, status, retry_after = await _stream(client, url + req.path, req.body,
                                                              headers)
        else:
            resp = await client.post(url + req.path, json=req.body, headers=headers)
            status, body = resp.status_code, _json(resp)
            output, meta = body.get("output") or {}, body
            retry_after = resp.headers.get("retry-after")
        rec.status = status
        rec.retry_after = retry_after
        rec.degraded = list(meta.get("degraded") or [])
        rec.replica, rec.zone = meta.get("replica"), meta.get("zone")
        if status == 200:
            rec.correct = bool(req.check(output)) if isinstance(output, dict) else False
        else:
            rec.error = str(meta.get("error") or meta)[:200]
    except httpx.HTTPError as exc:
        rec.error = f"{type(exc).__name__}: {exc}"[:200]
    rec.end = time.monotonic() - t0
    return rec


async def _stream(client: httpx.AsyncClient, url: str, body: dict[str, Any],
                  headers: dict[str, str],
                  ) -> tuple[dict[str, Any], dict[str, Any], int, str | None]:
    output: dict[str, Any] = {}
    meta: dict[str, Any] = {}
    event = ""
    async with client.stream("POST", url, json=body, headers=headers) as resp:
        if resp.status_code != 200:
            await resp.aread()
            return {}, _json(resp), resp.status_code, resp.headers.get("retry-after")
        async for line in resp.aiter_lines():
            if line.startswith("event:"):
                event = line[6:].strip()
            elif line.startswith("data:"):
                data = json.loads(line[5:])
                if event == "data" and isinstance(data, dict):
                    output = data
                elif event == "end":
                    meta = data
                elif event == "error":
                    return {}, data, 502, None
    return output, meta, 200 if meta else 502, None


def _json(resp: httpx.Response) -> dict[str, Any]:
    try:
        data = resp.json()
    except ValueError:
        return {"error": resp.text[:200]}
    return data if isinstance(data, dict) else {"error": data}


async def run_load(url: str, api_key: str, *, rps: float, duration_s: float,
                   run_id: str | None = None, timeout_s: float = 60.0) -> list[Outcome]:
    """Send ``rps * duration_s`` requests at a fixed arrival rate; every outcome, in order."""
    run_id = run_id or f"d{int(time.time())}"
    # Several small pools: one pool's bookkeeping grows with (queued requests x connections),
    # which at a few thousand requests in flight made the generator the bottleneck.
    limits = httpx.Limits(max_connections=CLIENT_CONNECTIONS,
                          max_keepalive_connections=CLIENT_CONNECTIONS)
    clients = [httpx.AsyncClient(timeout=timeout_s, limits=limits) for _ in range(CLIENTS)]
    try:
        t0 = time.monotonic()
        tasks = []
        for i in range(int(rps * duration_s)):
            delay = t0 + i / rps - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            client = clients[i % CLIENTS]
            tasks.append(asyncio.create_task(send(client, url, api_key, i, run_id, t0)))
        return list(await asyncio.gather(*tasks))
    finally:
        for client in clients:
            await client.aclose()


def summarize(outcomes: list[Outcome]) -> dict[str, Any]:
    """Counts by outcome, availability, right-answer ratio and latency percentiles."""
    counts = {"total": len(outcomes), "ok": 0, "degraded": 0, "failed": 0}
    for o in outcomes:
        counts[o.outcome] += 1
    judged = [o for o in outcomes if o.status == 200 and not o.degraded]
    lat = sorted(o.latency_ms for o in outcomes)
    return {
        "requests": counts,
        "availability": (counts["ok"] + counts["degraded"]) / len(outcomes) if outcomes else 0,
        "correct_ratio": sum(bool(o.correct) for o in judged) / len(judged) if judged else 1.0,
        "latency_ms": {**{p: round(_pct(lat, q), 1) for p, q in
                          (("p50", 0.5), ("p95", 0.95), ("p99", 0.99))},
                       "max": round(lat[-1], 1) if lat else 0.0},
        "shed": _shed([o for o in outcomes if o.status == 503]),
        "served": _served([o for o in outcomes if o.status == 200]),
    }


def _shed(shed: list[Outcome]) -> dict[str, Any]:
    lat = sorted(o.latency_ms for o in shed)
    return {"count": len(shed), "p99_ms": round(_pct(lat, 0.99), 1),
            "without_retry_after": sum(1 for o in shed if not o.retry_after)}


def _served(served: list[Outcome]) -> dict[str, Any]:
    """The answered requests alone: what admission control protects (goodput, latency)."""
    lat = sorted(o.latency_ms for o in served)
    span = max((o.end for o in served), default=0.0) - min((o.start for o in served), default=0.0)
    return {"count": len(served), "per_s": round(len(served) / span, 1) if span > 0 else 0.0,
            "p50_ms": round(_pct(lat, 0.5), 1), "p99_ms": round(_pct(lat, 0.99), 1)}


def _pct(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    return values[min(len(values) - 1, int(q * len(values)))]


def timeline(outcomes: list[Outcome]) -> list[dict[str, Any]]:
    """Per second of start time: ok, degraded and failed counts and the p99 latency."""
    seconds: dict[int, list[Outcome]] = {}
    for o in outcomes:
        seconds.setdefault(int(o.start), []).append(o)
    out = []
    for t in range(max(seconds) + 1 if seconds else 0):
        here = seconds.get(t, [])
        lat = sorted(o.latency_ms for o in here)
        out.append({"t": t, "ok": sum(o.outcome == "ok" for o in here),
                    "degraded": sum(o.outcome == "degraded" for o in here),
                    "failed": sum(o.outcome == "failed" for o in here),
                    "p99_ms": round(_pct(lat, 0.99), 1)})
    return out
