"""The race of one request's attempts: the lead attempt, its hedges, and waiting for either.

The first attempt of a round (the *lead*) runs inline in the caller's task: no task to create,
schedule and wait for, which is most of what a healthy request would otherwise pay the router.
A :class:`Hedger` watches it with one timer.  When the lead's hedge delay passes, the hedger
starts the next provider as a task; if that task wins (or fails fatally) before the lead
answers, the hedger interrupts the lead by cancelling the caller's task, and the engine's
general loop takes over with the hedge's result.  The same timer enforces the lead's attempt
timeout (an interruption marked ``timed_out``).  It tells its own interruption from a
cancellation of the caller the way :func:`asyncio.timeout` does (``cancelling``/``uncancel``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from langchain_ha.resilience._route import Route
from langchain_ha.resilience.breaker import Permit
from langchain_ha.resilience.errors import DeadlineExceeded, ErrorKind, classify


@dataclass
class Running:
    """One attempt in flight (the lead, or a task in the active map)."""

    route: Route
    permit: Permit
    started: float
    timeout: float | None = None
    hedge_at: float | None = None


Active = dict["asyncio.Task[Any]", Running]

# A hedge failing with one of these may end the whole request: the general loop decides.
_ENDS_REQUEST = frozenset({ErrorKind.FATAL, ErrorKind.REFUSAL})


async def first_done(active: Mapping[asyncio.Task[Any], Any], timeout: float | None
                     ) -> list[asyncio.Task[Any]]:
    """The finished tasks of ``active`` once one is done or ``timeout`` passed.

    ``asyncio.wait`` without its generality (sets, futures, counters): this wait runs on
    every request that has more than its lead in flight.
    """
    done = [t for t in active if t.done()]
    if done or timeout == 0:
        return done
    loop = asyncio.get_running_loop()
    waiter: asyncio.Future[None] = loop.create_future()

    def wake(_: object = None) -> None:
        if not waiter.done():
            waiter.set_result(None)

    for task in active:
        task.add_done_callback(wake)
    timer = loop.call_later(timeout, wake) if timeout is not None else None
    try:
        await waiter
    finally:
        if timer is not None:
            timer.cancel()
        for task in active:
            task.remove_done_callback(wake)
    return [t for t in active if t.done()]


class _Request(Protocol):
    hedged: bool

    def hedge_timeout(self, pending: list[Route], active: Active) -> float | None: ...
    def hedge_due(self, active: Active) -> bool: ...
    def launch_now(self, pending: list[Route], active: Active) -> asyncio.Task[Any] | None: ...
    def settle_failure(self, run: Running, exc: Exception) -> None: ...


class Hedger:
    """Starts hedges beside an inline lead attempt and interrupts the lead if one wins."""

    __slots__ = ("_active", "_base", "_expires", "_loop", "_pending", "_req", "_task", "_timer",
                 "interrupted", "live", "timed_out")

    def __init__(self, req: _Request, pending: list[Route], active: Active,
                 timeout: float | None) -> None:
        self._req = req
        self._pending = pending
        self._active = active
        self.live = True
        self.interrupted = False
        self.timed_out = False
        self._timer: asyncio.TimerHandle | None = None
        self._loop = asyncio.get_running_loop()
        self._expires = None if timeout is None else self._loop.time() + timeout
        task = asyncio.current_task()
        if task is None:  # as asyncio.timeout: interrupting needs a task to cancel
            raise RuntimeError("ResilientChatModel must be awaited inside an asyncio task")
        self._task = task
        self._base = task.cancelling()
        self._arm()

    def settle(self) -> bool:
        """The lead is over: no more hedges; our interruption, if any, is withdrawn.

        True if we interrupted and no cancellation of the caller is pending besides ours (a
        CancelledError at the lead was then ours alone; the caller's must propagate).
        """
        self.live = False
        self._disarm()
        if not self.interrupted:
            return False
        return self._task.uncancel() <= self._base

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _arm(self) -> None:
        wait = self._req.hedge_timeout(self._pending, self._active)
        if self._expires is not None:
            left = self._expires - self._loop.time()
            wait = left if wait is None else min(wait, left)
        if wait is not None:
            self._timer = self._loop.call_later(max(0.0, wait), self._tick)

    def _tick(self) -> None:
        self._timer = None
        if not self.live or self.interrupted:
            return
        # call_later may fire up to the clock's resolution early, as asyncio.timeout's does.
        if self._expires is not None and self._loop.time() >= self._expires - 1e-6:
            self.timed_out = True
            self._interrupt()
            return
        if self._req.hedge_due(self._active):
            try:
                task = self._req.launch_now(self._pending, self._active)
            except DeadlineExceeded:
                return  # no time for a hedge; the lead's own timeout ends it
            if task is not None:
                self._req.hedged = True
                task.add_done_callback(self._hedge_done)
        self._arm()

    def _hedge_done(self, task: asyncio.Task[Any]) -> None:
        if not self.live or self.interrupted or task.cancelled():
            return
        run = self._active.get(task)
        if run is None:
            return
        exc = task.exception()
        if exc is None or not isinstance(exc, Exception) or classify(exc).kind in _ENDS_REQUEST:
            self._interrupt()  # the engine's general loop settles the hedge once the lead lets go
            return
        # A hedge failed while the lead still runs: what the general loop would do, now.
        del self._active[task]
        self._req.settle_failure(run, exc)
        self._disarm()
        self._tick()

    def _interrupt(self) -> None:
        self.interrupted = True
        self._disarm()
        self._task.cancel()
