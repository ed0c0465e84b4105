"""Starting a request's attempts: admission by the breakers, cold gates, counting, timeouts.

The launching half of a request (see :mod:`langchain_ha.resilience._engine`): which provider
goes next, whether its breaker lets the call through, waiting at a cold gate, and the timeout
of each attempt, ``min(attempt timeout, time left)``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from langchain_ha.resilience._racing import Active, Running
from langchain_ha.resilience._route import Route
from langchain_ha.resilience.breaker import BreakerState, Permit
from langchain_ha.resilience.deadline import Deadline
from langchain_ha.resilience.errors import BreakerOpenError, DeadlineExceeded, classify

if TYPE_CHECKING:
    from langchain_ha.resilience._engine import Engine

T = TypeVar("T")

_GATE_TICK_S = 0.02


class Launcher(Generic[T]):
    """The request state launching reads and writes; :class:`_Request` fills it in."""

    e: Engine
    mode: str
    start: Callable[[Route], Awaitable[T]]
    deadline: Deadline | None
    skip: set[str]
    min_window: int | None
    errors: list[Exception]
    attempts: int
    last_failed: str
    reported_open: set[str]
    lead: Running | None

    def _usable(self, route: Route) -> bool:
        """Not ruled out for this request (by a key error, or a too small context window)."""
        return route.name not in self.skip and (
            self.min_window is None or (route.context_window or 0) > self.min_window
        )

    def _pick(self, pending: list[Route]) -> tuple[tuple[Route, Permit] | None, list[Route]]:
        """Pop routes off ``pending`` until one is admitted; also the closed-but-full ones."""
        gated: list[Route] = []
        while pending:
            route = pending.pop(0)
            if not self._usable(route):
                continue
            permit = route.breaker.try_acquire()
            if permit is not None:
                return (route, permit), gated
            if route.breaker.state is BreakerState.CLOSED:
                gated.append(route)  # closed but full: the cold gate of an unproven provider
            else:
                self._note_open(route)
        return None, gated

    def launch_now(self, pending: list[Route], active: Active) -> asyncio.Task[Any] | None:
        """Start the first admitted provider of ``pending`` as a task, if any."""
        pick, _ = self._pick(pending)
        return None if pick is None else self._start(*pick, active)

    async def _launch(self, pending: list[Route], active: Active) -> bool:
        """Start the first admitted provider of ``pending``, else queue at a cold gate."""
        pick, gated = self._pick(pending)
        if pick is not None:
            self._start(*pick, active)
            return True
        return bool(gated) and await self._wait_at_gates(gated, active)

    async def _wait_at_gates(self, gated: list[Route], active: Active) -> bool:
        """Every provider's cold gate is full: take the first gate that opens, in priority order.

        A gate opens when its provider answers for the first time (or a probe slot frees), so
        the wait is at most about one answer time of the fastest provider.
        """
        e = self.e
        began = e.clock.monotonic()
        while True:
            left = self._time_left()
            if left is not None and left <= 0:
                return False
            for route in gated:
                permit = route.breaker.try_acquire()
                if permit is not None:
                    self._start(route, permit, active)
                    return True
            waitable = [r for r in gated if r.breaker.state is BreakerState.CLOSED]
            if not waitable or e.clock.monotonic() - began >= e.hedge.max_delay_s:
                return False
            tick = _GATE_TICK_S if left is None else min(_GATE_TICK_S, left)
            permit = await waitable[0].breaker.acquire(tick)
            if permit is not None:
                self._start(waitable[0], permit, active)
                return True

    def _begin(self, route: Route, permit: Permit, active: Active) -> Running:
        """Count and announce an attempt about to start; its timeout is fixed here."""
        e = self.e
        try:
            timeout = self._attempt_timeout(route.timeout_s or e.attempt_timeout_s)
        except DeadlineExceeded:
            permit.release()
            raise
        self.attempts += 1
        if self.attempts > 1:
            first = self.lead or next(iter(active.values()), None)
            if first is not None:
                e.events.on_hedge(first.route.name, route.name)
            elif self.errors:
                e.events.on_fallback(self.last_failed, route.name,
                                     classify(self.errors[-1]).reason)
        e.events.on_attempt(route.name, self.mode)
        return Running(route, permit, e.clock.monotonic(), timeout)

    def _start(self, route: Route, permit: Permit, active: Active) -> asyncio.Task[T]:
        run = self._begin(route, permit, active)
        task = asyncio.get_running_loop().create_task(self._timed(route, run.timeout))
        active[task] = run
        return task

    def _time_left(self) -> float | None:
        return None if self.deadline is None else self.deadline.remaining()

    def _attempt_timeout(self, per_attempt: float | None) -> float | None:
        left = self._time_left()
        if left is not None and left <= 0:
            raise DeadlineExceeded("the request deadline passed before the attempt started")
        if per_attempt is None:
            return left
        return per_attempt if left is None else min(per_attempt, left)

    async def _timed(self, route: Route, timeout: float | None) -> T:
        async with asyncio.timeout(timeout):
            return await self.start(route)

    def _note_open(self, route: Route) -> None:
        if route.name not in self.reported_open:
            self.reported_open.add(route.name)
            self.errors.append(BreakerOpenError(route.name, route.breaker.retry_in()))
