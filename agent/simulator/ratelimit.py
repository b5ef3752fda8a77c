"""Rate limiters of both venues (pure logic; callers pass the server time in ms)."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True, slots=True)
class WindowDecision:
    """Outcome of one request against a Bybit per-endpoint limit, with its header values."""

    allowed: bool
    limit: int
    remaining: int
    reset_ms: int


class RollingWindowLimiter:
    """At most ``limit`` requests in any rolling ``window_ms`` (Bybit per UID and endpoint)."""

    def __init__(self, limit: int, window_ms: int = 1000) -> None:
        self.limit = limit
        self.window_ms = window_ms
        self._stamps: deque[int] = deque()

    def acquire(self, now_ms: int) -> WindowDecision:
        """Count one request if it fits; refused requests are not counted."""
        while self._stamps and self._stamps[0] <= now_ms - self.window_ms:
            self._stamps.popleft()
        allowed = len(self._stamps) < self.limit
        if allowed:
            self._stamps.append(now_ms)
        # The window frees its first slot when the oldest request in it ages out.
        reset_ms = (self._stamps[0] if self._stamps else now_ms) + self.window_ms
        return WindowDecision(allowed, self.limit, self.limit - len(self._stamps), reset_ms)


class IpLimiter:
    """Bybit's IP limit: over ``limit`` requests per rolling window bans the IP (HTTP 403)."""

    def __init__(self, limit: int, window_ms: int, ban_ms: int) -> None:
        self._window = RollingWindowLimiter(limit, window_ms)
        self._ban_ms = ban_ms
        self.banned_until_ms = 0

    def allow(self, now_ms: int) -> bool:
        """True if the request may proceed; False while banned (a breach starts the ban)."""
        if now_ms < self.banned_until_ms:
            return False
        if self._window.acquire(now_ms).allowed:
            return True
        self.banned_until_ms = now_ms + self._ban_ms
        return False


WeightOutcome = Literal["ok", "limited", "banned"]


@dataclass(frozen=True, slots=True)
class WeightDecision:
    """Outcome of one request against the Binance weight limit."""

    outcome: WeightOutcome
    used_weight: int
    retry_after_s: int
    banned_until_ms: int = 0


class WeightLimiter:
    """Binance request weight per fixed minute; 429 over it, 418 ban for continuing."""

    def __init__(self, limit_per_minute: int, *, limited_answers_before_ban: int, ban_ms: int) -> None:
        self.limit = limit_per_minute
        self._answers_before_ban = limited_answers_before_ban
        self._ban_ms = ban_ms
        self._minute = -1
        self._used = 0
        self._limited_answers = 0
        self.banned_until_ms = 0

    def used(self, now_ms: int) -> int:
        """Weight used in the current minute."""
        self._roll(now_ms)
        return self._used

    def charge(self, weight: int, now_ms: int) -> WeightDecision:
        """Charge ``weight``; over the limit answer 429, and 418 (ban) once the client kept going.

        Refused requests count too, as on Binance: a client that ignores 429 only digs deeper.
        """
        self._roll(now_ms)
        if now_ms < self.banned_until_ms:
            return self._banned(now_ms)
        self._used += weight
        if self._used <= self.limit:
            return WeightDecision("ok", self._used, 0)
        if self._limited_answers >= self._answers_before_ban:
            self.banned_until_ms = now_ms + self._ban_ms
            return self._banned(now_ms)
        self._limited_answers += 1
        retry_after_s = max(1, -(-(60_000 - now_ms % 60_000) // 1000))
        return WeightDecision("limited", self._used, retry_after_s)

    def _banned(self, now_ms: int) -> WeightDecision:
        retry_after_s = max(1, -(-(self.banned_until_ms - now_ms) // 1000))
        return WeightDecision("banned", self._used, retry_after_s, self.banned_until_ms)

    def _roll(self, now_ms: int) -> None:
        minute = now_ms // 60_000
        if minute != self._minute:
            self._minute = minute
            self._used = 0
            self._limited_answers = 0
