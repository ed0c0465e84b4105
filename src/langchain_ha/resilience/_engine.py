"""The routing engine: one request's attempts over ordered providers.

For each request the engine walks the providers in order, skipping those whose breaker rejects
the call, and starts an attempt with a timeout of ``min(attempt timeout, time left)``.  If the
attempt has not finished after the provider's hedge delay, the next provider is started as well
and the first success wins (the loser is cancelled and counted as slow).  A retryable failure
moves on to the next provider at once; when every provider failed in a round, the engine backs
off (full jitter, Retry-After honoured up to a cap) and starts another round, within the
deadline.  Everything that went wrong is kept and raised as one :class:`AllProvidersFailed`.

The first attempt of a round runs inline in the caller's task and the others as tasks (see
:mod:`langchain_ha.resilience._racing`).  Launching an attempt (which provider goes next,
whether its breaker lets the call through, waiting at a cold gate, and each attempt's timeout,
``min(attempt timeout, time left)``) is part of the request, below.  The engine knows nothing
of LangChain: an attempt is any coroutine started by ``start(route)``; the chat model supplies
one for ``invoke`` and one for opening a stream.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Generic, TypeVar

from langchain_ha.resilience._clock import SYSTEM_CLOCK, Clock
from langchain_ha.resilience._racing import Active, Hedger, Running, first_done
from langchain_ha.resilience._route import Attempt, Route
from langchain_ha.resilience.breaker import BreakerState, Permit
from langchain_ha.resilience.deadline import Deadline
from langchain_ha.resilience.errors import (
    AllProvidersFailed,
    BreakerOpenError,
    DeadlineExceeded,
    ErrorKind,
    ProviderRefused,
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
        refusal_fallback: bool = False,
    ) -> None:
        self.routes = list(routes)
        self.refusal_fallback = refusal_fallback
        self.retry = retry
        self.hedge = hedge
        self.attempt_timeout_s = attempt_timeout_s
        self.events: RouterEvents = events or NullEvents()
        self.clock = clock
        self.rng = rng or random.Random()

    def run(
        self,
        mode: str,
        start: StartFn[T],
        *,
        exclude: frozenset[str] = frozenset(),
        discard: DiscardFn | None = None,
        settle: bool = True,
        usage: UsageFn | None = None,
        deadline: Deadline | None = None,
    ) -> Awaitable[Attempt[T]]:
        """Run one request; the winning attempt, or raise :class:`AllProvidersFailed` (or
        :class:`ProviderRefused` when the request ended on a refusal).

        With ``settle`` (invoke) the winner's permit is settled as a success here; without it
        (streams) the caller settles it when the stream ends.  (Not ``async def``: every
        coroutine frame between the caller and the provider is resumed at each of the
        provider's suspensions, so the chain is kept short.)
        """
        return _Request(self, mode, start, set(exclude), discard, settle, usage, deadline).run()


class _Request(Generic[T]):
    """One request's state: its attempts, errors, what it ruled out, and the lead attempt."""

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
        self.lead: Running | None = None

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

    def _refused(self) -> ProviderRefused | None:
        """A refusal, if the request ended on one: the refusal itself reaches the caller."""
        last = self.errors[-1] if self.errors else None
        if last is None:
            return None
        if isinstance(last, ProviderRefused):
            return last
        verdict = classify(last)
        if verdict.kind is not ErrorKind.REFUSAL:
            return None
        refused = ProviderRefused(self.last_failed, verdict.reason, str(last)[:300])
        refused.__cause__ = last
        return refused

    def _eligible(self) -> list[Route]:
        return [r for r in self.e.routes if self._usable(r)]

    def _worth_retrying(self) -> bool:
        """Another round only if this one tried something and every failure is retryable."""
        if self.attempts == self.round_launched:
            return False  # every provider's breaker is open: fail fast, that is their point
        return all(
            self.e.retry.retry_on(classify(err))
            for err in self.errors[self.round_errors :]
            if not isinstance(err, BreakerOpenError)
        )

    def _failure(self) -> Exception:
        refused = self._refused()
        if refused is not None:
            return refused
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
        active: Active = {}
        try:
            pick, gated = self._pick(pending)
            if pick is not None:
                won = await self._lead_attempt(*pick, pending, active)
                if won is not None:
                    return won
            elif not gated or not await self._wait_at_gates(gated, active):
                return None
            while True:
                if not active and not await self._launch(pending, active):
                    return None
                done = await first_done(active, self.hedge_timeout(pending, active))
                if not done:
                    if self.hedge_due(active) and self.launch_now(pending, active) is not None:
                        self.hedged = True
                    continue
                for task in done:
                    run = active.pop(task)
                    won = await self._settle(task, run, active)
                    if won is not None:
                        return won
        finally:
            await self._cancel(active)

    async def _lead_attempt(
        self, route: Route, permit: Permit, pending: list[Route], active: Active
    ) -> Attempt[T] | None:
        """The round's first attempt, inline; None if it lost or failed (the loop goes on)."""
        run = self._begin(route, permit, active)
        self.lead = run
        hedger = Hedger(self, pending, active, run.timeout)
        try:
            value = await self.start(route)
        except BaseException as exc:
            self.lead = None
            ours = hedger.settle()
            if ours and isinstance(exc, asyncio.CancelledError):
                if not hedger.timed_out:
                    self._drop(run, self.e.clock.monotonic())  # a hedge won: the loop settles it
                    return None
                exc = TimeoutError(f"no answer from {route.name} in {run.timeout:.3g} s")
            elif not isinstance(exc, Exception):  # the caller's cancellation, or worse
                run.permit.release()
                raise
            await self._lead_failed(run, exc, active)
            return None
        self.lead = None
        hedger.settle()  # answered: an interruption that came too late is withdrawn
        return self._judge(run, None, value)

    async def _lead_failed(self, run: Running, exc: Exception, active: Active) -> None:
        try:
            self._judge(run, exc, None)
        except _Fatal:
            await self._cancel(active)
            failure = self._failure()
            raise failure from failure.__cause__

    async def _settle(self, task: asyncio.Task[T], run: Running, active: Active
                      ) -> Attempt[T] | None:
        exc = task.exception()
        try:
            return self._judge(run, exc, None if exc is not None else task.result())
        except _Fatal:
            await self._cancel(active)
            failure = self._failure()
            raise failure from failure.__cause__

    def settle_failure(self, run: Running, exc: Exception) -> None:
        """A non-fatal failure of a hedge, settled while the lead still runs."""
        self._judge(run, exc, None)

    def _judge(self, run: Running, exc: BaseException | None, value: Any) -> Attempt[T] | None:
        """Settle one finished attempt: the winning attempt, or None; :class:`_Fatal` if fatal."""
        e = self.e
        elapsed = e.clock.monotonic() - run.started
        if exc is None:
            if self.settle:
                run.permit.success(elapsed)
            run.route.tracker(self.mode).add(elapsed)
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
            raise _Fatal
        if verdict.kind is ErrorKind.REFUSAL:
            run.permit.success(elapsed)  # it answered: a refusal is no sign of an outage
            if not e.refusal_fallback:
                raise _Fatal
            self.skip.add(run.route.name)
            return None
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

    # -- launching: admission by the breakers, cold gates, counting, timeouts ------------

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

    # -- hedging ----------------------------------------------------------------------------

    def _newest(self, active: Active) -> Running | None:
        newest = self.lead
        for run in active.values():
            if newest is None or run.started > newest.started:
                newest = run
        return newest

    def hedge_timeout(self, pending: list[Route], active: Active) -> float | None:
        """Seconds until the newest attempt's hedge is due (re-checked at least every 0.1 s)."""
        running = len(active) + (self.lead is not None)
        if not self.e.hedge.enabled or not pending or running >= self.e.hedge.max_parallel:
            return None
        newest = self._newest(active)
        if newest is None:
            return None
        route = newest.route
        peers = (r.tracker(self.mode) for r in self.e.routes if r is not route)  # lazily: cold only
        # Recomputed on every wake-up: peers' first answers may shorten a cold provider's delay.
        newest.hedge_at = newest.started + self.e.hedge.delay(route.tracker(self.mode), peers)
        return min(_GATE_TICK_S * 5, max(0.0, newest.hedge_at - self.e.clock.monotonic()))

    def hedge_due(self, active: Active) -> bool:
        """True once the newest attempt has run past its hedge delay."""
        newest = self._newest(active)
        return (newest is not None and newest.hedge_at is not None
                and self.e.clock.monotonic() >= newest.hedge_at)

    def _drop(self, run: Running, now: float) -> None:
        """A loser: one that ran past its hedge delay counts as slow, others are released."""
        if run.hedge_at is not None and now >= run.hedge_at:
            run.permit.slow(now - run.started)
        else:
            run.permit.release()

    async def _cancel(self, active: Active) -> None:
        """Cancel the losers (see :meth:`_drop`); a loser's opened stream is discarded."""
        if not active:
            return
        now = self.e.clock.monotonic()
        for task, run in active.items():
            task.cancel()
            self._drop(run, now)
        results = await asyncio.gather(*active, return_exceptions=True)
        if self.discard is not None:
            for res in results:
                if not isinstance(res, BaseException):
                    await self.discard(res)
        active.clear()


class _Fatal(Exception):
    """Raised by ``_judge`` for a fatal failure; the caller cancels the rest and gives up."""
