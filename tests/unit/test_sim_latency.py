"""The simulator's latency model: chat jitter is derived from the question (paired samples)."""

from __future__ import annotations

from langchain_ha.providers._core import Sim


def test_the_same_question_always_waits_as_long_on_every_simulator() -> None:
    primary, secondary = Sim("primary", 60.0, 40.0), Sim("secondary", 60.0, 40.0)
    key = b"What is the status of request number 7 in the queue?"
    first = primary.delay_ms(key)
    assert [primary.delay_ms(key) for _ in range(5)] == [first] * 5
    assert secondary.delay_ms(key) == first


def test_derived_jitter_still_spreads_over_the_whole_range() -> None:
    sim = Sim("s", 60.0, 40.0)
    delays = [sim.delay_ms(f"question {i}".encode()) for i in range(2000)]
    assert 60.0 <= min(delays) < 61.0 and 99.0 < max(delays) <= 100.0
    assert 78.0 < sorted(delays)[1000] < 82.0  # median near the middle: uniform enough


def test_without_a_key_jitter_is_drawn_and_without_jitter_latency_is_fixed() -> None:
    sim = Sim("s", 60.0, 40.0)
    assert len({sim.delay_ms() for _ in range(20)}) > 1
    assert Sim("s", 25.0, 0.0).delay_ms(b"q") == 25.0
