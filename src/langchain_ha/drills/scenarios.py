"""The drill scenarios: which fault, when, what it costs, and what the design promises.

Each scenario injects its fault at ``at`` (a fraction of the drill's duration) and, if it is
a lasting fault (a provider outage, a stopped process), clears it at ``clear_at``.  Its
``promise`` is what the acceptance table says must hold:

- ``no-failures``: not one failed request;
- ``available``: availability >= 99.9 %, no acknowledged write lost, write gap <= 25 s;
- ``degraded``: availability >= 99.9 % with answers marked degraded;
- ``shed``: overload: shed requests get 503 + Retry-After fast, none waits past its deadline,
  and at least half the capacity is still answered.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from langchain_ha.drills.faults import Injector

Inject = Callable[[Injector], dict[str, str]]


@dataclass(frozen=True)
class Scenario:
    """One drill: a fault, its timing and the promise it is judged by."""

    name: str
    summary: str
    inject: Inject | None
    promise: str
    at: float = 1 / 3
    clear_at: float | None = None
    needs_db: bool = False
    rps_factor: float = 1.0


def _sim(name: str, label: str, **faults: Any) -> Inject:
    return lambda inj: inj.provider_fault(name, label, **faults)


SCENARIOS: dict[str, Scenario] = {s.name: s for s in (
    Scenario("replica-crash", "SIGKILL one replica", Injector.kill_replica, "no-failures"),
    Scenario("replica-hang", "SIGSTOP one replica (a gray failure: sockets open, no answers)",
             Injector.stop_replica, "no-failures", clear_at=0.9),
    Scenario("rolling-deploy", "replace every replica, zone by zone, with draining",
             Injector.rollout, "no-failures", at=0.1),
    Scenario("zone-outage", "SIGKILL every process of the primary's zone (replica, DB member "
             "with its raft DCS member)", Injector.zone_outage, "available", needs_db=True),
    Scenario("db-primary-loss", "SIGKILL the primary's guardian, Patroni and postgres",
             Injector.kill_primary, "available", needs_db=True),
    Scenario("db-switchover", "planned Patroni switchover to the sync standby",
             Injector.switchover, "available", needs_db=True),
    Scenario("provider-outage", "primary LLM provider answers 500 to every chat call",
             _sim("primary", "provider outage", status=500, error_rate=1.0, routes=["chat"]),
             "no-failures", clear_at=2 / 3),
    Scenario("provider-slow", "primary LLM provider takes 3 s per answer",
             _sim("primary", "provider slow", latency_ms=3000, routes=["chat"]),
             "no-failures", clear_at=2 / 3),
    Scenario("provider-ratelimit", "primary LLM provider answers 429 with Retry-After: 5",
             _sim("primary", "provider rate limit", status=429, error_rate=1.0,
                  retry_after_s=5, routes=["chat"]), "no-failures", clear_at=2 / 3),
    Scenario("stream-interrupt", "primary provider's streams die after 3 chunks",
             _sim("primary", "streams cut", disconnect_after_chunks=3, routes=["chat"]),
             "no-failures", clear_at=2 / 3),
    Scenario("embeddings-outage", "the embeddings API answers 503",
             _sim("primary", "embeddings outage", status=503, error_rate=1.0,
                  routes=["embeddings"]), "no-failures", clear_at=2 / 3),
    Scenario("tool-outage", "the order-status tool API answers 503",
             _sim("primary", "tool outage", status=503, error_rate=1.0, routes=["tools"]),
             "no-failures", clear_at=2 / 3),
    Scenario("vector-db-outage", "SIGKILL every database member (answers go LLM-only)",
             Injector.kill_all_members, "degraded", at=0.25, needs_db=True),
    Scenario("overload", "twice the measured capacity (lcha bench capacity; else twice "
             "--rps): admission control sheds fast",
             None, "shed", rps_factor=2.0),
)}


def judge(scenario: Scenario, report: dict[str, Any], deadline_s: float) -> list[str]:
    """What broke the scenario's promise (empty: kept)."""
    req = report["requests"]
    problems: list[str] = []
    if scenario.promise == "no-failures" and req["failed"]:
        problems.append(f"{req['failed']} failed requests (promise: none)")
    if scenario.promise in ("available", "degraded") and report["availability"] < 0.999:
        problems.append(f"availability {report['availability']:.4f} < 0.999")
    if scenario.promise == "degraded" and not req["degraded"]:
        problems.append("no answer was marked degraded")
    if report.get("acked_writes_lost"):
        problems.append(f"{report['acked_writes_lost']} acknowledged writes lost")
    if scenario.promise == "available" and (report.get("write_gap_s") or 0) > 25:
        problems.append(f"write gap {report['write_gap_s']}s > 25s")
    if report["correct_ratio"] < 1.0:
        problems.append(f"correct ratio {report['correct_ratio']} < 1.0 (non-degraded answers)")
    if scenario.promise == "shed":
        shed = report.get("shed", {})
        if report["latency_ms"]["max"] > deadline_s * 1000:
            problems.append(f"a request waited {report['latency_ms']['max']:.0f} ms, past the "
                            f"{deadline_s:.0f} s deadline")
        if shed.get("without_retry_after"):
            problems.append(f"{shed['without_retry_after']} shed answers lack Retry-After")
        if shed.get("count") and shed.get("p99_ms", 0) > 1000:
            problems.append(f"shedding is slow: p99 {shed['p99_ms']} ms")
        # Shedding everything would be fast too: the capacity must still be answering.
        capacity = report["rps"] / scenario.rps_factor
        answered = (report.get("served") or {}).get("per_s", 0.0)
        if answered < 0.5 * capacity:
            problems.append(f"answered {answered:g}/s, under half the capacity "
                            f"({capacity:g}/s)")
    return problems
