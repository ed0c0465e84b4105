"""The request deadline, carried in a context variable.

Every attempt's timeout is ``min(its own timeout, time left)``; nested deadlines keep the
earlier one, so a caller can only shorten what an inner layer allows.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator

from langchain_ha.resilience._clock import SYSTEM_CLOCK, Clock
from langchain_ha.resilience.errors import DeadlineExceeded


class Deadline:
    """An instant on ``clock``'s monotonic time by which the request must be done."""

    __slots__ = ("at", "clock")

    def __init__(self, at: float, clock: Clock = SYSTEM_CLOCK) -> None:
        self.at = at
        self.clock = clock

    def remaining(self) -> float:
        """Seconds left (negative once passed)."""
        return self.at - self.clock.monotonic()

    @property
    def expired(self) -> bool:
        """True once the deadline has passed."""
        return self.remaining() <= 0

    def __repr__(self) -> str:
        return f"Deadline(remaining={self.remaining():.3f}s)"


_CURRENT: contextvars.ContextVar[Deadline | None] = contextvars.ContextVar(
    "lcha_deadline", default=None
)


def current_deadline() -> Deadline | None:
    """The deadline of the request being run, if any."""
    return _CURRENT.get()


@contextlib.contextmanager
def deadline(seconds: float, clock: Clock = SYSTEM_CLOCK) -> Iterator[Deadline]:
    """Run the block under a deadline ``seconds`` from now (or the enclosing one, if earlier)."""
    if seconds < 0:
        raise ValueError("deadline seconds must be >= 0")
    mine = Deadline(clock.monotonic() + seconds, clock)
    outer = _CURRENT.get()
    effective = outer if outer is not None and outer.remaining() <= mine.remaining() else mine
    token = _CURRENT.set(effective)
    try:
        yield effective
    finally:
        _CURRENT.reset(token)


def attempt_timeout(per_attempt: float | None, clock: Clock = SYSTEM_CLOCK) -> float | None:
    """``min(per_attempt, time left)``; None if neither bounds it.

    Raises :class:`DeadlineExceeded` if the deadline has already passed.
    """
    dl = _CURRENT.get()
    if dl is None:
        return per_attempt
    left = dl.remaining()
    if left <= 0:
        raise DeadlineExceeded("the request deadline has passed")
    return left if per_attempt is None else min(per_attempt, left)
