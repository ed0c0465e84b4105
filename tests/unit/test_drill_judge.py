"""The drills' verdicts: what is judged, against what, and what counts as not exercised.

Reports are built by the drills' own summary from recorded outcomes where the figure comes
from outcomes (correctness, send lag, percentiles), so the judge is tested on what a drill
really produces.
"""

from __future__ import annotations

from typing import Any

import pytest

from langchain_ha._percentile import percentile, rank
from langchain_ha.drills.drill import fault_window
from langchain_ha.drills.load import Outcome, summarize
from langchain_ha.drills.mix import order_answer, request_for
from langchain_ha.drills.probe import most_at_once, tally, write_gap_s
from langchain_ha.drills.report import acked_cell, correct_cell, send_lag_cell, verdict_text
from langchain_ha.drills.scenarios import SCENARIOS, judge, verdict

OVERLOAD = SCENARIOS["overload"]


def _outcome(i: int, *, status: int = 200, degraded: tuple[str, ...] = (),
             correct: bool | None = True, start: float = 0.0, sent: float | None = None,
             end: float | None = None) -> Outcome:
    return Outcome(index=i, kind="rag", key=f"k-{i}", start=start,
                   sent=start if sent is None else sent,
                   end=start + 0.1 if end is None else end, status=status,
                   degraded=list(degraded), correct=correct if status == 200 else None)


def _overload(*, shed_p99: float = 70.0, answered_per_s: float = 110.0,
              longest: float = 900.0, without_retry_after: int = 0,
              statuses: dict[str, int] | None = None, shed: int = 4000) -> dict[str, Any]:
    return {
        "rps": 240.0, "requests": {"total": 7200, "ok": 3200, "degraded": 0, "failed": 4000},
        "statuses": statuses or {"200": 3200, "503": 4000}, "availability": 0.44,
        "correctness": {"judged": 3200, "correct": 3200, "ratio": 1.0,
                        "plain": {"judged": 3200, "correct": 3200, "ratio": 1.0},
                        "by_component": {}},
        "latency_ms": {"p50": 30.0, "p95": 500.0, "p99": 880.0, "max": longest},
        "shed": {"count": shed, "p99_ms": shed_p99, "without_retry_after": without_retry_after},
        "served": {"count": 3200, "per_s": answered_per_s, "p50_ms": 360.0, "p99_ms": 930.0},
        "degraded_components": {},
    }


def test_fast_shedding_with_the_capacity_answered_keeps_the_promise() -> None:
    assert judge(OVERLOAD, _overload(), deadline_s=60) == []
    assert verdict(OVERLOAD, _overload(), 60)["verdict"] == "passed"


def test_each_broken_part_of_the_overload_promise_is_named() -> None:
    assert judge(OVERLOAD, _overload(shed_p99=150.0), 60) == [
        "shedding is slow: p99 150.0 ms > 100 ms"]
    assert judge(OVERLOAD, _overload(without_retry_after=3), 60) == [
        "3 shed answers lack Retry-After"]
    assert judge(OVERLOAD, _overload(longest=61_000.0), 60) == [
        "a request waited 61000 ms, past the 60 s deadline"]
    # Shedding everything is fast too; it is not what the promise means.
    assert judge(OVERLOAD, _overload(answered_per_s=100.0), 60) == [
        "answered 100/s, under 90% of the capacity (120/s)"]


def test_overload_is_judged_on_every_status_not_only_503() -> None:
    statuses = {"200": 3200, "502": 3, "503": 3990, "504": 2, "transport error": 5}
    assert judge(OVERLOAD, _overload(statuses=statuses), 60) == [
        "10 requests neither answered nor shed with 503: 3 x 502, 2 x 504, 5 x transport error"]


def test_overload_that_shed_nothing_is_not_exercised_not_passed() -> None:
    v = verdict(OVERLOAD, _overload(shed=0, statuses={"200": 7200}), 60)
    assert v["problems"] == [] and v["passed"] is False
    assert v["verdict"] == "not exercised" and "nothing was shed" in v["not_exercised"]
    assert verdict_text(v).startswith("not exercised: nothing was shed")


def test_a_provider_fault_nobody_noticed_is_not_exercised() -> None:
    outage = SCENARIOS["provider-outage"]
    report = {"rps": 50.0, **summarize([_outcome(i) for i in range(10)]),
              "degraded_components": {}}
    assert verdict(outage, report, 60)["verdict"] == "not exercised"
    report["degraded_components"] = {"primary_llm": 4}
    assert verdict(outage, report, 60)["verdict"] == "passed"


def test_nothing_judged_is_not_judged_rather_than_all_right() -> None:
    s = summarize([_outcome(i, status=503) for i in range(5)])
    assert s["correct_ratio"] is None and s["correctness"]["judged"] == 0
    assert correct_cell(s) == "not judged"
    report = {"rps": 50.0, **s, "degraded_components": {}}
    assert "no answer was judged for correctness" in judge(SCENARIOS["replica-crash"], report, 60)


def test_degraded_answers_are_judged_per_component() -> None:
    outcomes = [
        _outcome(0), _outcome(1),
        _outcome(2, degraded=("primary_llm",)),
        _outcome(3, degraded=("primary_llm",), correct=False),
        _outcome(4, degraded=("history:write",)),
        # Keyword search may cite another document: not blamed on the history fallback.
        _outcome(5, degraded=("retrieval", "history:read"), correct=False),
    ]
    s = summarize(outcomes)
    c = s["correctness"]
    assert (c["judged"], c["correct"]) == (6, 4) and s["correct_ratio"] == pytest.approx(4 / 6,
                                                                                         abs=1e-4)
    assert c["plain"] == {"judged": 2, "correct": 2, "ratio": 1.0}
    assert c["by_component"] == {
        "history:write": {"judged": 1, "correct": 1, "ratio": 1.0},
        "primary_llm": {"judged": 2, "correct": 1, "ratio": 0.5},
        "retrieval": {"judged": 1, "correct": 0, "ratio": 0.0},
    }
    assert [(w["index"], w["degraded"]) for w in s["wrong_answers"]] == [
        (3, ["primary_llm"]), (5, ["retrieval", "history:read"])]
    problems = judge(SCENARIOS["provider-outage"], {"rps": 50.0, **s}, 60)
    assert problems == ["1 of 2 answers degraded by primary_llm wrong (its fallback must "
                        "answer right)"]


def test_latency_counts_from_the_schedule_and_send_lag_is_reported() -> None:
    # The generator fell 400 ms behind for the second request: that is latency too.
    outcomes = [_outcome(0, start=0.0, end=0.1),
                _outcome(1, start=0.02, sent=0.42, end=0.52)]
    s = summarize(outcomes)
    assert s["send_lag_ms"] == {"p99": 400.0, "max": 400.0}
    assert s["latency_ms"]["max"] == pytest.approx(500.0)
    assert send_lag_cell(s) == "400 / 400"


def test_one_nearest_rank_percentile_everywhere() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 0.99) == 99.0 and percentile(values, 0.5) == 50.0
    assert percentile([3.0, 1.0], 0.5) == 1.0 and percentile([], 0.5) is None
    assert rank(0.07, 100) == 7  # 0.07 * 100 is 7.000000000000001 in binary
    # The drills' summary uses it: p50 of two latencies is the smaller one.
    s = summarize([_outcome(0, end=0.1), _outcome(1, end=0.3)])
    assert s["latency_ms"]["p50"] == pytest.approx(100.0)


def test_write_gap_runs_to_the_end_of_the_probe() -> None:
    assert write_gap_s(0.0, [0.1, 0.2, 0.3], 0.35) == pytest.approx(0.1)
    # The database never took a write again after 0.3 s: a 9.7 s gap, not 0.1 s.
    assert write_gap_s(0.0, [0.1, 0.2, 0.3], 10.0) == pytest.approx(9.7)
    assert write_gap_s(0.0, [], 4.0) == pytest.approx(4.0)


def test_acked_writes_are_counted_overall_and_in_the_fault_window() -> None:
    acked = [(1, 1.0), (2, 9.0), (3, 12.0), (4, 30.0)]
    t = tally(acked, {3}, (8.0, 20.0))
    assert t == {"checked": 4, "lost": 1, "checked_in_window": 2, "lost_in_window": 1}
    assert acked_cell({"acked_writes": t}) == "1/4 (1/2)"
    assert tally(acked, set(), None)["checked_in_window"] == 0


def test_fault_window() -> None:
    kill = [{"t": 20.0, "action": "SIGKILL db member"}]
    assert fault_window(kill, 12.0, 60.0) == (15.0, 32.0)
    assert fault_window(kill, None, 60.0) == (15.0, 60.0)  # never recovered: to the end
    cleared = [{"t": 20.0, "action": "provider outage"}, {"t": 40.0, "action": "fault cleared"}]
    assert fault_window(cleared, 30.0, 60.0) == (15.0, 40.0)
    assert fault_window([], None, 60.0) is None


def _available(acked: dict[str, int] | None, **extra: Any) -> dict[str, Any]:
    s = summarize([_outcome(i) for i in range(10)])
    return {"rps": 50.0, **s, "acked_writes": acked,
            "acked_writes_lost": acked["lost"] if acked else 0, "write_gap_s": 3.0,
            "degraded_components": {}, **extra}


def test_database_drills_need_checked_writes_and_name_the_denominator() -> None:
    loss = SCENARIOS["db-primary-loss"]
    good = {"checked": 900, "lost": 0, "checked_in_window": 120, "lost_in_window": 0}
    assert judge(loss, _available(good), 60) == []
    assert judge(loss, _available(None), 60) == ["no acknowledged write was checked"]
    assert judge(loss, _available({**good, "checked_in_window": 0}), 60) == [
        "no acknowledged write in the fault window was checked"]
    assert judge(loss, _available({**good, "lost": 2, "lost_in_window": 2}), 60) == [
        "2 of 900 acknowledged writes lost"]


def test_two_members_acknowledging_at_once_is_a_split_brain() -> None:
    # A failover: the old primary's last write lands before the new one's first.
    handover = [("a", 0.0, 0.1), ("a", 0.2, 0.3), ("b", 5.0, 5.1), ("b", 5.2, 5.3)]
    assert most_at_once(handover) == 1
    # Both acknowledging writes whose flights overlap: two primaries at one moment.
    assert most_at_once([*handover, ("a", 5.05, 5.15)]) == 2
    assert most_at_once([("a", 0.0, 1.0), ("a", 0.5, 1.5)]) == 1  # one member, two writes
    assert most_at_once([]) == 0
    loss = SCENARIOS["primary-freeze"]
    good = {"checked": 900, "lost": 0, "checked_in_window": 120, "lost_in_window": 0}
    split = {"acked": 40, "lost": 3, "primaries_at_once": 2}
    assert judge(loss, _available(good, fence=split), 60) == [
        "3 of 40 writes acknowledged by a member directly were lost",
        "2 members acknowledged writes at once"]


def test_rolling_deploy_must_finish_inside_the_load() -> None:
    deploy = SCENARIOS["rolling-deploy"]
    done = {"status": "done", "generation_before": 1, "generation": 2, "replicas": 3,
            "on_new": 3, "finished_s": 41.2}
    assert judge(deploy, _available(None, rollout=done), 60) == []
    late = {**done, "status": "rolling", "on_new": 1, "finished_s": None}
    assert judge(deploy, _available(None, rollout=late), 60) == [
        "the rollout did not finish inside the load (rolling; 1 of 3 replicas on the new "
        "generation)"]


def test_the_oracle_judges_order_answers_and_their_tool_outage() -> None:
    order = next(request_for(i, "r") for i in range(20) if request_for(i, "r").kind == "tool")
    assert order.order is not None
    right = {"answer": order_answer(order.order)}
    assert order.correct(right, []) and order.correct(right, ["primary_llm"])
    said = {"answer": f"Order {order.order}: the order system said: Tool order_status is "
                      "unavailable right now (reason: 503)."}
    assert order.correct(said, ["tool:order_status"])
    assert not order.correct(said, [])  # an outage nobody recorded is a wrong answer
    assert not order.correct(right, ["tool:order_status"])  # a status it could not have known
    rag = request_for(0, "r")
    assert rag.correct({"answer": "x", "sources": [rag.doc_id]}, ["primary_llm"])
    assert not rag.correct({"answer": "x", "sources": []}, ["history:read"])


def test_a_capacity_step_passes_only_without_replays_and_on_schedule() -> None:
    from langchain_ha.drills.capacity import judge_step

    on_time = [_outcome(i, start=i * 0.01, sent=i * 0.01 + 0.002) for i in range(100)]
    assert judge_step(summarize(on_time), p99_ms=1000) == []
    replayed = [*on_time[:-3], *(_outcome(i) for i in range(3))]
    for o in replayed[-3:]:
        o.replayed = True
    assert judge_step(summarize(replayed), p99_ms=1000) == ["3 idempotent replays"]
    # The generator fell 80 ms behind on 5 % of the sends: the rate was not really offered.
    behind = [_outcome(i, start=i * 0.01, sent=i * 0.01 + (0.08 if i % 20 == 0 else 0.0),
                       end=i * 0.01 + 0.2) for i in range(100)]
    assert judge_step(summarize(behind), p99_ms=1000) == [
        "send lag p99 80.0 ms >= 50 ms (the generator fell behind)"]


def test_a_capacity_step_whose_queue_builds_up_fails_though_its_p99_is_under_the_bound() -> None:
    """Ten seconds at a rate a little over capacity: the p99 stays under the bound, but every
    request waits longer than the one before (the queue grows), so the step fails; a step
    whose latency only wobbles passes."""
    from langchain_ha.drills.capacity import judge_step, queue_growth

    building = [_outcome(i, start=i * 0.01, end=i * 0.01 + 0.15 + i * 0.0008)
                for i in range(1000)]
    growth = queue_growth(building)
    assert growth is not None and growth[1] > 1.5 * growth[0] + 50
    s = summarize(building)
    assert s["latency_ms"]["p99"] < 1000
    assert judge_step(s, 1000, growth) == [
        f"queue building: p50 {growth[0]:g} ms in the first quarter, {growth[1]:g} ms in the last"]
    steady = [_outcome(i, start=i * 0.01, end=i * 0.01 + (0.15 if i % 3 else 0.25))
              for i in range(1000)]
    assert judge_step(summarize(steady), 1000, queue_growth(steady)) == []
    assert queue_growth(steady[:7]) is None  # too short to say


def test_failed_requests_are_listed_with_what_they_got() -> None:
    """A report that says "1 failed" also says what it got: status or transport error, and
    whether the response had begun (a stream cut mid-way, which no balancer can resend)."""
    cut = _outcome(1, status=0)
    cut.begun, cut.error = True, "RemoteProtocolError: incomplete chunked read"
    s = summarize([_outcome(0), cut, _outcome(2, status=503), _outcome(3)])
    assert [(f["index"], f["status"], f["response_begun"]) for f in s["failures"]] == [
        (1, "transport error", True), (2, 503, False)]
    assert s["failures"][0]["error"].startswith("RemoteProtocolError")
    assert s["shed"]["count"] == 1 and s["shed"]["p99_from_sent_ms"] is not None


def test_restarted_streams_are_counted() -> None:
    again = _outcome(1)
    again.restarted = True
    s = summarize([_outcome(0), again])
    assert s["restarted_streams"] == 1 and s["requests"]["failed"] == 0
