"""A request budget fed by the venue's rate-limit response headers.

The venue adapter says how to read its headers (``RateLimitRule.read``) into a
remaining ratio and a reset time on the server clock; the budget remembers the
latest reading per bucket and tells the client to wait, or to hold the call,
when the budget is spent, instead of provoking a 429 or a ban.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

_SHARED_BUCKET = "*"


@dataclass(frozen=True)
class RateLimitReading:
    """One response's view of the budget: share left (0..1) and when it refills (server ms)."""

    remaining_ratio: float
    reset_at_server_ms: float | None = None


RateLimitReader = Callable[[Mapping[str, str], float], "RateLimitReading | None"]
"""``(response headers, server_now_ms) -> reading``; None when the headers say nothing."""


@dataclass(frozen=True)
class RateLimitRule:
    """How one venue's rate limits work.

    ``shared``: one budget for every endpoint (Binance's per-IP weight) rather
    than one per endpoint (Bybit's per-UID-per-endpoint limits).
    ``reserve_ratio``: stop at this share left, leaving room for other clients
    on the same IP. A spent budget whose reset is at most ``max_wait_seconds``
    away is waited out; a longer one holds the call (``RateLimited``).
    """

    read: RateLimitReader
    shared: bool = False
    reserve_ratio: float = 0.0
    max_wait_seconds: float = 1.0


class RateLimitBudget:
    """The latest rate-limit reading per bucket."""

    def __init__(self, rule: RateLimitRule) -> None:
        self.rule = rule
        self._readings: dict[str, RateLimitReading] = {}

    def _bucket(self, endpoint: str) -> str:
        return _SHARED_BUCKET if self.rule.shared else endpoint

    def record(self, endpoint: str, headers: Mapping[str, str], server_now_ms: float) -> RateLimitReading | None:
        """Read the response headers into the endpoint's bucket."""
        reading = self.rule.read(headers, server_now_ms)
        if reading is not None:
            self._readings[self._bucket(endpoint)] = reading
        return reading

    def seconds_until_allowed(self, endpoint: str, server_now_ms: float) -> float:
        """0 when a request may go now, else the seconds until the budget refills."""
        reading = self._readings.get(self._bucket(endpoint))
        if reading is None or reading.remaining_ratio > self.rule.reserve_ratio:
            return 0.0
        if reading.reset_at_server_ms is None:
            return 0.0
        return max(0.0, (reading.reset_at_server_ms - server_now_ms) / 1000.0)

    def remaining_ratio(self, server_now_ms: float) -> float | None:
        """The lowest share left among buckets whose window has not reset yet."""
        live = [r.remaining_ratio for r in self._readings.values()
                if r.reset_at_server_ms is None or r.reset_at_server_ms > server_now_ms]
        return min(live) if live else None
