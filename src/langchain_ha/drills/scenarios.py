"""The drill scenarios: which fault, when, what it costs, and what the design promises.

Each scenario injects its fault at ``at`` (a fraction of the drill's duration) and, if it is
a lasting fault (a provider outage, a stopped process), clears it at ``clear_at``.  Its
``promise`` is what the acceptance table says must hold:

- ``no-failures``: not one failed request;
- ``available``: availability >= 99.9 %, acknowledged writes checked (overall and in the
  fault window) and none lost, write gap <= 25 s, and never two members acknowledging writes
  at once (the fenced probe);
- ``degraded``: availability >= 99.9 % with answers marked degraded;
- ``shed``: overload: every request is answered or shed with 503 + Retry-After (a 502, 504
  or transport error is a failure), the 503s come fast (p99 < 100 ms), none waits past its
  deadline, and at least 90 % of the capacity is still answered.

Every scenario also requires right answers: every plain answer, and every answer degraded by
a fallback that keeps answers exact (``primary_llm``, ``tool:*``, ``history:*``).  A drill
whose fault had no visible effect (``effect``: the degradation it must cause, or ``shed``) is
"not exercised", not passed: nothing was shown.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from langchain_ha.drills.faults import Injector
from langchain_ha.drills.mix import exact_fallback

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
    needs_lab: bool = False
    """Only for a deployment whose zones are network namespaces (``lcha up --lab``)."""
    needs_delay: bool = False
    """Only where the lab's kernel can delay packets (netem)."""
    needs_streams: bool = False
    """Only for apps that stream their model's answers (the profile's ``streams``)."""
    rejoin_within_s: float | None = None
    """After the fault is cleared, every database member must be back in service (the old
    primary rejoined, rewound if needed) within this many seconds."""
    rps_factor: float = 1.0
    effect: str | None = None
    """What shows the fault took effect: a degraded component some answer must carry, or
    ``shed`` (some request got a 503).  None: the injection itself is the effect (a process
    killed, a switchover or rollout requested; the injector fails if it could not)."""


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
    Scenario("primary-freeze", "SIGSTOP the primary's postgres (alive, holding its sockets, "
             "answering nothing) until late in the drill", Injector.freeze_primary,
             "available", clear_at=0.9, needs_db=True),
    Scenario("zone-partition", "cut the primary's zone off (every packet to and from it "
             "dropped, both ways) for 60 s, then heal", Injector.partition_primary_zone,
             "available", at=0.2, clear_at=0.2 + 60 / 140, needs_db=True, needs_lab=True,
             rejoin_within_s=60.0),
    Scenario("zone-latency", "+200 ms (±20 ms) on every packet leaving a zone without the "
             "primary", Injector.slow_zone, "no-failures", at=0.25, clear_at=0.75,
             needs_lab=True, needs_delay=True),
    Scenario("zone-loss", "drop 10 % of the packets to and from a zone without the primary",
             Injector.lossy_zone, "no-failures", at=0.25, clear_at=0.75, needs_lab=True),
    Scenario("link-flap", "the primary's zone's link cut for 2 s of every 8 s",
             Injector.flap_primary_zone, "no-failures", at=0.2, clear_at=0.8, needs_db=True,
             needs_lab=True),
    Scenario("db-switchover", "planned Patroni switchover to the sync standby",
             Injector.switchover, "available", needs_db=True),
    Scenario("provider-outage", "primary LLM provider answers 500 to every chat call",
             _sim("primary", "provider outage", status=500, error_rate=1.0, routes=["chat"]),
             "no-failures", clear_at=2 / 3, effect="primary_llm"),
    Scenario("provider-slow", "primary LLM provider takes 3 s per answer",
             _sim("primary", "provider slow", latency_ms=3000, routes=["chat"]),
             "no-failures", clear_at=2 / 3, effect="primary_llm"),
    Scenario("provider-ratelimit", "primary LLM provider answers 429 with Retry-After: 5",
             _sim("primary", "provider rate limit", status=429, error_rate=1.0,
                  retry_after_s=5, routes=["chat"]), "no-failures", clear_at=2 / 3,
             effect="primary_llm"),
    Scenario("stream-interrupt", "primary provider's streams die after 3 chunks",
             _sim("primary", "streams cut", disconnect_after_chunks=3, routes=["chat"]),
             "no-failures", clear_at=2 / 3, effect="primary_llm", needs_streams=True),
    Scenario("embeddings-outage", "the embeddings API answers 503",
             _sim("primary", "embeddings outage", status=503, error_rate=1.0,
                  routes=["embeddings"]), "no-failures", clear_at=2 / 3,
             effect="embeddings"),
    Scenario("tool-outage", "the order-status tool API answers 503",
             _sim("primary", "tool outage", status=503, error_rate=1.0, routes=["tools"]),
             "no-failures", clear_at=2 / 3, effect="tool:order_status"),
    Scenario("vector-db-outage", "SIGKILL every database member (answers go LLM-only)",
             Injector.kill_all_members, "degraded", at=0.25, needs_db=True,
             effect="retrieval"),
    Scenario("overload", "twice the measured capacity (lcha bench capacity; else twice "
             "--rps): admission control sheds fast",
             None, "shed", rps_factor=2.0, effect="shed"),
)}


SHED_P99_MS = 100.0
"""Shed answers must come this fast (p99): a refusal that takes long protects nothing."""
ANSWERED_SHARE = 0.9
"""Under overload, the share of the capacity still answered."""


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
    problems += _judge_writes(scenario, report)
    problems += _judge_network(scenario, report)
    problems += _judge_correctness(report.get("correctness") or {})
    if scenario.promise == "shed":
        problems += _judge_shed(scenario, report, deadline_s)
    rollout = report.get("rollout")
    if rollout is not None and rollout.get("finished_s") is None:
        problems.append(f"the rollout did not finish inside the load ({rollout.get('status')}; "
                        f"{rollout.get('on_new', 0)} of {rollout.get('replicas', 0)} replicas "
                        "on the new generation)")
    return problems


def _judge_writes(scenario: Scenario, report: dict[str, Any]) -> list[str]:
    problems = []
    acked = report.get("acked_writes") or {}
    if report.get("acked_writes_lost"):
        problems.append(f"{report['acked_writes_lost']} of {acked.get('checked', '?')} "
                        "acknowledged writes lost")
    if scenario.promise == "available":
        if not acked.get("checked"):
            problems.append("no acknowledged write was checked")
        elif not acked.get("checked_in_window"):
            problems.append("no acknowledged write in the fault window was checked")
        if (report.get("write_gap_s") or 0) > 25:
            problems.append(f"write gap {report['write_gap_s']}s > 25s")
    fence = report.get("fence") or {}
    if fence.get("lost"):
        problems.append(f"{fence['lost']} of {fence['acked']} writes acknowledged by a member "
                        "directly were lost")
    if (fence.get("primaries_at_once") or 0) > 1:
        problems.append(f"{fence['primaries_at_once']} members acknowledged writes at once")
    return problems


def _judge_network(scenario: Scenario, report: dict[str, Any]) -> list[str]:
    problems = []
    if scenario.rejoin_within_s is not None:
        took = report.get("rejoined_s")
        if took is None or took > scenario.rejoin_within_s:
            problems.append(f"the database was not whole again within "
                            f"{scenario.rejoin_within_s:g} s of the heal (took "
                            f"{'more' if took is None else f'{took:g} s'})")
    out, bound = report.get("balancer_out_s"), report.get("balancer_detection_bound_s")
    if scenario.name == "zone-partition" and (out is None or (bound and out > bound)):
        problems.append(f"the balancer still held the cut zone's servers up after "
                        f"{'the watch ended' if out is None else f'{out:g} s'} (its checks' "
                        f"bound: {bound} s)")
    return problems


def _judge_correctness(correctness: dict[str, Any]) -> list[str]:
    """Plain answers and answers of exact fallbacks must all be right; nothing judged is a
    problem too (no evidence is not a pass)."""
    if not correctness.get("judged"):
        return ["no answer was judged for correctness"]
    problems = []
    plain = correctness.get("plain") or {}
    if plain.get("judged") and plain["correct"] < plain["judged"]:
        problems.append(f"{plain['judged'] - plain['correct']} of {plain['judged']} plain "
                        "answers wrong")
    for component, c in (correctness.get("by_component") or {}).items():
        if exact_fallback(component) and c["judged"] and c["correct"] < c["judged"]:
            problems.append(f"{c['judged'] - c['correct']} of {c['judged']} answers degraded "
                            f"by {component} wrong (its fallback must answer right)")
    return problems


def _judge_shed(scenario: Scenario, report: dict[str, Any], deadline_s: float) -> list[str]:
    problems = []
    shed = report.get("shed", {})
    others = {s: n for s, n in (report.get("statuses") or {}).items() if s not in ("200", "503")}
    if others:
        problems.append(f"{sum(others.values())} requests neither answered nor shed with 503: "
                        + ", ".join(f"{n} x {s}" for s, n in others.items()))
    if (report["latency_ms"]["max"] or 0) > deadline_s * 1000:
        problems.append(f"a request waited {report['latency_ms']['max']:.0f} ms, past the "
                        f"{deadline_s:.0f} s deadline")
    if shed.get("without_retry_after"):
        problems.append(f"{shed['without_retry_after']} shed answers lack Retry-After")
    if shed.get("count") and (shed.get("p99_ms") or 0) > SHED_P99_MS:
        problems.append(f"shedding is slow: p99 {shed['p99_ms']} ms > {SHED_P99_MS:g} ms")
    # Shedding everything would be fast too: the capacity must still be answering.
    capacity = report["rps"] / scenario.rps_factor
    answered = (report.get("served") or {}).get("per_s", 0.0)
    if answered < ANSWERED_SHARE * capacity:
        problems.append(f"answered {answered:g}/s, under {ANSWERED_SHARE:.0%} of the capacity "
                        f"({capacity:g}/s)")
    return problems


def exercised(scenario: Scenario, report: dict[str, Any]) -> str | None:
    """Why the drill showed nothing (its fault had no visible effect), or None if it did."""
    if scenario.effect is None:
        return None
    if scenario.effect == "shed":
        if not (report.get("shed") or {}).get("count"):
            return ("nothing was shed: the load stayed under capacity (lcha bench capacity "
                    "measures it)")
        return None
    if not (report.get("degraded_components") or {}).get(scenario.effect):
        return f"no answer was degraded by {scenario.effect}: the fault had no visible effect"
    return None


def verdict(scenario: Scenario, report: dict[str, Any], deadline_s: float) -> dict[str, Any]:
    """``problems``, ``not_exercised`` and the ``verdict``: ``failed`` if a promise broke,
    else ``not exercised`` if the fault had no effect, else ``passed`` (``passed``: bool)."""
    problems = judge(scenario, report, deadline_s)
    idle = exercised(scenario, report)
    name = "failed" if problems else "not exercised" if idle else "passed"
    return {"problems": problems, "not_exercised": idle, "verdict": name,
            "passed": name == "passed"}
