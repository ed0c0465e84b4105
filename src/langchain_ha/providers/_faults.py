"""Runtime fault injection and request counting for the provider simulator."""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Route = Literal["chat", "embeddings", "tools", "models"]
ALL_ROUTES: list[Route] = ["chat", "embeddings", "tools", "models"]


class Faults(BaseModel):
    """What to do wrong, from now on.  Every field is optional; unknown fields are refused."""

    model_config = ConfigDict(extra="forbid")

    error_rate: float | None = Field(default=None, ge=0.0, le=1.0)
    status: int | None = Field(default=None, ge=400, le=599)
    latency_ms: float = Field(default=0.0, ge=0.0, le=600_000.0)
    hang: bool = False
    retry_after_s: float | None = Field(default=None, ge=0.0, le=3600.0)
    disconnect_after_chunks: int | None = Field(default=None, ge=0, le=100_000)
    slow_stream_ms: float = Field(default=0.0, ge=0.0, le=60_000.0)
    routes: list[Route] = Field(default_factory=lambda: list(ALL_ROUTES))

    def applies(self, route: str) -> bool:
        """True if this fault is set for ``route``."""
        return route in self.routes

    def error_status(self, rng: random.Random) -> int | None:
        """The status to fail this request with, or None to answer."""
        if self.status is None and self.error_rate is None:
            return None
        rate = 1.0 if self.error_rate is None else self.error_rate
        if rate <= 0.0 or rng.random() >= rate:
            return None
        return self.status or 500


NO_FAULTS = Faults()


class Stats:
    """Requests received by route (on arrival) and finished by route and status."""

    def __init__(self) -> None:
        self.received: Counter[str] = Counter()
        self.by_status: defaultdict[str, Counter[str]] = defaultdict(Counter)

    def arrive(self, route: str) -> None:
        self.received[route] += 1

    def finish(self, route: str, status: int | str) -> None:
        self.by_status[route][str(status)] += 1

    def as_dict(self, name: str) -> dict[str, object]:
        return {
            "name": name,
            "received": dict(self.received),
            "by_status": {route: dict(c) for route, c in self.by_status.items()},
        }
