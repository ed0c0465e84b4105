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
The capacity is the last rate that passed (0 if the first did not).
"""

from __future__ import annotations

import secrets
from typing import Any

from langchain_ha.drills.load import run_load, summarize

MAX_SEND_LAG_MS = 50.0


def judge_step(s: dict[str, Any], p99_ms: float) -> list[str]:
    """Why a step (its :func:`~langchain_ha.drills.load.summarize`) did not pass."""
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
    return why


async def ramp(url: str, api_key: str, *, p99_ms: float, start: float, step: float,
               step_s: float, max_rps: float, label: str = "ramp") -> dict[str, Any]:
    """Rising steps until one fails (or ``max_rps``); the capacity and every step.

    ``label`` names the target (``cluster``, ``replica``) in the Idempotency-Keys, which
    also carry a random run id: no two ramps, targets or steps share a key.
    """
    steps: list[dict[str, Any]] = []
    capacity = 0.0
    rps = start
    run = secrets.token_hex(4)
    while rps <= max_rps:
        s = summarize(await run_load(url, api_key, rps=rps, duration_s=step_s,
                                     run_id=f"cap-{label}-{run}-{rps:g}", timeout_s=30))
        why = judge_step(s, p99_ms)
        steps.append({"rps": rps, "requests": s["requests"]["total"],
                      "p50_ms": s["latency_ms"]["p50"], "p99_ms": s["latency_ms"]["p99"],
                      "failed": s["requests"]["failed"], "degraded": s["requests"]["degraded"],
                      "replayed": s["replayed"], "statuses": s["statuses"],
                      "send_lag_ms": s["send_lag_ms"],
                      "passed": not why, "why": why})
        print(f"  {rps:6.0f} req/s: p50 {s['latency_ms']['p50']} ms  p99 "
              f"{s['latency_ms']['p99']} ms  failed {s['requests']['failed']}  degraded "
              f"{s['requests']['degraded']}  replayed {s['replayed']}  send lag p99/max "
              f"{s['send_lag_ms']['p99']}/{s['send_lag_ms']['max']} ms  "
              f"{'ok' if not why else 'over: ' + '; '.join(why)}",
              flush=True)
        if why:
            break
        capacity = rps
        rps += step
    passed = [st for st in steps if st["passed"]]
    return {"capacity_rps": capacity, "p99_bound_ms": p99_ms,
            "max_send_lag_ms": MAX_SEND_LAG_MS,
            "replayed": sum(st["replayed"] for st in steps),
            "send_lag_ms_at_capacity": passed[-1]["send_lag_ms"] if passed else None,
            "steps": steps}
