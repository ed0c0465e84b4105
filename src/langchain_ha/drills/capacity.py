"""``lcha bench capacity``: the highest arrival rate whose p99 stays under a bound.

Open-loop steps of rising rate (each ``step_s`` long) through the load balancer, then against
one replica directly.  A step passes when no request failed, none was degraded, none was an
idempotent replay (every ramp and every step sends keys of its own, so a replay means an
answer was not computed), the p99 (from the scheduled send time) is under ``p99_ms`` and the
load generator kept to its schedule: the p99 of its send lag stayed under
:data:`MAX_SEND_LAG_MS` (a generator that falls behind sends fewer requests than the rate
claims, so the rate would not have been measured).  The p99, not the max: one scheduler stall
of a shared 2-core machine delays a handful of sends, whose latency then counts from their
schedule anyway; a generator that cannot keep the rate lags on many.  The max is reported.
A step also fails when a queue builds up inside it (the median latency of its last quarter
grew past :data:`GROWTH_FACTOR` times its first quarter's, plus :data:`GROWTH_SLACK_MS`): every
step starts with an empty system, so a rate a little over capacity still keeps its p99 under
the bound for ten seconds while its queue grows.

Then the capacity found is **held** for ``hold_s`` (60 s, as long as a drill's load) and
judged the same way; if it does not hold, the next lower step is held instead, and so on.
Without the hold the ramp reported 120 req/s for a deployment whose queue grew from the second
second at that rate (p99 330 ms then, 2.2 s after forty seconds, 115 req/s answered), and a
30 s hold passed 120 on a deployment that answered 108.5 req/s of 120 over 45 s: a drill run at
"twice the capacity" then judged the deployment against a rate it had never sustained.  The
capacity is the highest rate that held (0 if none did).
"""

from __future__ import annotations

import secrets
from typing import Any

from langchain_ha._percentile import percentile
from langchain_ha.drills.load import Outcome, run_load, summarize
from langchain_ha.drills.profiles import AppProfile

MAX_SEND_LAG_MS = 50.0
GROWTH_FACTOR = 1.5
GROWTH_SLACK_MS = 50.0
"""A step's last-quarter median latency may be up to ``GROWTH_FACTOR`` x its first quarter's
plus this before the step counts as a queue building up (the slack absorbs noise at the low
latencies of a light load)."""


def queue_growth(outcomes: list[Outcome]) -> tuple[float, float] | None:
    """Median latency (ms) of the requests scheduled in the first and in the last quarter of a
    step, or None for a step too short to say (fewer than 8 requests)."""
    if len(outcomes) < 8:
        return None
    ordered = sorted(outcomes, key=lambda o: o.start)
    quarter = len(ordered) // 4
    first = percentile([o.latency_ms for o in ordered[:quarter]], 0.5)
    last = percentile([o.latency_ms for o in ordered[-quarter:]], 0.5)
    assert first is not None and last is not None
    return round(first, 1), round(last, 1)


def judge_step(s: dict[str, Any], p99_ms: float,
               growth: tuple[float, float] | None = None) -> list[str]:
    """Why a step (its :func:`~langchain_ha.drills.load.summarize`, and its
    :func:`queue_growth`) did not pass."""
    why = []
    if s["requests"]["failed"]:
        why.append(f"{s['requests']['failed']} failed")
    if s["requests"]["degraded"]:
        why.append(f"{s['requests']['degraded']} degraded")
    if s["replayed"]:
        why.append(f"{s['replayed']} idempotent replays")
    if (s["latency_ms"]["p99"] or 0) > p99_ms:
        why.append(f"p99 {s['latency_ms']['p99']} ms > {p99_ms:g} ms")
    lag = s["send_lag_ms"]["p99"] or 0
    if lag >= MAX_SEND_LAG_MS:
        why.append(f"send lag p99 {lag} ms >= {MAX_SEND_LAG_MS:g} ms (the generator fell "
                   "behind)")
    if growth is not None:
        first, last = growth
        if last > GROWTH_FACTOR * first + GROWTH_SLACK_MS:
            why.append(f"queue building: p50 {first:g} ms in the first quarter, {last:g} ms in "
                       "the last")
    return why


async def _step(url: str, api_key: str, rps: float, duration_s: float, p99_ms: float,
                run_id: str, *, held: bool = False,
                profile: AppProfile | None = None) -> dict[str, Any]:
    outcomes = await run_load(url, api_key, rps=rps, duration_s=duration_s, run_id=run_id,
                              timeout_s=30, profile=profile)
    s, growth = summarize(outcomes), queue_growth(outcomes)
    why = judge_step(s, p99_ms, growth)
    what = f"held {duration_s:g} s" if held else "step"
    print(f"  {rps:6.0f} req/s {what}: p50 {s['latency_ms']['p50']} ms  p99 "
          f"{s['latency_ms']['p99']} ms  failed {s['requests']['failed']}  degraded "
          f"{s['requests']['degraded']}  replayed "
          f"{s['replayed']}  send lag p99/max {s['send_lag_ms']['p99']}/"
          f"{s['send_lag_ms']['max']} ms  {'ok' if not why else 'over: ' + '; '.join(why)}",
          flush=True)
    return {"rps": rps, "duration_s": duration_s, "requests": s["requests"]["total"],
            "p50_ms": s["latency_ms"]["p50"], "p99_ms": s["latency_ms"]["p99"],
            "quarter_p50_ms": list(growth) if growth else None,
            "answered_per_s": s["served"]["per_s"],
            "failed": s["requests"]["failed"], "degraded": s["requests"]["degraded"],
            "replayed": s["replayed"], "statuses": s["statuses"],
            "send_lag_ms": s["send_lag_ms"], "passed": not why, "why": why}


async def ramp(url: str, api_key: str, *, p99_ms: float, start: float, step: float,
               step_s: float, max_rps: float, hold_s: float = 60.0,
               label: str = "ramp", profile: AppProfile | None = None) -> dict[str, Any]:
    """Rising steps until one fails (or ``max_rps``), then the hold; the capacity, every step
    and every hold.

    ``profile`` is the app's request mix (default: the demo's).  ``label`` names the target
    (``cluster``, ``replica``) in the Idempotency-Keys, which also carry a random run id: no
    two ramps, targets, steps or holds share a key.
    """
    steps: list[dict[str, Any]] = []
    rps = start
    run = secrets.token_hex(4)
    while rps <= max_rps:
        st = await _step(url, api_key, rps, step_s, p99_ms, f"cap-{label}-{run}-{rps:g}",
                        profile=profile)
        steps.append(st)
        if not st["passed"]:
            break
        rps += step
    holds: list[dict[str, Any]] = []
    capacity = 0.0
    passed = [st["rps"] for st in steps if st["passed"]]
    for rps in reversed(passed):
        hold = await _step(url, api_key, rps, hold_s, p99_ms, f"cap-{label}-{run}-hold-{rps:g}",
                           held=True, profile=profile)
        holds.append(hold)
        if hold["passed"]:
            capacity = rps
            break
    held = holds[-1] if holds and holds[-1]["passed"] else None
    return {"capacity_rps": capacity, "p99_bound_ms": p99_ms,
            "max_send_lag_ms": MAX_SEND_LAG_MS, "hold_s": hold_s,
            "replayed": sum(st["replayed"] for st in steps + holds),
            "send_lag_ms_at_capacity": held["send_lag_ms"] if held else None,
            "steps": steps, "holds": holds}
