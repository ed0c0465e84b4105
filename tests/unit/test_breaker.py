"""Circuit breaker state machine, with a fake clock (no real waiting)."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from langchain_ha.resilience._clock import FakeClock
from langchain_ha.resilience.breaker import (
    BreakerConfig,
    BreakerState,
    CircuitBreaker,
    InMemoryBreakerStore,
)


def warm(cfg: BreakerConfig | None = None, clock: FakeClock | None = None,
         **kw: object) -> CircuitBreaker:
    """A breaker that has already seen its first success (past the cold gate)."""
    b = CircuitBreaker("p", cfg or BreakerConfig(**kw), clock=clock or FakeClock())  # type: ignore[arg-type]
    p = b.try_acquire()
    assert p is not None
    p.success(0.01)
    return b


def fail(b: CircuitBreaker, n: int = 1, **kw: object) -> None:
    for _ in range(n):
        p = b.try_acquire()
        assert p is not None
        p.failure(0.01, **kw)  # type: ignore[arg-type]


def succeed(b: CircuitBreaker, n: int = 1, duration: float = 0.01) -> None:
    for _ in range(n):
        p = b.try_acquire()
        assert p is not None
        p.success(duration)


def test_opens_on_failure_rate_only_after_minimum_calls() -> None:
    b = warm(window_size=10, minimum_calls=5, failure_rate_threshold=0.5)
    fail(b, 2)  # 2 failures of 3 calls: rate 0.67 but below minimum_calls
    assert b.state is BreakerState.CLOSED
    succeed(b, 1)
    fail(b, 1)  # 3 failures of 5 calls
    assert b.state is BreakerState.OPEN
    assert b.try_acquire() is None


def test_slow_calls_open_the_breaker() -> None:
    b = warm(minimum_calls=4, slow_call_duration_s=1.0, slow_call_rate_threshold=0.75)
    succeed(b, 3, duration=2.0)
    assert b.state is BreakerState.OPEN


def test_time_window_forgets_old_failures() -> None:
    clock = FakeClock()
    b = warm(BreakerConfig(window="time", window_size=10, minimum_calls=4), clock)
    fail(b, 2)
    clock.advance(11)
    succeed(b, 2)
    fail(b, 1)
    assert b.state is BreakerState.CLOSED  # 1 failure of 3 recent calls
    assert b.snapshot()["calls_in_window"] == 3


def test_open_duration_grows_on_repeated_trips_and_is_capped() -> None:
    clock = FakeClock()
    cfg = BreakerConfig(minimum_calls=1, open_duration_s=5, open_duration_multiplier=2,
                        open_duration_max_s=12, half_open_max_calls=1)
    b = warm(cfg, clock)
    fail(b)
    waits = []
    for _ in range(4):
        waits.append(b.retry_in())
        clock.advance(b.retry_in() or 0)
        assert b.state is BreakerState.HALF_OPEN
        fail(b)  # the probe fails: open again, longer
    assert waits == [5, 10, 12, 12]


def test_half_open_admits_a_bounded_number_of_probes_and_closes_on_success() -> None:
    clock = FakeClock()
    b = warm(BreakerConfig(minimum_calls=1, half_open_max_calls=2, open_duration_s=1), clock)
    fail(b)
    clock.advance(1)
    first, second = b.try_acquire(), b.try_acquire()
    assert first and second and b.try_acquire() is None
    first.success(0.01)
    assert b.state is BreakerState.HALF_OPEN
    second.success(0.01)
    assert b.state is BreakerState.CLOSED


def test_retry_after_opens_at_once_for_that_long() -> None:
    b = warm()
    fail(b, retry_after=7.0)
    assert b.state is BreakerState.OPEN and b.retry_in() == 7.0


def test_cold_gate_limits_probes_until_the_first_success() -> None:
    b = CircuitBreaker("p", BreakerConfig(cold_probes=2), clock=FakeClock())
    first, second = b.try_acquire(), b.try_acquire()
    assert first and second and b.try_acquire() is None
    first.success(0.01)
    assert all(b.try_acquire() for _ in range(10))  # proven: no gate any more


def test_cold_provider_failing_every_probe_opens() -> None:
    b = CircuitBreaker("p", BreakerConfig(cold_probes=3), clock=FakeClock())
    fail(b, 3)
    assert b.state is BreakerState.OPEN


async def test_acquire_waits_at_the_cold_gate_for_the_first_outcome() -> None:
    b = CircuitBreaker("p", BreakerConfig(cold_probes=1))
    probe = b.try_acquire()
    assert probe is not None
    waiter = asyncio.create_task(b.acquire(5.0))
    await asyncio.sleep(0.01)
    assert not waiter.done()
    probe.success(0.01)
    assert await asyncio.wait_for(waiter, 1) is not None


def test_release_and_double_reports_record_nothing() -> None:
    b = warm(minimum_calls=1)
    p = b.try_acquire()
    assert p is not None
    p.release()
    p.failure(0.1)  # ignored: already settled
    assert b.state is BreakerState.CLOSED


def test_reset_closes() -> None:
    b = warm(minimum_calls=1)
    fail(b)
    b.reset()
    assert b.state is BreakerState.CLOSED


@pytest.mark.parametrize("field", ["window_size", "minimum_calls", "failure_rate_threshold",
                                   "open_duration_s", "half_open_max_calls", "cold_probes"])
def test_invalid_config_names_the_field(field: str) -> None:
    with pytest.raises(ValueError, match=field):
        BreakerConfig(**{field: 0})


async def test_a_trip_is_shared_through_the_store() -> None:
    store = InMemoryBreakerStore()
    cfg = BreakerConfig(minimum_calls=1, sync_interval_s=0.01)
    a = CircuitBreaker("p", cfg, store=store)
    b = CircuitBreaker("p", cfg, store=store)
    for br in (a, b):
        succeed(br)
    fail(a)
    await asyncio.sleep(0.02)  # a's save runs in the background
    b.try_acquire()  # schedules b's sync
    await asyncio.sleep(0.02)
    assert b.state is BreakerState.OPEN


@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from(["ok", "fail", "slow", "acquire", "tick", "release"]),
                max_size=80))
def test_invariants_hold_for_any_sequence(ops: list[str]) -> None:
    clock = FakeClock()
    cfg = BreakerConfig(minimum_calls=3, half_open_max_calls=2, open_duration_s=2,
                        open_duration_max_s=8, cold_probes=2)
    b = CircuitBreaker("p", cfg, clock=clock)
    held = []
    for op in ops:
        if op == "acquire":
            p = b.try_acquire()
            if p is not None:
                held.append(p)
        elif op == "tick":
            clock.advance(1.5)
        elif held:
            p = held.pop(0)
            if op == "release":
                p.release()
            else:
                getattr(p, {"ok": "success", "fail": "failure", "slow": "slow"}[op])(0.1)
        state = b.state
        if state is BreakerState.OPEN:
            assert 0 <= (b.retry_in() or 0) <= cfg.open_duration_max_s
            assert b.try_acquire() is None
        snap = b.snapshot()
        assert 0 <= int(snap["in_flight_cold"]) <= cfg.cold_probes  # type: ignore[call-overload]


@pytest.mark.parametrize("outage_s", [30, 60, 180, 600])
def test_with_defaults_a_recovered_provider_is_probed_within_20_s(outage_s: float) -> None:
    """However long the outage, the open interval is capped: one request arriving every
    second reaches the provider within 20 s of its recovery (the README's 30 s promise
    leaves room for sparser traffic and for the replicas' sync)."""
    clock = FakeClock()
    b = warm(clock=clock)  # the defaults
    while b.state is BreakerState.CLOSED:
        fail(b)
    t, probes, recovered_at, back_at = 0.0, 0, float(outage_s), None
    while back_at is None:
        clock.advance(1.0)
        t += 1.0
        permit = b.try_acquire()
        if permit is None:
            continue
        probes += 1
        if t < recovered_at:
            permit.failure(0.01)
        else:
            permit.success(0.01)
            back_at = t
    assert b.state is BreakerState.CLOSED
    assert back_at - recovered_at <= 20.0
    assert probes <= outage_s / 5 + 2  # one probe per open interval, never a wave


def test_a_released_probe_gives_its_slot_back() -> None:
    clock = FakeClock()
    b = warm(BreakerConfig(minimum_calls=1, open_duration_s=1), clock)
    fail(b)
    clock.advance(1)
    probe = b.try_acquire()
    assert probe is not None and b.try_acquire() is None
    probe.release()  # e.g. the caller cancelled: no evidence either way
    again = b.try_acquire()
    assert again is not None
    again.success(0.01)
    assert b.state is BreakerState.CLOSED


async def _settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_replicas_sharing_a_store_send_one_probe_per_open_interval() -> None:
    """Three replicas' breakers over one store: when the interval ends, one of them probes;
    the others adopt its outcome (a new open interval, then closed)."""
    clock = FakeClock()
    store = InMemoryBreakerStore()
    cfg = BreakerConfig(minimum_calls=1, open_duration_s=5, sync_interval_s=0.5)
    replicas = [CircuitBreaker("p", cfg, clock=clock, store=store) for _ in range(3)]
    for br in replicas:
        succeed(br)
    fail(replicas[0])  # one replica trips; the others learn it from the store
    await _settle()
    clock.advance(1)
    for br in replicas[1:]:
        br.try_acquire()
    await _settle()
    assert all(br.state is BreakerState.OPEN for br in replicas)
    probes_per_interval = []
    healthy = False
    for _interval in range(4):
        clock.advance(max(br.retry_in() or 0 for br in replicas) + 0.01)
        permits = []
        for _ in range(6):  # several requests on every replica, while the claim resolves
            for br in replicas:
                p = br.try_acquire()
                if p is not None:
                    permits.append(p)
            await _settle()
        probes_per_interval.append(len(permits))
        for p in permits:
            (p.success if healthy else p.failure)(0.01)
        await _settle()
        clock.advance(cfg.sync_interval_s)
        for br in replicas:
            br.try_acquire()  # pulls the claimer's outcome
        await _settle()
        healthy = True  # the provider recovers after the first interval
    assert probes_per_interval[:2] == [1, 1]
    assert all(br.state is BreakerState.CLOSED for br in replicas)


async def test_an_open_breaker_reads_the_store_while_open_and_stops_when_dropped() -> None:
    import gc

    class Counting(InMemoryBreakerStore):
        loads = 0

        async def load(self, name: str) -> object:  # type: ignore[override]
            Counting.loads += 1
            return await super().load(name)

    store = Counting()
    breaker: CircuitBreaker | None = CircuitBreaker(
        "p", BreakerConfig(sync_interval_s=0.02), store=store)
    assert breaker is not None
    breaker.force_open(30)
    await asyncio.sleep(0.15)
    assert Counting.loads >= 3  # kept fresh in the background, with no request arriving
    breaker = None
    gc.collect()
    await asyncio.sleep(0.03)
    seen = Counting.loads
    await asyncio.sleep(0.15)
    assert Counting.loads == seen  # a dropped breaker's timer does not keep it alive
