"""Adaptive admission: an in-flight limit that follows the event loop's lag.

A fixed in-flight limit protects memory, not latency.  On a CPU-bound replica it is reached
only after every request in flight has slowed down, and the requests it sheds wait their turn
on the same busy loop, so "fast" 503s arrive seconds late.  How late a timer fires (the loop's
lag) measures exactly that wait, whatever its cause: too much admitted work, a GC pause, or
other processes taking the CPU.  Waiting on a slow provider costs the loop nothing, so a
provider slowdown does not move the limit; only CPU saturation does.

The limit moves like TCP's congestion window (AIMD):

- a tick whose smoothed lag exceeds the target cuts the limit to what is in flight now, times
  a factor between 0.5 and 0.9 (the larger the lag, the deeper the cut).  While more is in
  flight than the new limit, nothing new is admitted and no further cut is made: the admitted
  requests must finish before another cut can tell anything;
- a tick within the target raises it by one, up to the configured ceiling (``max_inflight``).

The lag is smoothed (an exponentially weighted mean over about ten ticks, half a second), so
that a short burst (a slow callback, the retries landing when a zone dies, a cold start) does
not shed requests the replica is about to catch up with; real overload lasts longer than that.

The default target, 10 ms, comes from the demo app on two cores: at 100 req/s (p99 260 ms)
99.5 % of 50 ms ticks were under 10 ms late; at 130 req/s, past capacity (p50 530 ms), the
median tick was 15-20 ms late.  A request awaits dozens of times, and each await pays the lag
once, so a lag of tens of milliseconds is already seconds.  (Measured alternatives: 15 ms
shed more, not less, in a replica-crash drill at 120 req/s; 20 ms answered later past
capacity, p50 560 ms against 310-330 ms.)
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable


class Admission:
    """Decides whether one more request may start; see the module docstring.

    ``adaptive=False`` keeps the limit at ``ceiling`` (a plain in-flight cap).
    """

    def __init__(self, ceiling: int, *, floor: int = 8, target_lag_s: float = 0.01,
                 interval_s: float = 0.05, smoothing: float = 0.1,
                 adaptive: bool = True) -> None:
        if ceiling < 1 or floor < 1 or target_lag_s <= 0 or interval_s <= 0:
            raise ValueError("ceiling, floor, target_lag_s and interval_s must be positive")
        if not 0 < smoothing <= 1:
            raise ValueError("smoothing (the newest tick's weight) must be in (0, 1]")
        self.smoothing = smoothing
        self.ceiling = ceiling
        self.floor = min(floor, ceiling)
        self.target_lag_s = target_lag_s
        self.interval_s = interval_s
        self.adaptive = adaptive
        self.limit = float(ceiling)
        self.lag_s = 0.0
        """The newest tick's lag."""
        self.smoothed_lag_s = 0.0
        self.cuts = 0

    def allows(self, inflight: int) -> bool:
        """May a request start while ``inflight`` others run?"""
        return inflight < self.limit

    def observe(self, lag_s: float, inflight: int) -> None:
        """Feed one tick's lag (seconds late) and the requests in flight at that moment."""
        self.lag_s = lag_s
        self.smoothed_lag_s += self.smoothing * (lag_s - self.smoothed_lag_s)
        if not self.adaptive:
            return
        lag = self.smoothed_lag_s
        if lag > self.target_lag_s:
            if inflight <= self.limit:
                factor = min(0.9, max(0.5, self.target_lag_s / lag))
                cut = max(float(self.floor), inflight * factor)
                if cut < self.limit:
                    self.limit = cut
                    self.cuts += 1
        elif self.limit < self.ceiling:
            self.limit = min(float(self.ceiling), self.limit + 1.0)

    async def run(self, inflight: Callable[[], int],
                  on_tick: Callable[[Admission], None] | None = None, *,
                  clock: Callable[[], float] = time.monotonic,
                  sleep: Callable[[float], Awaitable[object]] = asyncio.sleep) -> None:
        """Sample the loop's lag every ``interval_s`` until cancelled."""
        while True:
            began = clock()
            await sleep(self.interval_s)
            self.observe(max(0.0, clock() - began - self.interval_s), inflight())
            if on_tick is not None:
                on_tick(self)
