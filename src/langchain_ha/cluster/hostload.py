"""How busy this machine is: the supervisor scales up only when there is idle CPU."""

from __future__ import annotations

from collections import deque


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
