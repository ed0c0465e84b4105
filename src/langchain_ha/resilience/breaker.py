"""Circuit breaker: closed → open → half-open, shared across replicas through a store.

CLOSED counts outcomes in a sliding window (by count or by time) and opens when, with at least
``minimum_calls`` outcomes, the failure rate or the slow-call rate reaches its threshold.  OPEN
rejects calls for ``open_duration_s``, multiplied on each repeated trip up to a cap
(``open_duration_max_s``, 20 s: a provider that recovers is used again within about that long,
however long its outage was).  HALF_OPEN admits a bounded number of probes (one by default):
all succeed → CLOSED; any fails → OPEN again.

With a shared store, the replicas take turns: when an open interval ends, a replica must claim
the probe in the store (:meth:`BreakerStore.claim_probe`), so there is one probe per interval
across all replicas; the others keep the breaker open until the claimer publishes the outcome
(CLOSED or a new OPEN), which they adopt.  A claim lapses after ``probe_lease_s`` (the claimer
may have died).

A provider that has never answered is not trusted blindly: until its first success at most
``cold_probes`` calls are in flight (a slow start), and if that many fail in a row it opens at
once.  So a provider that is down from the start costs a handful of calls, not a wave.

The hot path (``try_acquire`` and the permit's outcome) is synchronous and O(1); talking to a
shared :class:`BreakerStore` happens in background tasks, never on the caller's path.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import weakref
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Literal, Protocol

from langchain_ha.resilience._clock import SYSTEM_CLOCK, Clock
from langchain_ha.resilience._window import CountWindow, TimeWindow, Window

log = logging.getLogger("langchain_ha.breaker")


class BreakerState(StrEnum):
    """The breaker's state."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(frozen=True)
class BreakerConfig:
    """Circuit-breaker settings (defaults suit LLM providers)."""

    window: Literal["count", "time"] = "count"
    window_size: int = 20
    minimum_calls: int = 5
    failure_rate_threshold: float = 0.5
    slow_call_duration_s: float = 30.0
    slow_call_rate_threshold: float = 0.8
    open_duration_s: float = 5.0
    open_duration_multiplier: float = 2.0
    open_duration_max_s: float = 20.0
    half_open_max_calls: int = 1
    cold_probes: int = 3
    sync_interval_s: float = 1.0
    probe_lease_s: float = 30.0

    def __post_init__(self) -> None:
        if self.window not in ("count", "time"):
            raise ValueError("BreakerConfig.window must be 'count' or 'time'")
        for name in ("window_size", "minimum_calls", "half_open_max_calls", "cold_probes"):
            if getattr(self, name) < 1:
                raise ValueError(f"BreakerConfig.{name} must be >= 1")
        for name in ("failure_rate_threshold", "slow_call_rate_threshold"):
            if not 0.0 < getattr(self, name) <= 1.0:
                raise ValueError(f"BreakerConfig.{name} must be in (0, 1]")
        for name in ("slow_call_duration_s", "open_duration_s", "open_duration_max_s",
                     "sync_interval_s", "probe_lease_s"):
            if getattr(self, name) <= 0:
                raise ValueError(f"BreakerConfig.{name} must be > 0")
        if self.open_duration_multiplier < 1.0:
            raise ValueError("BreakerConfig.open_duration_multiplier must be >= 1")
        if self.open_duration_max_s < self.open_duration_s:
            raise ValueError("BreakerConfig.open_duration_max_s must be >= open_duration_s")


@dataclass(frozen=True)
class SharedBreakerState:
    """What replicas share about a breaker: its state and, if open, until when (epoch s)."""

    state: BreakerState
    open_until: float
    trips: int
    updated_at: float


class BreakerStore(Protocol):
    """Shared breaker state (in memory, or PostgreSQL so every replica sees a trip)."""

    async def load(self, name: str) -> SharedBreakerState | None:
        """The shared state of breaker ``name`` (None if never published)."""
        ...

    async def save(self, name: str, state: SharedBreakerState) -> None:
        """Publish ``state``; an older ``updated_at`` never overwrites a newer one.  A save
        ends any probe claim."""
        ...

    async def claim_probe(self, name: str, now: float, lease_s: float) -> bool:
        """Claim the half-open probe of breaker ``name`` at wall time ``now``: True if this
        caller may probe (the shared open interval is over and nobody holds an unexpired
        claim); the claim holds for ``lease_s`` or until the next save."""
        ...


class InMemoryBreakerStore:
    """A store shared by the breakers of one process."""

    def __init__(self) -> None:
        self._states: dict[str, SharedBreakerState] = {}
        self._claims: dict[str, float] = {}

    async def load(self, name: str) -> SharedBreakerState | None:
        """The shared state of breaker ``name``."""
        return self._states.get(name)

    async def save(self, name: str, state: SharedBreakerState) -> None:
        """Publish ``state`` (the newest ``updated_at`` wins); ends the probe claim."""
        current = self._states.get(name)
        if current is None or state.updated_at >= current.updated_at:
            self._states[name] = state
            self._claims.pop(name, None)

    async def claim_probe(self, name: str, now: float, lease_s: float) -> bool:
        """Claim the half-open probe of ``name`` (see :meth:`BreakerStore.claim_probe`)."""
        state = self._states.get(name)
        if state is not None and state.state is BreakerState.OPEN and state.open_until > now:
            return False
        if self._claims.get(name, float("-inf")) > now:
            return False
        self._claims[name] = now + lease_s
        return True


TransitionHook = Callable[[str, BreakerState, BreakerState], None]


class Permit:
    """Leave to make one call; report its outcome exactly once (later reports are ignored)."""

    __slots__ = ("_breaker", "_cold", "_done", "_generation", "_probe")

    def __init__(self, breaker: CircuitBreaker, *, cold: bool, probe: bool, generation: int):
        self._breaker = breaker
        self._cold = cold
        self._probe = probe
        self._generation = generation
        self._done = False

    def success(self, duration_s: float) -> None:
        """The call succeeded (slow if it took ``slow_call_duration_s`` or more)."""
        self._finish("success", duration_s, None)

    def failure(self, duration_s: float, *, retry_after: float | None = None) -> None:
        """The call failed; with ``retry_after`` the provider asked for a pause: open now."""
        self._finish("failure", duration_s, retry_after)

    def slow(self, duration_s: float) -> None:
        """The call was abandoned as too slow (lost a hedge, first-token timeout)."""
        self._finish("slow", duration_s, None)

    def release(self) -> None:
        """The call was cancelled without evidence either way."""
        self._finish("release", 0.0, None)

    def _finish(self, outcome: str, duration_s: float, retry_after: float | None) -> None:
        if self._done:
            return
        self._done = True
        self._breaker._record(self._cold, self._probe, self._generation, outcome, duration_s,
                              retry_after)


class CircuitBreaker:
    """One provider's circuit breaker.  See the module docstring for the rules."""

    def __init__(self, name: str, config: BreakerConfig | None = None, *,
                 clock: Clock = SYSTEM_CLOCK, store: BreakerStore | None = None,
                 on_transition: TransitionHook | None = None) -> None:
        self.name = name
        self.config = config or BreakerConfig()
        self._clock = clock
        self._store = store
        self._hook = on_transition
        self._window: Window = (CountWindow(self.config.window_size)
                                if self.config.window == "count"
                                else TimeWindow(self.config.window_size))
        self._state = BreakerState.CLOSED
        self._generation = 0
        self._open_until = 0.0
        self._trips = 0
        self._proven = False
        self._cold_in_flight = 0
        self._cold_failures = 0
        self._probes_issued = 0
        self._probe_successes = 0
        self._last_sync = float("-inf")
        self._opened_at = float("-inf")  # wall time of the last trip (ours or adopted)
        self._claim: Literal["none", "pending", "granted", "denied"] = "none"
        self._claim_again_at = 0.0
        self._refresh: asyncio.TimerHandle | None = None
        self._waiters: dict[asyncio.AbstractEventLoop, asyncio.Event] = {}
        self._tasks: set[asyncio.Task[Any]] = set()

    # -- state ---------------------------------------------------------------------------------

    @property
    def state(self) -> BreakerState:
        """The current state (an expired OPEN turns HALF_OPEN here)."""
        if self._state is BreakerState.OPEN and self._clock.monotonic() >= self._open_until:
            # Not published: the probe's outcome is what the other replicas need to know.
            self._transition(BreakerState.HALF_OPEN, publish=False)
        return self._state

    def retry_in(self) -> float | None:
        """Seconds until an open breaker admits a probe; None unless open."""
        if self.state is not BreakerState.OPEN:
            return None
        return max(0.0, self._open_until - self._clock.monotonic())

    def snapshot(self) -> dict[str, object]:
        """A view for health pages, admin endpoints and status commands."""
        calls, failures, slow = self._window.stats(self._clock.monotonic())
        return {
            "name": self.name,
            "state": self.state.value,
            "calls_in_window": calls,
            "failure_rate": round(failures / calls, 4) if calls else 0.0,
            "slow_rate": round(slow / calls, 4) if calls else 0.0,
            "trips": self._trips,
            "open_for_s": round(self.retry_in() or 0.0, 3),
            "in_flight_cold": self._cold_in_flight,
            "proven": self._proven,
        }

    def reset(self) -> None:
        """Back to CLOSED with an empty window (an operator's decision)."""
        self._window.clear()
        self._trips = 0
        self._cold_failures = 0
        self._transition(BreakerState.CLOSED)
        self._notify()

    def force_open(self, seconds: float) -> None:
        """Open now for ``seconds`` (e.g. a provider's Retry-After)."""
        self._trips += 1
        self._open_until = max(self._open_until, self._clock.monotonic() + max(0.0, seconds))
        self._transition(BreakerState.OPEN)

    # -- admission -----------------------------------------------------------------------------

    def try_acquire(self) -> Permit | None:
        """A permit to call now, or None (open, probes used up, or the cold gate is full)."""
        if self._store is not None:
            self._maybe_sync()
        state = self.state
        if state is BreakerState.OPEN:
            return None
        if state is BreakerState.HALF_OPEN:
            if self._probes_issued >= self.config.half_open_max_calls:
                return None
            if self._store is not None and not self._probe_claimed():
                return None
            self._probes_issued += 1
            return Permit(self, cold=False, probe=True, generation=self._generation)
        if not self._proven:
            if self._cold_in_flight >= self.config.cold_probes:
                return None
            self._cold_in_flight += 1
            return Permit(self, cold=True, probe=False, generation=self._generation)
        return Permit(self, cold=False, probe=False, generation=self._generation)

    async def acquire(self, wait_s: float) -> Permit | None:
        """Like :meth:`try_acquire`, but wait up to ``wait_s`` at a full cold gate."""
        end = self._clock.monotonic() + wait_s
        while True:
            permit = self.try_acquire()
            if permit is not None or self._state is not BreakerState.CLOSED:
                return permit
            left = end - self._clock.monotonic()
            if left <= 0:
                return None
            loop = asyncio.get_running_loop()
            changed = self._waiters.get(loop)
            if changed is None:
                changed = self._waiters[loop] = asyncio.Event()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), left)

    # -- outcomes ------------------------------------------------------------------------------

    def _record(self, cold: bool, probe: bool, generation: int, outcome: str, duration: float,
                retry_after: float | None) -> None:
        if cold:
            self._cold_in_flight -= 1
        try:
            if generation != self._generation:
                return  # evidence about a state that is already gone
            if outcome == "release":
                if probe:
                    self._probes_issued -= 1  # no evidence: the probe slot is free again
                return
            failed = outcome != "success"
            slow = outcome == "slow" or duration >= self.config.slow_call_duration_s
            if failed and retry_after is not None:
                self.force_open(retry_after)
            elif self._state is BreakerState.HALF_OPEN and probe:
                self._after_probe(failed)
            elif self._state is BreakerState.CLOSED:
                self._after_call(failed, slow)
        finally:
            self._notify()

    def _after_probe(self, failed: bool) -> None:
        if failed:
            self._trip()
            return
        self._probe_successes += 1
        if self._probe_successes >= self.config.half_open_max_calls:
            self._trips = 0
            self._window.clear()
            self._proven = True
            self._transition(BreakerState.CLOSED)

    def _after_call(self, failed: bool, slow: bool) -> None:
        if not failed:
            self._proven = True
            self._cold_failures = 0
        elif not self._proven:
            self._cold_failures += 1
            if self._cold_failures >= self.config.cold_probes:
                self._trip()
                return
        now = self._clock.monotonic()
        self._window.add(failed, slow, now)
        calls, failures, slows = self._window.stats(now)
        cfg = self.config
        if calls >= cfg.minimum_calls and (
            failures / calls >= cfg.failure_rate_threshold
            or slows / calls >= cfg.slow_call_rate_threshold
        ):
            self._trip()

    def _probe_claimed(self) -> bool:
        """With a shared store: whether this replica holds the probe of the interval that
        ended (a claim is started in the background; until it is granted, the answer is no)."""
        if self._claim == "granted":
            return True
        if self._claim == "pending":
            return False
        if self._claim == "denied" and self._clock.monotonic() < self._claim_again_at:
            return False
        self._claim = "pending"
        self._background(self._claim_probe(self._generation))
        return False

    async def _claim_probe(self, generation: int) -> None:
        assert self._store is not None
        claim = getattr(self._store, "claim_probe", None)
        if claim is None:  # a store that cannot coordinate probes: each replica probes
            granted = True
        else:
            try:
                granted = bool(await claim(self.name, self._clock.time(),
                                           self.config.probe_lease_s))
            except Exception as exc:  # the store is down: one probe per replica is fine
                log.warning("breaker %s: probe claim failed (%r); probing locally", self.name,
                            exc)
                granted = True
        if generation != self._generation:
            return  # the state moved on while we asked
        self._claim = "granted" if granted else "denied"
        if not granted:
            self._claim_again_at = self._clock.monotonic() + self.config.probe_lease_s
            self._last_sync = float("-inf")  # look for the claimer's outcome at once
        self._notify()

    def _trip(self) -> None:
        self._trips += 1
        cfg = self.config
        duration = min(cfg.open_duration_max_s,
                       cfg.open_duration_s * cfg.open_duration_multiplier ** (self._trips - 1))
        self._open_until = self._clock.monotonic() + duration
        self._transition(BreakerState.OPEN)

    def _transition(self, new: BreakerState, *, publish: bool = True) -> None:
        old = self._state
        if old is new:
            return
        self._state = new
        self._generation += 1
        self._probes_issued = self._probe_successes = 0
        self._cold_failures = 0
        self._claim = "none"
        if new is BreakerState.OPEN and publish:
            self._opened_at = self._clock.time()
        if new is not BreakerState.CLOSED:
            self._keep_fresh()
        log.info("breaker %s: %s -> %s", self.name, old.value, new.value)
        if self._hook is not None:
            try:
                self._hook(self.name, old, new)
            except Exception:
                log.exception("breaker transition hook failed")
        if publish and self._store is not None:
            wall_until = self._clock.time() + max(0.0, self._open_until - self._clock.monotonic())
            shared = SharedBreakerState(new, wall_until if new is BreakerState.OPEN else 0.0,
                                        self._trips, self._clock.time())
            self._background(self._store.save(self.name, shared))

    def _notify(self) -> None:
        """Wake the waiters at the cold gate, on whichever event loop they wait."""
        if not self._waiters:
            return
        waiters, self._waiters = self._waiters, {}
        try:
            running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        for loop, event in waiters.items():
            if loop is running:
                event.set()
            elif not loop.is_closed():
                loop.call_soon_threadsafe(event.set)

    # -- the shared store ----------------------------------------------------------------------

    def _keep_fresh(self) -> None:
        """While not closed, read the shared state every ``sync_interval_s`` in the background,
        so a replica with sparse traffic learns of another's successful probe before its next
        request (a timer on the event loop: nothing runs once the breaker is closed)."""
        if self._store is None or self._refresh is not None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        # The timer holds the breaker weakly: a router that is dropped while a breaker is
        # open must not keep it (and its reads) alive on the loop for ever.
        self._refresh = loop.call_later(self.config.sync_interval_s, _refresh, weakref.ref(self))

    def _refresh_now(self) -> None:
        self._refresh = None
        if self.state is BreakerState.CLOSED:
            return
        self._last_sync = self._clock.monotonic()
        self._background(self._pull())
        self._keep_fresh()

    def _maybe_sync(self) -> None:
        now = self._clock.monotonic()
        if now - self._last_sync < self.config.sync_interval_s:
            return
        self._last_sync = now
        self._background(self._pull())

    async def _pull(self) -> None:
        assert self._store is not None
        shared = await self._store.load(self.name)
        if shared is None:
            return
        if shared.state is BreakerState.CLOSED:
            # Another replica's probe succeeded after our breaker opened: the provider is back.
            if self._state is not BreakerState.CLOSED and shared.updated_at > self._opened_at:
                self._trips = 0
                self._window.clear()
                self._proven = True
                self._transition(BreakerState.CLOSED, publish=False)
                self._notify()
            return
        if shared.state is not BreakerState.OPEN:
            return
        left = shared.open_until - self._clock.time()
        if left > 0 and self._state is not BreakerState.OPEN:
            self._trips = max(self._trips, shared.trips)
            self._open_until = self._clock.monotonic() + left
            self._opened_at = shared.updated_at
            self._transition(BreakerState.OPEN, publish=False)
            self._notify()

    def _background(self, coro: Coroutine[Any, Any, None]) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            coro.close()  # no loop (sync use without the router): the store is skipped
            return
        task = loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("breaker %s: shared store failed: %r", self.name, task.exception())


def _refresh(ref: weakref.ReferenceType[CircuitBreaker]) -> None:
    breaker = ref()
    if breaker is not None:
        breaker._refresh_now()
