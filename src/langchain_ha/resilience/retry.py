"""Bounded retries: exponential backoff with full jitter, Retry-After honoured up to a cap.

Callers say what is retryable (``retry_on``); by default only errors classified RETRYABLE.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

from langchain_ha.resilience._clock import SYSTEM_CLOCK, Clock
from langchain_ha.resilience.deadline import current_deadline
from langchain_ha.resilience.errors import Classified, ErrorKind, classify

T = TypeVar("T")


def default_retry_on(verdict: Classified) -> bool:
    """Retry what is classified RETRYABLE (connect errors, timeouts, 5xx, 429)."""
    return verdict.kind is ErrorKind.RETRYABLE


@dataclass(frozen=True)
class RetryPolicy:
    """How many rounds (every provider tried once per round) and how long to wait between."""

    max_rounds: int = 3
    base_delay_s: float = 0.05
    max_delay_s: float = 2.0
    retry_after_cap_s: float = 5.0
    retry_on: Callable[[Classified], bool] = field(default=default_retry_on)

    def __post_init__(self) -> None:
        if self.max_rounds < 1:
            raise ValueError("RetryPolicy.max_rounds must be >= 1")
        for name in ("base_delay_s", "max_delay_s", "retry_after_cap_s"):
            if getattr(self, name) < 0:
                raise ValueError(f"RetryPolicy.{name} must be >= 0")

    def backoff(self, round_index: int, retry_after: float | None = None,
                rng: random.Random | None = None) -> float:
        """Seconds to wait after round ``round_index`` (0-based) failed."""
        ceiling = min(self.max_delay_s, self.base_delay_s * (2 ** round_index))
        delay = (rng or random).uniform(0.0, ceiling)
        if retry_after is not None:
            delay = max(delay, min(retry_after, self.retry_after_cap_s))
        return delay


async def retry_call(
    fn: Callable[[], Awaitable[T]],
    policy: RetryPolicy | None = None,
    *,
    clock: Clock = SYSTEM_CLOCK,
    classify: Callable[[BaseException], Classified] = classify,
) -> T:
    """Call ``fn`` until it succeeds, at most ``policy.max_rounds`` times.

    Only errors the policy deems retryable are retried; the wait never outlives the current
    deadline.  The last error is raised when attempts (or time) run out.
    """
    policy = policy or RetryPolicy()
    for attempt in range(policy.max_rounds):
        try:
            return await fn()
        except Exception as exc:
            verdict = classify(exc)
            if attempt + 1 >= policy.max_rounds or not policy.retry_on(verdict):
                raise
            delay = policy.backoff(attempt, verdict.retry_after)
            dl = current_deadline()
            if dl is not None and dl.remaining() <= delay:
                raise
            await clock.sleep(delay)
    raise AssertionError("unreachable: the loop returns or raises")
