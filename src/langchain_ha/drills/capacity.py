"""``lcha bench capacity``: the highest arrival rate whose p99 stays under a bound.

Open-loop steps of rising rate (each ``step_s`` long) through the load balancer, then against
one replica directly; a step passes when no request failed, none was degraded and the p99 is
under ``p99_ms``.  The capacity is the last rate that passed (0 if the first did not).
"""

from __future__ import annotations

from typing import Any

from langchain_ha.drills.load import run_load, summarize


async def ramp(url: str, api_key: str, *, p99_ms: float, start: float, step: float,
               step_s: float, max_rps: float) -> dict[str, Any]:
    """Rising steps until one fails (or ``max_rps``); the capacity and every step."""
    steps: list[dict[str, Any]] = []
    capacity = 0.0
    rps = start
    while rps <= max_rps:
        s = summarize(await run_load(url, api_key, rps=rps, duration_s=step_s,
                                     run_id=f"cap{int(rps)}", timeout_s=30))
        ok = (s["requests"]["failed"] == 0 and s["requests"]["degraded"] == 0
              and s["latency_ms"]["p99"] <= p99_ms)
        steps.append({"rps": rps, "p50_ms": s["latency_ms"]["p50"],
                      "p99_ms": s["latency_ms"]["p99"], "failed": s["requests"]["failed"],
                      "degraded": s["requests"]["degraded"], "passed": ok})
        print(f"  {rps:6.0f} req/s: p50 {s['latency_ms']['p50']:7.1f} ms  p99 "
              f"{s['latency_ms']['p99']:7.1f} ms  failed {s['requests']['failed']}  degraded "
              f"{s['requests']['degraded']}  {'ok' if ok else 'over'}", flush=True)
        if not ok:
            break
        capacity = rps
        rps += step
    return {"capacity_rps": capacity, "p99_bound_ms": p99_ms, "steps": steps}
