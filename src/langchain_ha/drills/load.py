"""Open-loop load through the load balancer: a fixed arrival rate, the drills' request mix.

Requests start on schedule whatever the earlier ones are doing (a closed loop would slow down
with the system and hide its failures).  A request's latency is measured from the moment it
was *scheduled*, not from when the generator got round to sending it: a generator that falls
behind (a busy machine) then shows as latency instead of quietly sending fewer requests at
the system's pace (coordinated omission), and how far behind it fell is reported on its own
as the send lag.  Every request is recorded: scheduled and actual send time, end, status,
degraded components, replica, zone, whether the answer was right (degraded answers are judged
too, by the app's profile: :mod:`langchain_ha.drills.profiles`), whether it was an idempotent
replay, and its Idempotency-Key (the key its chat-history write or agent turn is stored under,
so a drill can check acknowledged writes afterwards).

The generator is a client that does what a chat UI must: a stream cut after its response began
(its replica was SIGKILLed mid-answer: nothing a balancer can resend) is sent again once, with
the same Idempotency-Key, and counted (``restarted_streams``); a second cut fails it.  Nothing
else is retried by the client: a connection that fails before any response is the balancer's to
retry.  Streams carry no chat session, so sending one again writes nothing twice.

The client is aiohttp, not httpx: measured against a balancer that refuses everything
(``python benchmarks/load_client.py 6000 400``), httpx spent 0.96 ms of CPU per request and
aiohttp 0.28 ms.  On a 2-core machine at 240 req/s that difference is a sixth of a core taken from
the system under test.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from multidict import CIMultiDictProxy

from langchain_ha._percentile import percentile
from langchain_ha.drills.mix import exact_fallback
from langchain_ha.drills.profiles import AppProfile, SupportBotProfile

CONNECTIONS = 1024
"""Connections the generator may hold open at once (requests beyond wait for one)."""
REPLAY_HEADER = "idempotent-replayed"
"""The header a replica sets on an answer replayed from the idempotency store."""
WRONG_KEPT = 20
"""Wrong answers a summary lists (the first ones), so a failed correctness check can be read."""
FAILURES_KEPT = 20
"""Failed requests a summary lists (the first ones): what each got, so a failure can be read."""
HISTORY_WRITE = "history:write"
"""The degradation a replica records when a chat turn could not be saved."""


@dataclass
class Outcome:
    """One request as the client saw it (times in seconds from the start of the load)."""

    index: int
    kind: str
    key: str
    start: float
    """When the request was scheduled to be sent: latency counts from here."""
    path: str = ""
    sent: float = 0.0
    """When the generator actually sent it (``sent - start`` is the send lag)."""
    end: float = 0.0
    status: int = 0
    degraded: list[str] = field(default_factory=list)
    replica: str | None = None
    zone: str | None = None
    correct: bool | None = None
    error: str | None = None
    session: str | None = None
    retry_after: str | None = None
    replayed: bool = False
    wrong_answer: str | None = None
    """The start of the answer, kept when it was judged wrong (for the report)."""
    restarted: bool = False
    """A stream cut under way that the client sent again (once, same Idempotency-Key)."""
    begun: bool = False
    """The response had begun (its status line arrived): a transport error after this cut a
    response under way, which no balancer can send again."""

    @property
    def outcome(self) -> str:
        if self.status != 200:
            return "failed"
        return "degraded" if self.degraded else "ok"

    @property
    def latency_ms(self) -> float:
        return (self.end - self.start) * 1000

    @property
    def send_lag_ms(self) -> float:
        return max(0.0, self.sent - self.start) * 1000

    @property
    def acked_write(self) -> bool:
        """The server said this turn was saved (a session, a 200, the write not degraded)."""
        return bool(self.session) and self.status == 200 and HISTORY_WRITE not in self.degraded


TRANSPORT_ERRORS = (aiohttp.ClientError, TimeoutError)
"""What a request can fail with before or while its answer arrives (not an HTTP status)."""


_DEMO = SupportBotProfile()


async def send(session: aiohttp.ClientSession, url: str, api_key: str, i: int, run_id: str,
               t0: float, scheduled: float | None = None,
               profile: AppProfile | None = None) -> Outcome:
    """Send the ``i``-th request of ``profile``'s mix (default: the demo's) and record what
    came back.

    ``scheduled`` (seconds after ``t0``) is when it was due; its latency counts from there.
    """
    req = (profile or _DEMO).request_for(i, run_id)
    key = f"{run_id}-{i}"
    sent = time.monotonic() - t0
    rec = Outcome(index=i, kind=req.kind, key=key,
                  start=sent if scheduled is None else scheduled, sent=sent,
                  path=req.path, session=req.session)
    headers = {"Authorization": f"Bearer {api_key}", "Idempotency-Key": key}
    try:
        if req.kind == "stream":
            try:
                output, meta, status, resp_headers = await _stream(session, url + req.path,
                                                                   req.body, headers, rec)
            except TRANSPORT_ERRORS:
                if not rec.begun:
                    raise
                # Cut under way (its replica died): no balancer can resend a response that has
                # begun, so the client restarts it once, with the same key, as a chat UI would.
                rec.restarted, rec.begun = True, False
                output, meta, status, resp_headers = await _stream(session, url + req.path,
                                                                   req.body, headers, rec)
        else:
            async with session.post(url + req.path, json=req.body, headers=headers) as resp:
                rec.begun = True
                body = _json(await resp.read())
                status, resp_headers = resp.status, resp.headers
            output, meta = body.get("output") or {}, body
        rec.status = status
        rec.retry_after = resp_headers.get("retry-after")
        rec.replayed = resp_headers.get(REPLAY_HEADER) == "true"
        rec.degraded = list(meta.get("degraded") or [])
        rec.replica = meta.get("replica") or rec.replica
        rec.zone = meta.get("zone") or rec.zone
        if status == 200:
            rec.correct = req.correct(output, rec.degraded)
            if not rec.correct:
                rec.wrong_answer = str(output.get("answer") if isinstance(output, dict)
                                       else output)[:200]
        else:
            rec.error = str(meta.get("error") or meta)[:200]
    except TRANSPORT_ERRORS as exc:
        rec.error = f"{type(exc).__name__}: {exc}"[:200]
    rec.end = time.monotonic() - t0
    return rec


async def _stream(session: aiohttp.ClientSession, url: str, body: dict[str, Any],
                  headers: dict[str, str], rec: Outcome,
                  ) -> tuple[dict[str, Any], dict[str, Any], int, CIMultiDictProxy[str]]:
    output: dict[str, Any] = {}
    meta: dict[str, Any] = {}
    event = ""
    async with session.post(url, json=body, headers=headers) as resp:
        rec.begun = True
        rec.replica = resp.headers.get("x-lcha-replica")
        rec.zone = resp.headers.get("x-lcha-zone")
        if resp.status != 200:
            return {}, _json(await resp.read()), resp.status, resp.headers
        async for raw in resp.content:
            line = raw.decode().rstrip("\r\n")
            if line.startswith("event:"):
                event = line[6:].strip()
            elif line.startswith("data:"):
                data = json.loads(line[5:])
                if event == "data" and isinstance(data, dict):
                    output = data
                elif event == "end":
                    meta = data
                elif event == "error":
                    return {}, data, 502, resp.headers
    return output, meta, 200 if meta else 502, resp.headers


def _json(raw: bytes) -> dict[str, Any]:
    try:
        data = json.loads(raw)
    except ValueError:
        return {"error": raw[:200].decode(errors="replace")}
    return data if isinstance(data, dict) else {"error": data}


def client_session(timeout_s: float = 60.0) -> aiohttp.ClientSession:
    """The generator's HTTP client: one pool of :data:`CONNECTIONS`, a per-request timeout."""
    return aiohttp.ClientSession(
        # An idle connection is dropped before uvicorn's 5 s keep-alive ends it (HAProxy's and
        # Caddy's are longer), so the generator never reuses one the server is closing.
        connector=aiohttp.TCPConnector(limit=CONNECTIONS, limit_per_host=0, keepalive_timeout=4,
                                       ssl=ssl.create_default_context()),
        timeout=aiohttp.ClientTimeout(total=timeout_s))


async def run_load(url: str, api_key: str, *, rps: float, duration_s: float,
                   run_id: str | None = None, timeout_s: float = 60.0,
                   t0: float | None = None, profile: AppProfile | None = None,
                   ) -> list[Outcome]:
    """Send ``rps * duration_s`` requests at a fixed arrival rate; every outcome, in order.

    Request ``i`` is due ``i / rps`` seconds after ``t0`` (a ``time.monotonic()`` value;
    default: now), so a caller that times faults from its own ``t0`` shares the clock.
    """
    run_id = run_id or f"d{int(time.time())}"
    async with client_session(timeout_s) as session:
        start = time.monotonic() if t0 is None else t0
        tasks = []
        for i in range(int(rps * duration_s)):
            due = i / rps
            delay = start + due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(send(session, url, api_key, i, run_id, start, due,
                                                    profile)))
        return list(await asyncio.gather(*tasks))


def summarize(outcomes: list[Outcome]) -> dict[str, Any]:
    """Counts by outcome and status, availability, correctness (overall and per degraded
    component), latency from schedule, send lag, replays, shed and served requests."""
    counts = {"total": len(outcomes), "ok": 0, "degraded": 0, "failed": 0}
    statuses: dict[str, int] = {}
    for o in outcomes:
        counts[o.outcome] += 1
        status = str(o.status) if o.status else "transport error"
        statuses[status] = statuses.get(status, 0) + 1
    lat = [o.latency_ms for o in outcomes]
    correctness = judged_correctness(outcomes)
    return {
        "requests": counts,
        "statuses": dict(sorted(statuses.items())),
        "availability": (counts["ok"] + counts["degraded"]) / len(outcomes) if outcomes else 0,
        "correct_ratio": correctness["ratio"],
        "correctness": correctness,
        "latency_ms": {**{p: _ms(percentile(lat, q)) for p, q in
                          (("p50", 0.5), ("p95", 0.95), ("p99", 0.99))},
                       "max": _ms(max(lat, default=None))},
        "send_lag_ms": send_lag(outcomes),
        "replayed": sum(o.replayed for o in outcomes),
        "restarted_streams": sum(o.restarted for o in outcomes),
        "wrong_answers": [{"index": o.index, "kind": o.kind, "degraded": o.degraded,
                           "replica": o.replica, "answer": o.wrong_answer}
                          for o in outcomes if o.status == 200 and not o.correct][:WRONG_KEPT],
        "failures": [{"index": o.index, "kind": o.kind, "t": round(o.start, 2),
                      "status": o.status or "transport error", "response_begun": o.begun,
                      "replica": o.replica, "error": o.error}
                     for o in outcomes if o.outcome == "failed"][:FAILURES_KEPT],
        "shed": _shed([o for o in outcomes if o.status == 503]),
        "served": _served([o for o in outcomes if o.status == 200]),
    }


def judged_correctness(outcomes: list[Outcome]) -> dict[str, Any]:
    """Right answers among the answered requests: overall, for the plain (not degraded) ones
    and per degraded component.  Each ratio is ``correct / judged``, None when nothing was
    judged (not 1.0: no evidence is not a pass).

    A component whose fallback keeps answers exact (:func:`~langchain_ha.drills.mix.
    exact_fallback`: ``primary_llm``, ``tool:*``, ``history:*``) is judged on the answers it
    degraded that lost nothing inexact besides (an answer that also fell back to keyword
    search is not blamed on its chat history); the others on every answer they degraded.
    """
    answered = [o for o in outcomes if o.status == 200]
    by_component: dict[str, list[Outcome]] = {}
    for o in answered:
        exact = all(exact_fallback(c) for c in o.degraded)
        for c in o.degraded:
            if exact or not exact_fallback(c):
                by_component.setdefault(c, []).append(o)
    return {**_ratio(answered),
            "plain": _ratio([o for o in answered if not o.degraded]),
            "by_component": {c: _ratio(os) for c, os in sorted(by_component.items())}}


def _ratio(judged: list[Outcome]) -> dict[str, Any]:
    correct = sum(bool(o.correct) for o in judged)
    return {"judged": len(judged), "correct": correct,
            "ratio": round(correct / len(judged), 4) if judged else None}


def send_lag(outcomes: list[Outcome]) -> dict[str, float | None]:
    """How far behind schedule the generator sent its requests (ms): max and p99."""
    lags = [o.send_lag_ms for o in outcomes]
    return {"p99": _ms(percentile(lags, 0.99)), "max": _ms(max(lags, default=None))}


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def _shed(shed: list[Outcome]) -> dict[str, Any]:
    """Requests refused with 503: how many, how fast (from schedule, the verdict's figure; from
    the actual send, without the generator's own lag), and how many lacked Retry-After."""
    lat = [o.latency_ms for o in shed]
    from_sent = [(o.end - o.sent) * 1000 for o in shed]
    return {"count": len(shed), "p99_ms": _ms(percentile(lat, 0.99)),
            "p99_from_sent_ms": _ms(percentile(from_sent, 0.99)),
            "without_retry_after": sum(1 for o in shed if not o.retry_after)}


def _served(served: list[Outcome]) -> dict[str, Any]:
    """The answered requests alone: what admission control protects (goodput, latency)."""
    lat = [o.latency_ms for o in served]
    span = max((o.end for o in served), default=0.0) - min((o.start for o in served), default=0.0)
    return {"count": len(served), "per_s": round(len(served) / span, 1) if span > 0 else 0.0,
            "p50_ms": _ms(percentile(lat, 0.5)), "p99_ms": _ms(percentile(lat, 0.99))}


def timeline(outcomes: list[Outcome]) -> list[dict[str, Any]]:
    """Per second of scheduled start: ok, degraded and failed counts and the p99 latency."""
    seconds: dict[int, list[Outcome]] = {}
    for o in outcomes:
        seconds.setdefault(int(o.start), []).append(o)
    out = []
    for t in range(max(seconds) + 1 if seconds else 0):
        here = seconds.get(t, [])
        out.append({"t": t, "ok": sum(o.outcome == "ok" for o in here),
                    "degraded": sum(o.outcome == "degraded" for o in here),
                    "failed": sum(o.outcome == "failed" for o in here),
                    "p99_ms": _ms(percentile([o.latency_ms for o in here], 0.99)) or 0.0})
    return out
