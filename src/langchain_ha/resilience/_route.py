"""A provider's runtime state in the router, and the winning attempt of a request."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Generic, TypeVar

from langchain_ha.resilience.breaker import CircuitBreaker, Permit
from langchain_ha.resilience.hedging import LatencyTracker

T = TypeVar("T")


@dataclass
class Route:
    """One provider's runtime state, shared by every request (and every bound copy)."""

    name: str
    index: int
    breaker: CircuitBreaker
    timeout_s: float | None
    context_window: int | None
    latency: dict[str, LatencyTracker] = field(default_factory=dict)
    prefill: bool = False  # continues a partial answer from an assistant prefill
    finish_marker: bool = False  # its streams end with a finish reason: one without is cut

    def tracker(self, mode: str) -> LatencyTracker:
        tracker = self.latency.get(mode)
        if tracker is None:
            tracker = self.latency[mode] = LatencyTracker()
        return tracker


@dataclass
class Attempt(Generic[T]):
    """The winning attempt of a request."""

    route: Route
    permit: Permit
    value: T
    started: float
    attempts: int
    hedged: bool
