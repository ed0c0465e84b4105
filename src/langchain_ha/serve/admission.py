"""Admission control: a concurrency limit that follows the event loop's lag, and a short
queue in front of it that only takes requests predicted to start in time.

Two questions, answered apart:

1. **How much work may run at once?**  A fixed in-flight limit protects memory, not latency:
   on a CPU-bound replica it is reached only after every running request has slowed down,
   and a request it refuses waits its turn on the same busy loop, so "fast" 503s arrive
   seconds late and ``/readyz`` stops answering (the balancer then marks the replica down).
   How late a timer fires (the loop's lag) measures that wait whatever its cause.  Waiting on
   a slow provider costs the loop nothing, so a provider slowdown does not move the limit;
   only CPU saturation does.  The limit moves like TCP's congestion window (AIMD):

   - a tick whose smoothed lag exceeds the target cuts the limit to what runs now, times a
     factor between 0.5 and 0.9 (the larger the lag, the deeper the cut), never under
     ``floor``.  No further cut is made until as many requests have finished as ran at the
     cut (TCP cuts once per round trip): the lag still shows the work admitted before it, so
     cutting on every tick (as a queue that refills the slots at once allowed) took the limit
     to the floor within a quarter second and, on two cores shared with other processes whose
     CPU the limit cannot take back, held the replicas below the rate they were sent (the
     replica-crash drill at 88 req/s then shed 702 of 6,072);
   - a tick within the target raises it by one, up to ``ceiling`` (``max_inflight``).

   The lag is an exponentially weighted mean over about ten 50 ms ticks, so one slow callback
   does not cut the limit; real overload lasts longer than that.

2. **What happens to a request over the limit?**  Refusing it at once (the previous design)
   shed requests the replica would have answered in time: when a replica is SIGKILLed, its
   traffic lands on the others while its replacement starts (a Python process importing
   LangChain takes a core for seconds); their lag cut their limits to the floor and about
   1 % of the requests got a 503 although each would have waited well under a second.  A
   warm-up burst did the same.  Now such a request *waits* for a running one to finish — if
   it is predicted to start within its budget.  The prediction is Little's law: with ``q``
   requests queued ahead and the replica completing ``X`` per second (measured: a smoothed
   rate over ticks with work in flight), it starts in about ``(q + 1) / X``.  The budget is
   ``slo_s`` (``LCHA_ADMISSION_SLO_S``), capped by what is left of the request's own
   deadline.  A request predicted to start too late is refused at once, cheaply: under a real
   overload the queue fills to what the budget allows and the excess gets its 503 in
   milliseconds (the balancer tries another replica), while the limit keeps the loop, and
   with it ``/readyz``, quick.  A queued request is never refused later: once taken in, it is
   answered.

3. **Who refuses?**  Refusing costs little in the replica (0.2 ms), but reaching a saturated
   replica does not: at twice the capacity a shed request waited for four busy Python
   processes in turn (503 p99 ~350 ms).  So the replica also says how many requests it would
   hold now, :meth:`Admission.room` (on ``/readyz``), and a balancer that sends no more than
   that (HAProxy's ``maxconn``, see :mod:`~langchain_ha.cluster.haproxy`) answers the 503
   itself once every replica is at its room.  The replica's own refusal stays for what gets
   past the balancer between two updates.

The ceiling bounds running and queued requests together (their bodies are in memory), so with
``adaptive=False`` (or before any cut) a request at the ceiling is refused at once: a plain
in-flight cap.  Until a second of busy ticks has been seen (a cold replica) the rate is not
known and the queue takes requests up to the ceiling.  The same holds in a stall: when the
database fails over, or is gone and answers degrade after their timeouts, completions stop on
*every* replica, so the rate says nothing about when the queue drains, and refusing would only
send the request to another replica that refuses it too (the zone-outage and vector-db-outage
drills got 503s that way).  A stall is a rate under one completion per objective, or one that
fell under ``STALL_SHARE`` of the slow rate (a mean over about five seconds): an overload
keeps completing at the replica's capacity, a stall does not; and the smoothed rate takes a
while to reach zero, during which its prediction grew past the objective and refused.

The target lag, 10 ms, comes from the demo app on two cores: at 100 req/s (p99 260 ms) 99.5 %
of 50 ms ticks were under 10 ms late; past capacity the median tick was 15-20 ms late.
"""

from __future__ import annotations

import asyncio
import collections
import math
import time
from collections.abc import Awaitable, Callable

STALL_SHARE = 1 / 3
"""A rate under this share of the slow rate is a stall, not an overload (see the module
docstring)."""
ROOM_SHARE = 0.8
"""The share of the admission objective a replica's advertised room covers (see
:meth:`Admission.room_now`)."""


class Admission:
    """Decides whether a request may start, or wait to start; see the module docstring.

    ``adaptive=False`` keeps the limit at ``ceiling`` (a plain in-flight cap, no queue).
    """

    def __init__(self, ceiling: int, *, floor: int = 8, slo_s: float = 5.0,
                 target_lag_s: float = 0.01, interval_s: float = 0.05,
                 smoothing: float = 0.1, warmup_s: float = 1.0,
                 room_window_s: float = 1.0, adaptive: bool = True) -> None:
        if ceiling < 1 or floor < 1 or slo_s <= 0 or target_lag_s <= 0 or interval_s <= 0:
            raise ValueError("ceiling, floor, slo_s, target_lag_s and interval_s must be "
                             "positive")
        if not 0 < smoothing <= 1:
            raise ValueError("smoothing (the newest tick's weight) must be in (0, 1]")
        if warmup_s < 0:
            raise ValueError("warmup_s must not be negative")
        self.ceiling = ceiling
        self.floor = min(floor, ceiling)
        self.slo_s = slo_s
        self.target_lag_s = target_lag_s
        self.interval_s = interval_s
        self.smoothing = smoothing
        self.warmup_s = warmup_s
        self.adaptive = adaptive
        self.limit = float(ceiling)
        self.lag_s = 0.0
        """The newest tick's lag."""
        self.smoothed_lag_s = 0.0
        self.rate = 0.0
        """Completions per second (smoothed, over ticks with work in flight)."""
        self.slow_rate = 0.0
        """The same, smoothed ten times slower (about five seconds): the norm a stall is seen
        against."""
        self.busy_s = 0.0
        """Seconds of ticks with work in flight seen so far."""
        self.cuts = 0
        self.refused = 0
        self.active = 0
        """Requests running (admitted and not yet released)."""
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self._rooms: collections.deque[int] = collections.deque(
            maxlen=max(1, math.ceil(room_window_s / interval_s)))
        self._done = 0
        self._unfinished = 0
        """Completions still to come before another cut: as many as ran at the last one."""

    @property
    def waiting(self) -> int:
        """Requests queued for a slot."""
        return len(self._waiters)

    @property
    def predictable(self) -> bool:
        """Whether the rate predicts when a queued request starts: not on a cold replica, nor
        in a stall (see the module docstring)."""
        return not (self.busy_s < self.warmup_s or self.rate * self.slo_s < 1
                    or self.rate < STALL_SHARE * self.slow_rate)

    def predicted_start(self) -> float:
        """Seconds until a request queued now would start; 0 when there is nothing to predict
        from (not :attr:`predictable`)."""
        if not self.predictable:
            return 0.0
        return (len(self._waiters) + 1) / self.rate

    def room(self) -> int:
        """How many requests this replica would hold, running and queued, before it refuses
        one: the least of :meth:`room_now` over the last ``room_window_s``.  A balancer that
        sends no more than this (HAProxy's ``maxconn``, updated every half second) can refuse
        the rest itself without asking the replica; the least, not the newest, so that a limit
        cut since the balancer last asked seldom makes the replica refuse what it was sent."""
        now = self.room_now()
        if not self.predictable:  # a stall: as a cold replica, take what the ceiling allows
            return now
        return min(now, *self._rooms) if self._rooms else now

    def room_now(self) -> int:
        """``ceil(limit)`` running plus the queue predicted to start within ``ROOM_SHARE`` of
        ``slo_s`` (``floor(rate * slo_s * ROOM_SHARE)``; the ceiling's worth when there is
        nothing to predict from), at most ``ceiling``.  The rest of the objective is margin:
        the rate and the limit move between two updates of the balancer, and a replica sent
        more than it takes refuses it (the balancer then asks every other replica in turn)."""
        if not self.adaptive:
            return self.ceiling
        queue = (int(self.rate * self.slo_s * ROOM_SHARE) if self.predictable
                 else self.ceiling)
        return max(1, min(self.ceiling, math.ceil(self.limit) + queue))

    def try_admit(self) -> bool:
        """Start a request now if there is room (no queue ahead of it)."""
        if not self._waiters and self.active < self.limit:
            self.active += 1
            return True
        return False

    async def acquire(self, budget_s: float | None = None) -> bool:
        """Admit a request, waiting for a slot if it is predicted to start within its budget
        (``budget_s``: its deadline, capped by ``slo_s``); False: refused, at once.  An
        admitted request must be :meth:`release`\\ d."""
        if self.try_admit():
            return True
        if not self.may_wait(budget_s):
            return False
        await self.wait()
        return True

    def may_wait(self, budget_s: float | None = None) -> bool:
        """Whether a request over the limit may queue: the ceiling has room for it and it is
        predicted to start within its budget.  False counts a refusal."""
        budget = self.slo_s if budget_s is None else min(self.slo_s, budget_s)
        if (self.active + len(self._waiters) >= self.ceiling
                or self.predicted_start() > budget):
            self.refused += 1
            return False
        return True

    async def wait(self) -> None:
        """Queue for a slot (after :meth:`may_wait`); returns admitted."""
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter  # release() or a raised limit hands the slot over (active counted)
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.release()  # the slot was handed over as the caller went away
            elif waiter in self._waiters:
                self._waiters.remove(waiter)
            raise

    def release(self) -> None:
        """An admitted request finished (answered, failed or cancelled)."""
        self.active -= 1
        self._done += 1
        self._wake()

    def _wake(self) -> None:
        while self._waiters and self.active < self.limit:
            waiter = self._waiters.popleft()
            if not waiter.done():
                self.active += 1
                waiter.set_result(None)

    def observe(self, lag_s: float, inflight: int | None = None,
                elapsed_s: float | None = None) -> None:
        """Feed one tick: its lag (seconds late), the requests running at its end (by default
        :attr:`active`) and how long it lasted (by default ``interval_s + lag_s``)."""
        running = self.active if inflight is None else inflight
        tick = elapsed_s if elapsed_s is not None else self.interval_s + lag_s
        self.lag_s = lag_s
        self.smoothed_lag_s += self.smoothing * (lag_s - self.smoothed_lag_s)
        done, self._done = self._done, 0
        self._unfinished -= done
        if running or done:
            self.busy_s += tick
            self.rate += self.smoothing * (done / tick - self.rate)
            self.slow_rate += self.smoothing / 10 * (done / tick - self.slow_rate)
        if not self.adaptive:
            return
        lag = self.smoothed_lag_s
        if lag > self.target_lag_s:
            if self._unfinished <= 0:
                factor = min(0.9, max(0.5, self.target_lag_s / lag))
                cut = max(float(self.floor), running * factor)
                if cut < self.limit:
                    self.limit = cut
                    self.cuts += 1
                    self._unfinished = running
        elif self.limit < self.ceiling:
            self.limit = min(float(self.ceiling), self.limit + 1.0)
            self._wake()
        self._rooms.append(self.room_now())

    async def run(self, on_tick: Callable[[Admission], None] | None = None, *,
                  clock: Callable[[], float] = time.monotonic,
                  sleep: Callable[[float], Awaitable[object]] = asyncio.sleep) -> None:
        """Sample the loop's lag every ``interval_s`` until cancelled."""
        while True:
            began = clock()
            await sleep(self.interval_s)
            elapsed = clock() - began
            self.observe(max(0.0, elapsed - self.interval_s), elapsed_s=elapsed)
            if on_tick is not None:
                on_tick(self)
