"""The overload drill's verdict: fast shedding and the capacity still answered."""

from __future__ import annotations

from typing import Any

from langchain_ha.drills.scenarios import SCENARIOS, judge

OVERLOAD = SCENARIOS["overload"]


def _report(*, shed_p99: float = 70.0, answered_per_s: float = 100.0,
            longest: float = 900.0, without_retry_after: int = 0) -> dict[str, Any]:
    return {
        "rps": 240.0, "requests": {"total": 7200, "ok": 3200, "degraded": 0, "failed": 4000},
        "availability": 0.44, "correct_ratio": 1.0,
        "latency_ms": {"p50": 30.0, "p95": 500.0, "p99": 880.0, "max": longest},
        "shed": {"count": 4000, "p99_ms": shed_p99, "without_retry_after": without_retry_after},
        "served": {"count": 3200, "per_s": answered_per_s, "p50_ms": 360.0, "p99_ms": 930.0},
    }


def test_fast_shedding_with_the_capacity_answered_keeps_the_promise() -> None:
    assert judge(OVERLOAD, _report(), deadline_s=60) == []


def test_each_broken_part_of_the_promise_is_named() -> None:
    assert judge(OVERLOAD, _report(shed_p99=6700.0), 60) == ["shedding is slow: p99 6700.0 ms"]
    assert judge(OVERLOAD, _report(without_retry_after=3), 60) == [
        "3 shed answers lack Retry-After"]
    assert judge(OVERLOAD, _report(longest=61_000.0), 60) == [
        "a request waited 61000 ms, past the 60 s deadline"]
    # Shedding everything is fast too; it is not what the promise means.
    assert judge(OVERLOAD, _report(answered_per_s=20.0), 60) == [
        "answered 20/s, under half the capacity (120/s)"]
