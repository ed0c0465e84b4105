"""The supervisor's scale-up rule on one machine: a core's worth of idle CPU per new replica."""

from __future__ import annotations

from langchain_ha.cluster.hostload import CpuSampler, room_to_scale, usable_cpus


def test_scaling_up_needs_an_idle_core_per_new_replica() -> None:
    assert not room_to_scale(0.5, 2, 3)  # two cores half idle: one core for three replicas
    assert not room_to_scale(0.9, 2, 3)
    assert room_to_scale(0.5, 8, 3)  # four idle cores
    assert room_to_scale(0.375, 8, 3) and not room_to_scale(0.37, 8, 3)


def test_the_sampler_reads_this_machines_idle_fraction() -> None:
    s = CpuSampler()
    assert s.idle_fraction() == 1.0  # nothing to compare yet
    s.sample()
    sum(i * i for i in range(200_000))
    s.sample()
    assert 0.0 <= s.idle_fraction() <= 1.0
    assert usable_cpus() >= 1
