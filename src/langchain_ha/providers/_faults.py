"""Runtime fault injection and request counting for the provider simulator.

A :class:`Faults` is what to do wrong, set through ``POST /_faults``.  Besides transport
faults (errors, latency, broken streams) it holds *model behaviours*: a model that ignores a
continuation request, refuses, or is cut off by a content filter, so a router cannot rely on a
model obeying it.  :class:`FaultSetting` adds the clock: a fault set with ``down_for_s`` is
active only part of the time (flapping).
"""

from __future__ import annotations

import random
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

Route = Literal["chat", "embeddings", "tools", "models"]
ALL_ROUTES: list[Route] = ["chat", "embeddings", "tools", "models"]
RestartStyle = Literal["replay", "preamble", "reword"]
_MAX_CHUNKS = 100_000
_MAX_PERIOD_S = 86_400.0


class Faults(BaseModel):
    """What to do wrong, from now on.  Every field is optional; unknown fields are refused.

    Stream faults (``*_after_chunks``, ``drop_terminator``, ``slow_stream_ms``) count SSE events
    and apply to streamed answers only; ``first_token_ms`` delays a stream's first content event
    (the headers go at once) and a plain answer as a whole.
    """

    model_config = ConfigDict(extra="forbid")

    error_rate: float | None = Field(default=None, ge=0.0, le=1.0)
    status: int | None = Field(default=None, ge=400, le=599)
    latency_ms: float = Field(default=0.0, ge=0.0, le=600_000.0)
    hang: bool = False
    retry_after_s: float | None = Field(default=None, ge=0.0, le=3600.0)
    disconnect_after_chunks: int | None = Field(default=None, ge=0, le=_MAX_CHUNKS)
    slow_stream_ms: float = Field(default=0.0, ge=0.0, le=60_000.0)
    routes: list[Route] = Field(default_factory=lambda: list(ALL_ROUTES))
    # model behaviours
    ignore_continuation: bool = False
    restart_style: RestartStyle = "replay"
    reject_prefill: bool = False
    refuse: bool = False
    content_filter: Literal["prompt", "output"] | None = None
    context_window_chars: int | None = Field(default=None, ge=1, le=100_000_000)
    # stream and connection faults
    stall_after_chunks: int | None = Field(default=None, ge=0, le=_MAX_CHUNKS)
    malformed_after_chunks: int | None = Field(default=None, ge=0, le=_MAX_CHUNKS)
    truncate_after_chunks: int | None = Field(default=None, ge=0, le=_MAX_CHUNKS)
    drop_terminator: bool = False
    first_token_ms: float = Field(default=0.0, ge=0.0, le=600_000.0)
    reset_before_headers: bool = False
    # flapping: active for down_for_s from when it was set, then healthy (for up_for_s, repeating)
    down_for_s: float | None = Field(default=None, gt=0.0, le=_MAX_PERIOD_S)
    up_for_s: float | None = Field(default=None, gt=0.0, le=_MAX_PERIOD_S)

    @field_validator("up_for_s")
    @classmethod
    def _up_needs_down(cls, value: float | None, info: ValidationInfo) -> float | None:
        if value is not None and info.data.get("down_for_s") is None:
            raise ValueError("up_for_s needs down_for_s (a cycle starts with the fault down)")
        return value

    def applies(self, route: str) -> bool:
        """True if this fault is set for ``route``."""
        return route in self.routes

    def active_after(self, elapsed_s: float) -> bool:
        """True if the fault applies ``elapsed_s`` seconds after it was set (flapping)."""
        if self.down_for_s is None:
            return True
        if self.up_for_s is None:
            return elapsed_s < self.down_for_s
        return elapsed_s % (self.down_for_s + self.up_for_s) < self.down_for_s

    def error_status(self, rng: random.Random) -> int | None:
        """The status to fail this request with, or None to answer."""
        if self.status is None and self.error_rate is None:
            return None
        rate = 1.0 if self.error_rate is None else self.error_rate
        if rate <= 0.0 or rng.random() >= rate:
            return None
        return self.status or 500


NO_FAULTS = Faults()


class FaultSetting:
    """The faults in force and when they were set (flapping is measured from then)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.faults = NO_FAULTS
        self.since = clock()

    def set(self, faults: Faults) -> None:
        self.faults = faults
        self.since = self.clock()

    def clear(self) -> None:
        self.set(NO_FAULTS)

    def active(self) -> bool:
        """True if the faults apply now (always, unless flapping puts them in an up period)."""
        return self.faults.active_after(self.clock() - self.since)

    def for_route(self, route: str) -> Faults:
        """The faults a request to ``route`` meets now (NO_FAULTS if none apply)."""
        if self.faults.applies(route) and self.active():
            return self.faults
        return NO_FAULTS

    def as_dict(self) -> dict[str, Any]:
        """What ``GET /_faults`` shows: every field, and whether the fault is active now."""
        return {**self.faults.model_dump(), "active": self.faults != NO_FAULTS and self.active()}


class Stats:
    """Requests received by route (on arrival) and finished by route and status."""

    def __init__(self) -> None:
        self.received: Counter[str] = Counter()
        self.by_status: defaultdict[str, Counter[str]] = defaultdict(Counter)

    def arrive(self, route: str) -> None:
        self.received[route] += 1

    def finish(self, route: str, status: int | str) -> None:
        self.by_status[route][str(status)] += 1

    def clear(self) -> None:
        self.received.clear()
        self.by_status.clear()

    def as_dict(self, name: str) -> dict[str, object]:
        return {
            "name": name,
            "received": dict(self.received),
            "by_status": {route: dict(c) for route, c in self.by_status.items()},
        }
