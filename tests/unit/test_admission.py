"""Admission on the predicted wait: deterministic ticks, no event loop timing."""

from __future__ import annotations

import asyncio
import math

import pytest

from langchain_ha.serve.admission import Admission

TICK = 0.05


def _feed(a: Admission, ticks: int, *, lag_s: float, inflight: int, per_tick: int) -> None:
    """``ticks`` ticks, each late by ``lag_s``, with ``per_tick`` completions and
    ``inflight`` requests running."""
    for _ in range(ticks):
        for _ in range(per_tick):
            a.finished()
        a.observe(lag_s, inflight, TICK)


def test_a_cold_replica_applies_only_the_ceiling() -> None:
    """Nothing completed yet (a warm-up burst on a lagging loop): no prediction, so nothing
    under the ceiling is refused."""
    a = Admission(64, slo_s=1.0, target_lag_s=0.01, smoothing=1.0)
    _feed(a, 10, lag_s=0.5, inflight=40, per_tick=0)  # 0.5 s of busy ticks < warmup_s
    assert a.saturated
    assert a.predicted_wait(40) == 0.0
    assert a.allows(63) and not a.allows(64)
    assert a.limit == 64


def test_the_rate_is_completions_per_second_of_busy_time() -> None:
    a = Admission(64, smoothing=1.0)
    _feed(a, 30, lag_s=0.0, inflight=10, per_tick=2)  # 2 per 50 ms: 40/s
    assert a.rate == pytest.approx(40.0)
    assert a.predicted_wait(19) == pytest.approx(0.5)  # (19 + 1) / 40
    a.observe(0.0, 0, TICK)  # an idle tick changes nothing
    assert a.rate == pytest.approx(40.0)


def test_a_saturated_replica_refuses_what_it_would_answer_too_late() -> None:
    """40 completions/s on a lagging loop: with a 1 s objective, up to 39 ahead is admitted
    ((39 + 1) / 40 = 1 s), 40 ahead is not; a caller's shorter deadline tightens it."""
    a = Admission(64, slo_s=1.0, target_lag_s=0.01, smoothing=1.0)
    _feed(a, 30, lag_s=0.05, inflight=30, per_tick=2)
    assert a.saturated
    assert a.allows(39) and not a.allows(40)
    assert a.limit == 40
    assert a.allows(9, budget_s=0.25) and not a.allows(10, budget_s=0.25)
    assert not a.allows(0, budget_s=0.0)


def test_a_failover_stall_within_budget_sheds_nothing() -> None:
    """The case the lag-only design got wrong: a replica taking a dead one's share while a
    replacement starts lags far past the target, but with 8-20 in flight at 35/s the predicted
    wait is 0.26-0.6 s, inside the objective: every request is admitted."""
    a = Admission(64, slo_s=1.0, target_lag_s=0.01, smoothing=0.05)
    _feed(a, 40, lag_s=0.002, inflight=5, per_tick=2)  # steady: 40/s, no lag
    for inflight in range(8, 21):  # the stall: lag 40 ms, fewer completions
        _feed(a, 4, lag_s=0.04, inflight=inflight, per_tick=1)  # 20/s at worst
        assert a.saturated or inflight < 10
        assert a.allows(inflight), (inflight, a.rate, a.predicted_wait(inflight))


def test_a_slow_provider_is_not_a_reason_to_shed() -> None:
    """Requests waiting on a provider (no lag) complete slowly: the predicted wait is long,
    but admitting more slows nobody down, so only the ceiling refuses."""
    a = Admission(64, slo_s=1.0, target_lag_s=0.01, smoothing=1.0)
    _feed(a, 40, lag_s=0.001, inflight=50, per_tick=1)  # 20/s, 50 in flight: 2.5 s wait
    assert a.predicted_wait(50) > 2
    assert not a.saturated
    assert a.allows(63) and not a.allows(64)


def test_nothing_completing_on_a_saturated_loop_refuses_everything_but_the_ceiling_first(
) -> None:
    a = Admission(64, slo_s=1.0, target_lag_s=0.01, smoothing=1.0, warmup_s=0.1)
    _feed(a, 5, lag_s=0.2, inflight=30, per_tick=0)
    assert a.rate == 0 and a.predicted_wait(0) == math.inf
    assert not a.allows(0)


def test_a_fixed_cap_when_not_adaptive() -> None:
    a = Admission(8, adaptive=False, smoothing=1.0)
    _feed(a, 40, lag_s=1.0, inflight=8, per_tick=0)
    assert a.allows(7) and not a.allows(8)
    assert a.limit == 8


def test_bad_parameters_are_refused() -> None:
    with pytest.raises(ValueError):
        Admission(0)
    with pytest.raises(ValueError):
        Admission(8, slo_s=0)
    with pytest.raises(ValueError):
        Admission(8, smoothing=0)


async def test_the_sampler_measures_lag_and_tick_length() -> None:
    now = [0.0]

    async def late_sleep(s: float) -> None:
        now[0] += s + 0.3  # every tick fires 300 ms late
        await asyncio.sleep(0)

    a = Admission(64, target_lag_s=0.05, interval_s=0.05, smoothing=1.0)
    ticks: list[float] = []

    def on_tick(adm: Admission) -> None:
        ticks.append(adm.lag_s)
        adm.finished()  # one completion per 350 ms tick
        if len(ticks) == 3:
            raise asyncio.CancelledError

    with pytest.raises(asyncio.CancelledError):
        await a.run(lambda: 32, on_tick, clock=lambda: now[0], sleep=late_sleep)
    assert ticks == pytest.approx([0.3, 0.3, 0.3])
    assert a.rate == pytest.approx(1 / 0.35)
    assert a.busy_s == pytest.approx(3 * 0.35)
