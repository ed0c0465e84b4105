"""The routing engine: one request's attempts over ordered providers.

For each request the engine walks the providers in order, skipping those whose breaker rejects
the call, and starts an attempt with a timeout of ``min(attempt timeout, time left)``.  If the
attempt has not finished after the provider's hedge delay, the next provider is started as well
and the first success wins (the loser is cancelled and counted as slow).  A retryable failure
moves on to the next provider at once; when every provider failed in a round, the engine backs
off (full jitter, Retry-After honoured up to a cap) and starts another round, within the
deadline.  Everything that went wrong is kept and raised as one :class:`AllProvidersFailed`.

The engine knows nothing of LangChain: an attempt is any coroutine started by ``start(route,
timeout)``; the chat model supplies one for ``invoke`` and one for opening a stream.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from langchain_ha.resilience._clock import SYSTEM_CLOCK, Clock
from langchain_ha.resilience._route import Attempt, Route
from langchain_ha.resilience.breaker import BreakerState, Permit
from langchain_ha.resilience.deadline import Deadline
from langchain_ha.resilience.errors import (
    AllProvidersFailed,
    BreakerOpenError,
    DeadlineExceeded,
    ErrorKind,
    classify,
)
from langchain_ha.resilience.events import NullEvents, RouterEvents
from langchain_ha.resilience.hedging import HedgePolicy
from langchain_ha.resilience.retry import RetryPolicy

T = TypeVar("T")
log = logging.getLogger("langchain_ha.router")

_GATE_TICK_S = 0.02


StartFn = Callable[[Route], Awaitable[T]]
DiscardFn = Callable[[Any], Awaitable[None]]
UsageFn = Callable[[Any], "Mapping[str, int] | None"]


@dataclass
class _Running:
    route: Route
    permit: Permit
    started: float
    hedge_at: float | None = None


class Engine:
    """Runs requests over ``routes`` with breakers, hedging, retries and the deadline."""

    def __init__(
        self,
        routes: Sequence[Route],
        *,
        retry: RetryPolicy,
        hedge: HedgePolicy,
        attempt_timeout_s: float | None,
        events: RouterEvents | None = None,
        clock: Clock = SYSTEM_CLOCK,
        rng: random.Random | None = None,
    ) -> None:
        self.routes = list(routes)
        self.retry = retry
        self.hedge = hedge
        self.attempt_timeout_s = attempt_timeout_s
        self.events: RouterEvents = events or NullEvents()
        self.clock = clock
        self.rng = rng or random.Random()

    async def run(
        self,
        mode: str,
        start: StartFn[T],
        *,
        exclude: frozenset[str] = frozenset(),
        discard: DiscardFn | None = None,
        settle: bool = True,
        usage: UsageFn | None = None,
        deadline: Deadline | None = None,
    ) -> Attempt[T]:
        """Run one request; return the winning attempt or raise :class:`AllProvidersFailed`.

        With ``settle`` (invoke) the winner's permit is settled as a success here; without it
        (streams) the caller settles it when the stream ends.
        """
        req = _Request(self, mode, start, set(exclude), discard, settle, usage, deadline)
        return await req.run()


class _Request(Generic[T]):
    def __init__(
        self,
        engine: Engine,
        mode: str,
        start: StartFn[T],
        skip: set[str],
        discard: DiscardFn | None,
        settle: bool,
        usage: UsageFn | None,
        deadline: Deadline | None,
    ) -> None:
        self.e = engine
        self.usage = usage
        self.deadline = deadline
        self.mode = mode
        self.start = start
        self.skip = skip
        self.discard = discard
        self.settle = settle
        self.errors: list[Exception] = []
        self.attempts = 0
        self.hedged = False
        self.min_window: int | None = None
        self.retry_after: float | None = None
        self.reported_open: set[str] = set()
        self.last_failed = "?"
        self.round_errors = 0
        self.round_launched = 0

    # -- the request -------------------------------------------------------------------------

    async def run(self) -> Attempt[T]:
        e = self.e
        for round_index in range(e.retry.max_rounds):
            routes = self._eligible()
            if not routes:
                break
            self.round_errors = len(self.errors)
            self.round_launched = self.attempts
            try:
                won = await self._round(routes)
            except DeadlineExceeded as exc:
                self.errors.append(exc)
                break
            if won is not None:
                return won
            if round_index + 1 >= e.retry.max_rounds or not self._worth_retrying():
                break
            delay = e.retry.backoff(round_index, self.retry_after, e.rng)
            left = self._time_left()
            if left is not None and delay >= left:
                break
            self.retry_after = None
            await e.clock.sleep(delay)
        raise self._failure()

    def _eligible(self) -> list[Route]:
        return [r for r in self.e.routes if self._usable(r)]

    def _usable(self, route: Route) -> bool:
        """Not ruled out for this request (by a key error, or a too small context window)."""
        return route.name not in self.skip and (
            self.min_window is None or (route.context_window or 0) > self.min_window
        )

    def _worth_retrying(self) -> bool:
        """Another round only if this one tried something and every failure is retryable."""
        if self.attempts == self.round_launched:
            return False  # every provider's breaker is open: fail fast, that is their point
        return all(
            self.e.retry.retry_on(classify(err))
            for err in self.errors[self.round_errors :]
            if not isinstance(err, BreakerOpenError)
        )

    def _failure(self) -> AllProvidersFailed:
        errors = self.errors or [BreakerOpenError("*")]
        last = classify(errors[-1]).reason
        states = ", ".join(f"{r.name}={r.breaker.state.value}" for r in self.e.routes)
        return AllProvidersFailed(
            f"all providers failed after {self.attempts} attempt(s); last: {last}; "
            f"breakers: {states}",
            errors,
        )

    # -- one round: every eligible provider at most once ------------------------------------

    async def _round(self, routes: list[Route]) -> Attempt[T] | None:
        pending = list(routes)
        active: dict[asyncio.Task[T], _Running] = {}
        try:
            while True:
                if not active and not await self._launch(pending, active, wait=True):
                    return None
                timeout = self._hedge_timeout(pending, active)
                done, _ = await asyncio.wait(
                    active, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
                )
                if not done:
                    newest = max(active.values(), key=lambda r: r.started)
                    if (
                        newest.hedge_at is not None
                        and self.e.clock.monotonic() >= newest.hedge_at
                        and await self._launch(pending, active, wait=False)
                    ):
                        self.hedged = True
                    continue
                for task in done:
                    run = active.pop(task)
                    won = await self._settle(task, run, active)
                    if won is not None:
                        return won
        finally:
            await self._cancel(active)

    async def _settle(
        self, task: asyncio.Task[T], run: _Running, active: dict[asyncio.Task[T], _Running]
    ) -> Attempt[T] | None:
        e = self.e
        elapsed = e.clock.monotonic() - run.started
        exc = task.exception()
        if exc is None:
            if self.settle:
                run.permit.success(elapsed)
            run.route.tracker(self.mode).add(elapsed)
            value = task.result()
            e.events.on_success(
                run.route.name, self.mode, elapsed, self.usage(value) if self.usage else None
            )
            return Attempt(run.route, run.permit, value, run.started, self.attempts, self.hedged)
        if not isinstance(exc, Exception):  # KeyboardInterrupt and the like: not ours to keep
            run.permit.release()
            raise exc
        verdict = classify(exc)
        e.events.on_failure(run.route.name, self.mode, verdict.reason, elapsed)
        self.errors.append(exc)
        self.last_failed = run.route.name
        if verdict.kind is ErrorKind.FATAL:
            run.permit.release()
            await self._cancel(active)
            raise self._failure()
        if verdict.kind is ErrorKind.CONTEXT_LENGTH:
            run.permit.release()
            self.skip.add(run.route.name)
            window = run.route.context_window or 0
            self.min_window = max(self.min_window or 0, window)
        elif verdict.kind is ErrorKind.FALLBACK_ONLY:
            run.permit.failure(elapsed)
            self.skip.add(run.route.name)
        else:
            retry_after = verdict.retry_after if verdict.reason == "rate_limit" else None
            run.permit.failure(elapsed, retry_after=retry_after)
            if verdict.retry_after is not None:
                self.retry_after = max(self.retry_after or 0.0, verdict.retry_after)
        log.debug("%s failed on %s: %s", self.mode, run.route.name, verdict.reason)
        return None

    # -- launching attempts -----------------------------------------------------------------

    async def _launch(
        self, pending: list[Route], active: dict[asyncio.Task[T], _Running], *, wait: bool
    ) -> bool:
        """Start the first admitted provider of ``pending``; with ``wait``, queue at a cold gate."""
        gated: list[Route] = []
        while pending:
            route = pending.pop(0)
            if not self._usable(route):
                continue
            permit = route.breaker.try_acquire()
            if permit is not None:
                self._start(route, permit, active)
                return True
            if route.breaker.state is BreakerState.CLOSED:
                gated.append(route)  # closed but full: the cold gate of an unproven provider
            else:
                self._note_open(route)
        if not wait or not gated:
            return False
        return await self._wait_at_gates(gated, active)

    async def _wait_at_gates(
        self, gated: list[Route], active: dict[asyncio.Task[T], _Running]
    ) -> bool:
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

    def _start(self, route: Route, permit: Permit, active: dict[asyncio.Task[T], _Running]) -> None:
        e = self.e
        self.attempts += 1
        timeout = self._attempt_timeout(route.timeout_s or e.attempt_timeout_s)
        if self.attempts > 1 and active:
            first = next(iter(active.values())).route.name
            e.events.on_hedge(first, route.name)
        elif self.attempts > 1 and self.errors:
            e.events.on_fallback(self.last_failed, route.name, classify(self.errors[-1]).reason)
        e.events.on_attempt(route.name, self.mode)
        task = asyncio.ensure_future(self._timed(route, timeout))
        active[task] = _Running(route, permit, e.clock.monotonic())

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

    # -- hedging ----------------------------------------------------------------------------

    def _delay(self, route: Route) -> float:
        peers = [r.tracker(self.mode) for r in self.e.routes if r is not route]
        return self.e.hedge.delay(route.tracker(self.mode), peers)

    def _hedge_timeout(
        self, pending: list[Route], active: dict[asyncio.Task[T], _Running]
    ) -> float | None:
        if not self.e.hedge.enabled or not pending or len(active) >= self.e.hedge.max_parallel:
            return None
        newest = max(active.values(), key=lambda r: r.started)
        # Recomputed on every wake-up: peers' first answers may shorten a cold provider's delay.
        newest.hedge_at = newest.started + self._delay(newest.route)
        return min(_GATE_TICK_S * 5, max(0.0, newest.hedge_at - self.e.clock.monotonic()))

    async def _cancel(self, active: dict[asyncio.Task[T], _Running]) -> None:
        """Cancel the losers; one that ran past its hedge delay counts as slow."""
        if not active:
            return
        now = self.e.clock.monotonic()
        for task, run in active.items():
            task.cancel()
            if run.hedge_at is not None and now >= run.hedge_at:
                run.permit.slow(now - run.started)
            else:
                run.permit.release()
        results = await asyncio.gather(*active, return_exceptions=True)
        if self.discard is not None:
            for res in results:
                if not isinstance(res, BaseException):
                    await self.discard(res)
        active.clear()


