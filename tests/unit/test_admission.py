"""The adaptive in-flight limit: AIMD on the event loop's lag."""

from __future__ import annotations

import asyncio

import pytest

from langchain_ha.serve.admission import Admission


def test_a_lagging_loop_cuts_the_limit_towards_what_is_in_flight() -> None:
    a = Admission(64, floor=4, target_lag_s=0.05, smoothing=1.0)
    a.observe(0.2, inflight=40)  # 4x the target: the deepest cut, half
    assert a.limit == 20 and a.cuts == 1
    assert not a.allows(20) and a.allows(19)


def test_a_mild_lag_cuts_gently_and_never_below_the_floor() -> None:
    a = Admission(64, floor=4, target_lag_s=0.05, smoothing=1.0)
    a.observe(0.051, inflight=30)
    assert a.limit == pytest.approx(27.0)
    a.observe(1.0, inflight=6)
    assert a.limit == 4


def test_no_second_cut_while_more_is_in_flight_than_the_limit() -> None:
    a = Admission(64, floor=4, target_lag_s=0.05, smoothing=1.0)
    a.observe(0.2, inflight=40)
    a.observe(0.2, inflight=35)  # the admitted ones are still finishing
    assert a.limit == 20 and a.cuts == 1
    a.observe(0.2, inflight=16)
    assert a.limit == 8 and a.cuts == 2


def test_a_quiet_loop_raises_the_limit_by_one_up_to_the_ceiling() -> None:
    a = Admission(10, floor=4, target_lag_s=0.05, smoothing=1.0)
    a.observe(0.5, inflight=10)
    assert a.limit == 5
    for _ in range(3):
        a.observe(0.01, inflight=5)
    assert a.limit == 8
    for _ in range(10):
        a.observe(0.0, inflight=0)
    assert a.limit == 10


def test_a_fixed_limit_ignores_the_lag() -> None:
    a = Admission(8, adaptive=False)
    a.observe(5.0, inflight=8)
    assert a.limit == 8 and a.lag_s == 5.0 and not a.allows(8) and a.allows(7)


def test_one_slow_tick_is_smoothed_away_a_lasting_lag_is_not() -> None:
    a = Admission(64, floor=4, target_lag_s=0.01)  # default smoothing: newest tick 1/10
    for _ in range(20):
        a.observe(0.002, inflight=30)
    a.observe(0.025, inflight=30)  # one callback ran long
    assert a.limit == 64 and a.cuts == 0
    for _ in range(3):
        a.observe(0.025, inflight=30)
    assert a.cuts == 0  # 200 ms of it: still a burst
    for _ in range(3):
        a.observe(0.025, inflight=30)
    assert a.cuts == 1 and a.limit < 30


def test_the_floor_is_capped_by_the_ceiling_and_bad_settings_are_refused() -> None:
    assert Admission(2, floor=4).floor == 2
    with pytest.raises(ValueError, match="positive"):
        Admission(0)
    with pytest.raises(ValueError, match="smoothing"):
        Admission(8, smoothing=0)


async def test_the_sampler_measures_how_late_its_timer_fires() -> None:
    now = [0.0]

    async def late_sleep(s: float) -> None:
        now[0] += s + 0.3  # every tick fires 300 ms late
        await asyncio.sleep(0)

    a = Admission(64, target_lag_s=0.05, interval_s=0.05, smoothing=1.0)
    ticks: list[float] = []

    def on_tick(adm: Admission) -> None:
        ticks.append(adm.lag_s)
        if len(ticks) == 3:
            raise asyncio.CancelledError

    with pytest.raises(asyncio.CancelledError):
        await a.run(lambda: 32, on_tick, clock=lambda: now[0], sleep=late_sleep)
    assert ticks == pytest.approx([0.3, 0.3, 0.3])
    assert a.limit == 16 and a.cuts == 1  # 32 in flight > 16: no second cut
