"""Adaptive hedge delay and the latency tracker."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from langchain_ha.resilience.hedging import HedgePolicy, LatencyTracker


def tracker(*values: float) -> LatencyTracker:
    t = LatencyTracker(size=16)
    for v in values:
        t.add(v)
    return t


def test_cold_provider_with_no_peers_uses_the_cold_delay() -> None:
    assert HedgePolicy(cold_delay_s=1.5).delay(tracker(), []) == 1.5


def test_cold_provider_borrows_its_peers_slowest_answer() -> None:
    policy = HedgePolicy(peer_multiplier=2.0)
    assert policy.delay(tracker(), [tracker(0.1, 0.12)]) == pytest.approx(0.24)


def test_warm_provider_uses_its_own_high_quantile() -> None:
    policy = HedgePolicy(quantile=0.9, multiplier=1.5, min_samples=10)
    # Nearest rank: p90 of 10 samples is the 9th smallest.
    assert policy.delay(tracker(*[0.1] * 8, 0.2, 0.2), [tracker(5.0)]) == pytest.approx(0.3)
    assert policy.delay(tracker(*[0.1] * 9, 0.2), [tracker(5.0)]) == pytest.approx(0.15)


def test_delay_is_clamped() -> None:
    policy = HedgePolicy(min_delay_s=0.05, max_delay_s=1.0, min_samples=1)
    assert policy.delay(tracker(0.001), []) == 0.05
    assert policy.delay(tracker(100.0), []) == 1.0


def test_ring_buffer_keeps_only_recent_samples() -> None:
    t = LatencyTracker(size=4)
    for v in (9.0, 9.0, 9.0, 9.0, 1.0, 1.0, 1.0, 1.0):
        t.add(v)
    assert len(t) == 4 and t.max() == 1.0


@pytest.mark.parametrize("field", ["quantile", "multiplier", "cold_delay_s", "max_parallel"])
def test_invalid_policy_names_the_field(field: str) -> None:
    with pytest.raises(ValueError, match=field):
        HedgePolicy(**{field: 0})


@given(st.lists(st.floats(min_value=0.0, max_value=100.0), min_size=1, max_size=300),
       st.floats(min_value=0.01, max_value=1.0))
def test_quantile_is_one_of_the_recent_samples(values: list[float], q: float) -> None:
    t = LatencyTracker(size=64)
    for v in values:
        t.add(v)
    got = t.quantile(q)
    assert got in values[-64:]
