"""Sliding windows of call outcomes for the circuit breaker: by count, or by time."""

from __future__ import annotations

from collections import deque
from typing import Protocol


class Window(Protocol):
    """Outcomes of recent calls."""

    def add(self, failed: bool, slow: bool, now: float) -> None: ...

    def stats(self, now: float) -> tuple[int, int, int]:
        """(calls, failures, slow calls) in the window."""
        ...

    def clear(self) -> None: ...


class CountWindow:
    """The last ``size`` outcomes."""

    def __init__(self, size: int) -> None:
        self._items: deque[tuple[bool, bool]] = deque(maxlen=size)
        self._failures = 0
        self._slow = 0

    def add(self, failed: bool, slow: bool, now: float) -> None:
        if len(self._items) == self._items.maxlen:
            old_failed, old_slow = self._items[0]
            self._failures -= old_failed
            self._slow -= old_slow
        self._items.append((failed, slow))
        self._failures += failed
        self._slow += slow

    def stats(self, now: float) -> tuple[int, int, int]:
        return len(self._items), self._failures, self._slow

    def clear(self) -> None:
        self._items.clear()
        self._failures = self._slow = 0


class TimeWindow:
    """Outcomes of the last ``seconds`` seconds, in one-second buckets (bounded memory)."""

    def __init__(self, seconds: int) -> None:
        self._seconds = seconds
        self._buckets: deque[list[int]] = deque()  # [second, calls, failures, slow]
        self._totals = [0, 0, 0]

    def _evict(self, now: float) -> None:
        horizon = int(now) - self._seconds
        while self._buckets and self._buckets[0][0] <= horizon:
            _, calls, failures, slow = self._buckets.popleft()
            self._totals[0] -= calls
            self._totals[1] -= failures
            self._totals[2] -= slow

    def add(self, failed: bool, slow: bool, now: float) -> None:
        self._evict(now)
        second = int(now)
        if not self._buckets or self._buckets[-1][0] != second:
            self._buckets.append([second, 0, 0, 0])
        bucket = self._buckets[-1]
        bucket[1] += 1
        bucket[2] += failed
        bucket[3] += slow
        self._totals[0] += 1
        self._totals[1] += failed
        self._totals[2] += slow

    def stats(self, now: float) -> tuple[int, int, int]:
        self._evict(now)
        return self._totals[0], self._totals[1], self._totals[2]

    def clear(self) -> None:
        self._buckets.clear()
        self._totals = [0, 0, 0]
