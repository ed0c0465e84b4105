"""When to hedge: start the next provider if the current one has not answered in time.

The delay adapts to what each provider has shown recently (a high quantile of its latencies,
times a margin), so a healthy provider is almost never hedged while a hung one costs about one
normal answer time.  A provider with no history borrows its peers' figures: at start-up, the
first answers from any provider tell how long an answer should take.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from langchain_ha._percentile import percentile_of_sorted


class LatencyTracker:
    """The most recent latencies (seconds) of one provider in one mode, in a ring buffer."""

    __slots__ = ("_cached", "_dirty", "_i", "_samples", "_size")

    def __init__(self, size: int = 128) -> None:
        self._samples: list[float] = []
        self._size = size
        self._i = 0
        self._cached: list[float] = []
        self._dirty = 0

    def add(self, seconds: float) -> None:
        """Record one latency."""
        if len(self._samples) < self._size:
            self._samples.append(seconds)
        else:
            self._samples[self._i] = seconds
            self._i = (self._i + 1) % self._size
        self._dirty += 1

    def __len__(self) -> int:
        return len(self._samples)

    def quantile(self, q: float) -> float | None:
        """The nearest-rank ``q`` quantile of the recent samples (the project's one definition,
        :mod:`langchain_ha._percentile`), or None with no samples."""
        if not self._samples:
            return None
        # Re-sorting on every call would cost more than the call it guards; refresh when a
        # few new samples have arrived (or the cache is still small).
        if self._dirty >= 8 or len(self._cached) < min(len(self._samples), 16):
            self._cached = sorted(self._samples)
            self._dirty = 0
        return percentile_of_sorted(self._cached, q)

    def max(self) -> float | None:
        """The largest recent sample, or None."""
        return max(self._samples) if self._samples else None


@dataclass(frozen=True)
class HedgePolicy:
    """How long to wait for a provider before also asking the next one.

    ``delay = clamp(quantile(q) * multiplier, min_delay_s, max_delay_s)`` once the provider has
    ``min_samples`` latencies; before that, ``peer_multiplier`` times the slowest recent answer
    of any other provider; with no data at all, ``cold_delay_s``.
    """

    enabled: bool = True
    quantile: float = 0.95
    multiplier: float = 1.5
    min_samples: int = 10
    peer_multiplier: float = 2.0
    min_delay_s: float = 0.02
    max_delay_s: float = 10.0
    cold_delay_s: float = 2.0
    max_parallel: int = 2

    def __post_init__(self) -> None:
        for name in ("quantile",):
            if not 0.0 < getattr(self, name) <= 1.0:
                raise ValueError(f"HedgePolicy.{name} must be in (0, 1]")
        for name in ("multiplier", "peer_multiplier", "min_delay_s", "max_delay_s", "cold_delay_s"):
            if getattr(self, name) <= 0:
                raise ValueError(f"HedgePolicy.{name} must be > 0")
        if self.max_parallel < 1:
            raise ValueError("HedgePolicy.max_parallel must be >= 1")
        if self.min_samples < 1:
            raise ValueError("HedgePolicy.min_samples must be >= 1")

    def delay(self, own: LatencyTracker, peers: Iterable[LatencyTracker]) -> float:
        """Seconds to wait for the provider tracked by ``own`` before hedging."""
        if len(own) >= self.min_samples:
            q = own.quantile(self.quantile)
            assert q is not None
            raw = q * self.multiplier
        else:
            peer_max = [m for m in (p.max() for p in peers if len(p)) if m is not None]
            own_max = own.max()
            if peer_max:
                raw = max(peer_max) * self.peer_multiplier
                if own_max is not None:
                    raw = max(raw, own_max * self.peer_multiplier)
            elif own_max is not None:
                raw = own_max * self.peer_multiplier
            else:
                return self.cold_delay_s
        return min(self.max_delay_s, max(self.min_delay_s, raw))
