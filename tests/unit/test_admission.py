"""Admission: the lag-driven limit (AIMD) and the queue that takes only what starts in time.

Deterministic ticks: ``observe`` is fed lags and completions; no event-loop timing.
"""

from __future__ import annotations

import asyncio

import pytest

from langchain_ha.serve.admission import ROOM_SHARE, STALL_SHARE, Admission

TICK = 0.05


def _finish(a: Admission, n: int) -> None:
    """``n`` running requests finish."""
    for _ in range(n):
        a.active += 1
        a.release()


def _feed(a: Admission, ticks: int, *, lag_s: float, inflight: int, per_tick: int) -> None:
    """``ticks`` ticks late by ``lag_s``, each with ``per_tick`` completions and ``inflight``
    requests running."""
    for _ in range(ticks):
        _finish(a, per_tick)
        a.observe(lag_s, inflight, TICK)


# -- the limit -------------------------------------------------------------------------------

def test_a_lagging_loop_cuts_the_limit_towards_what_runs() -> None:
    a = Admission(64, floor=4, target_lag_s=0.05, smoothing=1.0)
    a.observe(0.2, inflight=40)  # 4x the target: the deepest cut, half
    assert a.limit == 20 and a.cuts == 1


def test_a_mild_lag_cuts_gently_and_never_below_the_floor() -> None:
    a = Admission(64, floor=4, target_lag_s=0.05, smoothing=1.0)
    a.observe(0.051, inflight=30)
    assert a.limit == pytest.approx(27.0)
    _finish(a, 30)
    a.observe(1.0, inflight=6)
    assert a.limit == 4


def test_no_second_cut_until_as_many_finished_as_ran_at_the_cut() -> None:
    a = Admission(64, floor=4, target_lag_s=0.05, smoothing=1.0)
    a.observe(0.2, inflight=40)
    _finish(a, 39)
    a.observe(0.2, inflight=35)  # one admitted before the cut is still running
    assert a.limit == 20 and a.cuts == 1
    _finish(a, 1)
    a.observe(0.2, inflight=16)
    assert a.limit == 8 and a.cuts == 2


def test_a_queue_refilling_the_slots_does_not_hold_the_limit() -> None:
    """A limit of 35.1 lets 36 run (the queue hands a slot over while fewer than 35.1 run), so
    "no cut while more run than the limit" would never cut again under a queue; what counts
    is that the requests running at the cut have finished.  (The fraction held the limit at
    its first cut for a whole overload, lag or not.)"""
    a = Admission(64, floor=4, target_lag_s=0.05, smoothing=1.0)
    a.observe(0.0555, inflight=39)  # factor 0.9 (capped): 35.1
    assert a.limit == pytest.approx(35.1)
    _finish(a, 39)
    a.observe(0.2, inflight=36)  # all 39 finished, 36 run: cut again, by half
    assert a.limit == pytest.approx(18.0) and a.cuts == 2
    a.observe(0.2, inflight=19)  # those 36 have not finished: no cut
    assert a.cuts == 2


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


def test_one_slow_tick_is_smoothed_away() -> None:
    a = Admission(64, floor=4, target_lag_s=0.01)  # default smoothing: newest tick 1/10
    for _ in range(20):
        a.observe(0.002, inflight=30)
    a.observe(0.025, inflight=30)  # one callback ran long
    assert a.limit == 64 and a.cuts == 0


def test_the_rate_is_completions_per_second_of_busy_time() -> None:
    a = Admission(64, smoothing=1.0, warmup_s=0.5)
    _feed(a, 30, lag_s=0.0, inflight=10, per_tick=2)  # 2 per 50 ms: 40/s
    assert a.rate == pytest.approx(40.0)
    assert a.predicted_start() == pytest.approx(1 / 40)  # nobody queued ahead
    a.observe(0.0, 0, TICK)  # an idle tick says nothing about the rate
    assert a.rate == pytest.approx(40.0)


def test_bad_parameters_are_refused() -> None:
    for kwargs in ({"ceiling": 0}, {"ceiling": 8, "slo_s": 0}, {"ceiling": 8, "smoothing": 0},
                   {"ceiling": 8, "floor": 0}, {"ceiling": 8, "warmup_s": -1}):
        with pytest.raises(ValueError):
            Admission(**kwargs)  # type: ignore[arg-type]


# -- the queue -------------------------------------------------------------------------------

def _cut_to(a: Admission, limit: int) -> None:
    """Make ``limit`` requests run on a loop lagging enough to cut the limit to them."""
    for _ in range(limit):
        assert a.try_admit()
    a.limit = float(limit)


async def test_over_the_limit_a_request_waits_and_starts_when_one_finishes() -> None:
    """The stall the immediate refusal got wrong: over a cut limit, requests that would start
    within the budget wait for a slot instead of getting a 503."""
    a = Admission(64, floor=2, smoothing=1.0, warmup_s=0.5, slo_s=1.0)
    _feed(a, 20, lag_s=0.0, inflight=4, per_tick=2)  # 40/s measured
    _cut_to(a, 4)
    waiting = [asyncio.ensure_future(a.acquire()) for _ in range(10)]  # starts in <= 0.275 s
    await asyncio.sleep(0)
    assert a.waiting == 10 and a.active == 4 and a.refused == 0
    a.release()
    await asyncio.sleep(0)
    assert [w.done() for w in waiting] == [True] + [False] * 9  # first come, first served
    assert a.active == 4 and a.waiting == 9
    for _ in range(9):
        a.release()
    assert all(await asyncio.gather(*waiting))
    assert a.active == 4 and a.waiting == 0


async def test_a_request_predicted_to_start_too_late_is_refused_at_once() -> None:
    a = Admission(64, floor=2, smoothing=1.0, warmup_s=0.5, slo_s=0.25)
    _feed(a, 20, lag_s=0.0, inflight=4, per_tick=2)  # 40/s: the 10th queued starts at 0.25 s
    _cut_to(a, 4)
    waiting = [asyncio.ensure_future(a.acquire()) for _ in range(10)]
    await asyncio.sleep(0)
    assert a.waiting == 10 and a.refused == 0
    assert await a.acquire() is False  # the 11th: 0.275 s, past the budget, no waiting
    assert a.refused == 1 and a.waiting == 10
    assert await a.acquire(budget_s=10.0) is False  # the caller's budget is capped by slo_s
    for w in waiting:
        w.cancel()
    await asyncio.gather(*waiting, return_exceptions=True)
    assert a.waiting == 0 and a.active == 4


async def test_a_short_caller_deadline_tightens_the_budget() -> None:
    a = Admission(64, floor=2, smoothing=1.0, warmup_s=0.5, slo_s=5.0)
    _feed(a, 20, lag_s=0.0, inflight=4, per_tick=2)  # 40/s
    _cut_to(a, 4)
    assert await a.acquire(budget_s=0.01) is False  # 1/40 s > 10 ms
    first = asyncio.ensure_future(a.acquire(budget_s=0.05))
    await asyncio.sleep(0)
    assert a.waiting == 1
    a.release()
    assert await first is True


async def test_the_ceiling_bounds_running_and_queued_together() -> None:
    a = Admission(6, floor=2, smoothing=1.0, warmup_s=0.5, slo_s=60.0)
    _feed(a, 20, lag_s=0.0, inflight=4, per_tick=2)
    _cut_to(a, 4)
    waiting = [asyncio.ensure_future(a.acquire()) for _ in range(2)]
    await asyncio.sleep(0)
    assert a.waiting == 2
    assert await a.acquire() is False  # 4 running + 2 queued = the ceiling
    for _ in range(6):
        a.release() if a.active else None
    assert all(await asyncio.gather(*waiting))


async def test_a_plain_cap_refuses_at_once_without_adaptation() -> None:
    a = Admission(3, adaptive=False, smoothing=1.0, warmup_s=0.0)
    _feed(a, 40, lag_s=1.0, inflight=3, per_tick=1)  # lag is ignored
    assert a.limit == 3
    assert all([await a.acquire() for _ in range(3)])
    assert await a.acquire() is False  # at the ceiling: no queue to wait in
    a.release()
    assert await a.acquire() is True


async def test_a_cold_replica_queues_up_to_the_ceiling() -> None:
    """No rate known yet (a warm-up burst): nothing to predict from, so the queue takes
    requests up to the ceiling rather than refusing what would be answered."""
    a = Admission(8, floor=2, smoothing=1.0)
    _cut_to(a, 2)
    assert a.busy_s < a.warmup_s and a.predicted_start() == 0.0
    waiting = [asyncio.ensure_future(a.acquire()) for _ in range(6)]
    await asyncio.sleep(0)
    assert a.waiting == 6 and await a.acquire() is False
    for _ in range(8):
        a.release() if a.active else None
        await asyncio.sleep(0)
    assert all(await asyncio.gather(*waiting))


async def test_a_stall_with_nothing_completing_queues_up_to_the_ceiling() -> None:
    """A database failover stops completions everywhere: a rate near zero predicts nothing,
    so the queue takes requests (bounded by the ceiling) instead of refusing them on every
    replica."""
    a = Admission(6, floor=2, smoothing=1.0, warmup_s=0.1, slo_s=1.0)
    _feed(a, 20, lag_s=0.0, inflight=2, per_tick=2)  # 40/s before the stall
    _feed(a, 5, lag_s=0.2, inflight=2, per_tick=0)  # then nothing completes
    _cut_to(a, 2)
    assert a.rate * a.slo_s < 1 and a.predicted_start() == 0.0
    waiting = [asyncio.ensure_future(a.acquire()) for _ in range(4)]
    await asyncio.sleep(0)
    assert a.waiting == 4 and await a.acquire() is False  # the ceiling still holds
    for _ in range(6):
        a.release() if a.active else None
        await asyncio.sleep(0)
    assert all(await asyncio.gather(*waiting))


async def test_a_raised_limit_starts_queued_requests() -> None:
    a = Admission(64, floor=2, target_lag_s=0.01, smoothing=1.0, warmup_s=0.5)
    _feed(a, 20, lag_s=0.0, inflight=2, per_tick=2)
    _cut_to(a, 2)
    waiting = [asyncio.ensure_future(a.acquire()) for _ in range(2)]
    await asyncio.sleep(0)
    a.observe(0.0, TICK)  # a quiet tick: the limit grows by one and hands its slot over
    await asyncio.sleep(0)
    assert [w.done() for w in waiting] == [True, False] and a.active == 3
    waiting[1].cancel()
    await asyncio.gather(waiting[1], return_exceptions=True)
    assert a.waiting == 0


async def test_a_caller_gone_after_the_handover_gives_its_slot_back() -> None:
    a = Admission(64, floor=1, smoothing=1.0, warmup_s=0.5)
    _feed(a, 20, lag_s=0.0, inflight=1, per_tick=2)
    _cut_to(a, 1)
    waiter = asyncio.ensure_future(a.acquire())
    await asyncio.sleep(0)
    a.release()  # the slot goes to the waiter (active stays 1) ...
    waiter.cancel()  # ... which is cancelled before it runs
    await asyncio.gather(waiter, return_exceptions=True)
    assert a.active == 0 and a.waiting == 0


async def test_the_sampler_measures_lag_and_tick_length() -> None:
    now = [0.0]

    async def late_sleep(s: float) -> None:
        now[0] += s + 0.3  # every tick fires 300 ms late
        await asyncio.sleep(0)

    a = Admission(64, target_lag_s=0.05, interval_s=0.05, smoothing=1.0)
    assert a.try_admit()
    ticks: list[float] = []

    def on_tick(adm: Admission) -> None:
        ticks.append(adm.lag_s)
        adm.release()  # one completion per 350 ms tick
        assert adm.try_admit()
        if len(ticks) == 3:
            raise asyncio.CancelledError

    with pytest.raises(asyncio.CancelledError):
        await a.run(on_tick, clock=lambda: now[0], sleep=late_sleep)
    assert ticks == pytest.approx([0.3, 0.3, 0.3])
    assert a.rate == pytest.approx(1 / 0.35)
    assert a.busy_s == pytest.approx(3 * 0.35)


# -- the room a balancer may fill --------------------------------------------------------------

def test_the_room_is_the_limit_plus_the_queue_that_starts_in_time() -> None:
    """Cold: the ceiling.  Warm at 40/s with a 1 s objective: ceil(limit) running plus
    floor(40 x 1 x ROOM_SHARE) queued.  It is the least over the last second, so a cut shows
    at once and a recovery only once it has lasted."""
    a = Admission(256, floor=4, smoothing=1.0, warmup_s=0.1, slo_s=1.0, target_lag_s=0.05)
    assert a.room() == 256  # nothing measured yet
    _feed(a, 20, lag_s=0.0, inflight=4, per_tick=2)  # 40 completions/s
    a.limit = 10.5
    assert a.room_now() == 11 + int(40 * 1.0 * ROOM_SHARE)
    _feed(a, 1, lag_s=0.2, inflight=11, per_tick=2)  # lag: the limit is cut to 5.5
    assert a.limit == pytest.approx(5.5)
    assert a.room_now() == 6 + 32 and a.room() == 6 + 32
    a.limit = 200.0  # raised (as quiet ticks would): room() still remembers the cut
    assert a.room_now() == 200 + 32 and a.room() == 6 + 32


def test_without_adaptation_the_room_is_the_ceiling() -> None:
    a = Admission(16, adaptive=False)
    a.observe(1.0, inflight=16)
    assert a.room() == 16


def test_completions_collapsing_against_their_norm_is_a_stall_not_an_overload() -> None:
    """40/s for five seconds, then 6/s: still over one per objective (which alone would
    predict (queue + 1) / 6 s and refuse), but under a third of the slow mean, so it is a
    stall: nothing is predicted, the queue and the room take up to the ceiling.  A steady
    rate, however low, stays predictable."""
    a = Admission(256, floor=4, smoothing=0.5, warmup_s=0.1, slo_s=1.0, target_lag_s=0.05)
    _feed(a, 100, lag_s=0.0, inflight=4, per_tick=2)  # 40/s
    assert a.predictable and a.slow_rate == pytest.approx(40, rel=0.01)
    a.limit = 4.0
    for _ in range(8):  # 6/s: 3 completions per half-second tick
        _finish(a, 3)
        a.observe(0.0, inflight=4, elapsed_s=0.5)
    assert a.rate * a.slo_s >= 1 and a.rate < STALL_SHARE * a.slow_rate
    assert not a.predictable and a.predicted_start() == 0.0 and a.room() == 256
    steady = Admission(256, floor=4, smoothing=0.5, warmup_s=0.1, slo_s=1.0)
    _feed(steady, 100, lag_s=0.0, inflight=4, per_tick=1)  # 20/s throughout
    steady.limit = 4.0
    assert steady.predictable and steady.room() < 256
