"""The one percentile definition of the project: nearest rank.

The ``q`` quantile of ``n`` values is the value of rank ``ceil(q * n)`` (1-based, at least 1)
in ascending order: always one of the values measured, never an interpolation between two,
and the same figure wherever it is computed (drills, ``lcha bench``, the hedging delay).  For
100 values, p99 is the 99th smallest and p50 the 50th; for 2 values p50 is the smaller one.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

DEFINITION = "nearest-rank"


def rank(q: float, n: int) -> int:
    """The 1-based rank of the ``q`` quantile among ``n`` values (``0 < q <= 1``, ``n >= 1``)."""
    # round(): q * n carries binary noise (0.07 * 100 == 7.000000000000001), which must not
    # move the rank up by one.
    return min(n, max(1, math.ceil(round(q * n, 9))))


def percentile_of_sorted(ordered: Sequence[float], q: float) -> float | None:
    """The nearest-rank ``q`` quantile of ``ordered`` (ascending already), or None if empty."""
    if not ordered:
        return None
    return ordered[rank(q, len(ordered)) - 1]


def percentile(values: Iterable[float], q: float) -> float | None:
    """The nearest-rank ``q`` quantile of ``values`` (any order), or None if there are none."""
    return percentile_of_sorted(sorted(values), q)
