"""How busy this machine is: the supervisor scales up only when there is idle CPU."""

from __future__ import annotations

import os
from collections import deque


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def room_to_scale(idle_fraction: float, cpus: int, new_processes: int) -> bool:
    """Whether one machine has a core's worth of idle CPU for each replica scaling up would add.

    A replica is one Python process: on a machine without idle cores more of them only split
    the same CPU more ways (on two cores the demo scaled from 3 to 6 replicas during a capacity
    ramp, and every later drill ran slower for it).  In-flight requests waiting on I/O need no
    more processes either: one replica's event loop holds hundreds.
    """
    return idle_fraction * cpus >= new_processes


class CpuSampler:
    """The machine's idle CPU fraction over the last few seconds (from /proc/stat)."""

    def __init__(self, window: int = 6) -> None:
        self._samples: deque[tuple[float, float]] = deque(maxlen=window)

    def sample(self) -> None:
        try:
            with open("/proc/stat") as f:
                fields = [float(x) for x in f.readline().split()[1:]]
        except (OSError, ValueError):
            return
        self._samples.append((fields[3] + fields[4], sum(fields)))  # idle + iowait, total

    def idle_fraction(self) -> float:
        if len(self._samples) < 2:
            return 1.0
        (idle0, total0), (idle1, total1) = self._samples[0], self._samples[-1]
        return (idle1 - idle0) / (total1 - total0) if total1 > total0 else 1.0
