"""Admission on the predicted wait: a replica refuses a request it would answer too late.

A replica sheds (503 + ``Retry-After``; the balancer tries another replica) in two cases:

1. ``max_inflight`` requests are running: a hard ceiling, for memory;
2. its CPU is saturated *and* the request is predicted to finish after its budget.

The prediction is Little's law.  With ``N`` requests in flight and the replica completing ``X``
per second, what is ahead of a new request takes about ``N / X`` to finish, and the request
itself ``1 / X`` more: ``wait = (N + 1) / X``.  ``X`` is measured, not assumed: completions per
second, smoothed over about a second (an exponentially weighted mean of 50 ms ticks), counted
only over ticks with work in flight.  The budget is the request's own (``budget_s``: what is
left of a deadline the caller gave) capped by the configured objective ``slo_s``
(``LCHA_ADMISSION_SLO_S``, 1 s).

"Saturated" is the event loop's lag (how late a 50 ms timer fires), smoothed the same way, over
``target_lag_s``.  Waiting on a slow provider costs the loop nothing: then more requests in
flight do not slow the others down, so none is refused however long the provider takes (the
ceiling still holds).  Only when the CPU is the bottleneck does each admitted request delay all
the others, and then a request predicted to miss its budget is refused while it is still cheap
to refuse.

Why not the lag alone (the previous design: an AIMD in-flight limit following the lag, with a
floor of 8): a lag spike says the CPU is busy, not that requests will be late.  When a replica
is SIGKILLed under load, its traffic lands on the others while its replacement starts (a Python
process importing LangChain takes a core for seconds); their lag passed 10 ms and cut their
limits to the floor, and requests they would have answered well inside the 60 s deadline got a
503 ("replica at its in-flight limit, limit 8": ≈1.25 % of them; ``tests/integration/
test_up.py``'s replica-kill test failed about half the time on two cores).  The same happens in
a warm-up burst.  Here those requests are admitted as long as their predicted wait is within
budget (with it, and HAProxy retrying a shed request elsewhere, that test passed 4 runs of 5;
the fifth failed at set-up, a database member not healthy in time).

Under a real overload the wait grows past the budget within a second and the excess is refused
at about ``slo_s x X`` in flight.  That is more in flight than the old floor allowed, and it
does not yet keep the 503s fast: ``lcha drill overload`` at 240 req/s through HAProxy (on a
machine not quiet, load 1.7) measured a 503 p99 of 28 s and 51 answers/s.  Not tuned yet.

Until a second of busy ticks has been seen (a cold replica) only the ceiling applies:
there is nothing to predict from.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable


class Admission:
    """Decides whether one more request may start; see the module docstring.

    ``adaptive=False`` keeps only the ceiling (a plain in-flight cap).
    """

    def __init__(self, ceiling: int, *, slo_s: float = 1.0, target_lag_s: float = 0.01,
                 interval_s: float = 0.05, smoothing: float = 0.05,
                 warmup_s: float = 1.0, adaptive: bool = True) -> None:
        if ceiling < 1 or slo_s <= 0 or target_lag_s <= 0 or interval_s <= 0 or warmup_s < 0:
            raise ValueError("ceiling, slo_s, target_lag_s and interval_s must be positive")
        if not 0 < smoothing <= 1:
            raise ValueError("smoothing (the newest tick's weight) must be in (0, 1]")
        self.ceiling = ceiling
        self.slo_s = slo_s
        self.target_lag_s = target_lag_s
        self.interval_s = interval_s
        self.smoothing = smoothing
        self.warmup_s = warmup_s
        self.adaptive = adaptive
        self.lag_s = 0.0
        """The newest tick's lag."""
        self.smoothed_lag_s = 0.0
        self.rate = 0.0
        """Completions per second (smoothed, over ticks with work in flight)."""
        self.busy_s = 0.0
        """Seconds of ticks with work in flight seen so far (the rate is trusted after
        ``warmup_s``)."""
        self.refused = 0
        self._done = 0

    @property
    def saturated(self) -> bool:
        """The loop lags: the CPU, not a provider, is what requests wait for."""
        return self.smoothed_lag_s > self.target_lag_s

    def predicted_wait(self, inflight: int) -> float:
        """Seconds until a request admitted now would finish (``inf`` when nothing completes;
        0 while the rate is not yet known)."""
        if self.busy_s < self.warmup_s:
            return 0.0
        return (inflight + 1) / self.rate if self.rate > 0 else math.inf

    @property
    def limit(self) -> int:
        """The in-flight count at which a request is refused now (for the metrics)."""
        if not (self.adaptive and self.saturated) or self.busy_s < self.warmup_s:
            return self.ceiling
        return max(1, min(self.ceiling, math.floor(self.slo_s * self.rate)))

    def allows(self, inflight: int, budget_s: float | None = None) -> bool:
        """May a request start while ``inflight`` others run?  ``budget_s``: the seconds left
        before its caller's deadline, if it gave one (capped by ``slo_s``)."""
        if inflight >= self.ceiling:
            return False
        if not (self.adaptive and self.saturated):
            return True
        budget = self.slo_s if budget_s is None else min(self.slo_s, budget_s)
        return self.predicted_wait(inflight) <= budget

    def finished(self) -> None:
        """One admitted request finished (answered, failed or cancelled)."""
        self._done += 1

    def observe(self, lag_s: float, inflight: int, elapsed_s: float | None = None) -> None:
        """Feed one tick: its lag (seconds late), the requests in flight at its end, and how
        long it lasted (by default ``interval_s + lag_s``)."""
        tick = elapsed_s if elapsed_s is not None else self.interval_s + lag_s
        self.lag_s = lag_s
        self.smoothed_lag_s += self.smoothing * (lag_s - self.smoothed_lag_s)
        done, self._done = self._done, 0
        if inflight == 0 and done == 0:
            return  # idle: says nothing about the rate
        self.busy_s += tick
        self.rate += self.smoothing * (done / tick - self.rate)

    async def run(self, inflight: Callable[[], int],
                  on_tick: Callable[[Admission], None] | None = None, *,
                  clock: Callable[[], float] = time.monotonic,
                  sleep: Callable[[float], Awaitable[object]] = asyncio.sleep) -> None:
        """Sample the loop every ``interval_s`` until cancelled."""
        while True:
            began = clock()
            await sleep(self.interval_s)
            elapsed = clock() - began
            self.observe(max(0.0, elapsed - self.interval_s), inflight(), elapsed)
            if on_tick is not None:
                on_tick(self)
