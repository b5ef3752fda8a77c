"""Small statistics for the shadow comparison: Wilson intervals, quantiles, bounded samples (pure).

No numpy or scipy: the inverse normal CDF comes from ``statistics.NormalDist``.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Sequence
from statistics import NormalDist


def z_score(confidence: float) -> float:
    """The two-sided standard normal quantile for ``confidence`` (1.959963… for 0.95)."""
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be between 0 and 1 (exclusive), got {confidence!r}")
    return NormalDist().inv_cdf(0.5 + confidence / 2.0)


def wilson_interval(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for ``k`` successes in ``n`` trials.

    Returns ``(low, high)`` with ``0 <= low <= k/n <= high <= 1``; ``n == 0``
    gives ``(0.0, 1.0)`` (no data says nothing). The exact formula:
    ``(p + z²/2n ± z·sqrt(p(1-p)/n + z²/4n²)) / (1 + z²/n)``.
    """
    if n < 0 or k < 0 or k > n:
        raise ValueError(f"need 0 <= k <= n, got k={k!r} n={n!r}")
    z = z_score(confidence)
    if n == 0:
        return (0.0, 1.0)
    p = k / n
    z2 = z * z
    denominator = 1.0 + z2 / n
    center = (p + z2 / (2 * n)) / denominator
    half_width = z * math.sqrt(p * (1.0 - p) / n + z2 / (4.0 * n * n)) / denominator
    low = 0.0 if k == 0 else min(p, max(0.0, center - half_width))
    high = 1.0 if k == n else max(p, min(1.0, center + half_width))
    return (low, high)


def quantile(values: Iterable[float], q: float) -> float | None:
    """The ``q`` quantile (0..1) by linear interpolation between order statistics
    (numpy's default, Hyndman–Fan type 7); ``None`` for no values."""
    ordered = sorted(values)
    return _sorted_quantile(ordered, q)


def quantiles(values: Iterable[float], qs: Sequence[float]) -> list[float | None]:
    """Several quantiles of the same values, sorting once."""
    ordered = sorted(values)
    return [_sorted_quantile(ordered, q) for q in qs]


def _sorted_quantile(ordered: Sequence[float], q: float) -> float | None:
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"quantile must be within 0..1, got {q!r}")
    if not ordered:
        return None
    position = q * (len(ordered) - 1)
    below = math.floor(position)
    above = min(below + 1, len(ordered) - 1)
    fraction = position - below
    return ordered[below] + (ordered[above] - ordered[below]) * fraction


class RecentValues:
    """The last ``capacity`` values, for quantiles of what happened lately (e.g. WS lag p99)."""

    def __init__(self, capacity: int = 1024) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, got {capacity!r}")
        self._values: deque[float] = deque(maxlen=capacity)

    def add(self, value: float) -> None:
        """Remember ``value``; the oldest one goes when full."""
        self._values.append(value)

    def __len__(self) -> int:
        return len(self._values)

    def quantile(self, q: float) -> float | None:
        """The ``q`` quantile of the values held, ``None`` when empty."""
        return quantile(self._values, q)

    @property
    def p50(self) -> float | None:
        return self.quantile(0.5)

    @property
    def p99(self) -> float | None:
        return self.quantile(0.99)
