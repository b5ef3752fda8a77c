"""Reconnect pacing: capped exponential backoff with full jitter, and sliding-window budgets.

``JitterBackoff`` spaces out retries of one connection. ``SlidingWindowLimiter``
caps events in any window of time: as a ``ConnectionBudget`` it is shared by
every connection to one WebSocket domain (Bybit allows 500 connects per 5
minutes per domain), and per connection it paces outgoing frames (Binance
allows 10 incoming messages per second). Neither ever lets a tight loop
produce a reconnect storm: an empty budget waits, it never fails.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import deque
from collections.abc import Callable


class JitterBackoff:
    """Capped exponential backoff with full jitter: ``uniform(0, min(cap, initial * 2**attempt))``.

    ``rng`` returns a float in [0, 1); tests pass ``lambda: 1.0`` to get the
    upper bound of each step.
    """

    def __init__(self, initial_seconds: float, max_seconds: float,
                 rng: Callable[[], float] = random.random) -> None:
        if initial_seconds <= 0 or max_seconds < initial_seconds:
            raise ValueError(f"backoff needs 0 < initial <= max, was {initial_seconds}, {max_seconds}")
        self.initial_seconds = initial_seconds
        self.max_seconds = max_seconds
        self._rng = rng
        self.attempt = 0

    def ceiling(self, attempt: int) -> float:
        """Upper bound of the delay before retry number ``attempt`` (0-based)."""
        # min() before the power would overflow on long outages; cap the exponent instead.
        return min(self.max_seconds, self.initial_seconds * 2.0 ** min(attempt, 62))

    def delay_for(self, attempt: int) -> float:
        """A jittered delay for retry number ``attempt``, without changing the state."""
        return self._rng() * self.ceiling(attempt)

    def next_delay(self) -> float:
        """The delay to wait now; the next one may be longer."""
        delay = self.delay_for(self.attempt)
        self.attempt += 1
        return delay

    def reset(self) -> None:
        """Start again from the initial delay (after a connection stayed healthy)."""
        self.attempt = 0


class SlidingWindowLimiter:
    """At most ``max_events`` in any ``window_seconds``; ``acquire`` waits for room.

    Keeps the times of the last ``max_events`` events (bounded memory), so the
    cap is exact, not an average as with a refilling token bucket.
    """

    def __init__(self, max_events: int, window_seconds: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if max_events < 1 or window_seconds <= 0:
            raise ValueError(f"limiter needs max_events >= 1 and window > 0, was {max_events}, {window_seconds}")
        self.max_events = max_events
        self.window_seconds = window_seconds
        self._clock = clock
        self._times: deque[float] = deque()
        self.waits = 0

    def _prune(self, now: float) -> None:
        while self._times and now - self._times[0] >= self.window_seconds:
            self._times.popleft()

    def wait_seconds(self) -> float:
        """Seconds until one more event is allowed (0 when allowed now)."""
        now = self._clock()
        self._prune(now)
        if len(self._times) < self.max_events:
            return 0.0
        return max(0.0, self._times[0] + self.window_seconds - now)

    def try_acquire(self) -> bool:
        """Record an event now if there is room."""
        if self.wait_seconds() > 0:
            return False
        self._times.append(self._clock())
        return True

    async def acquire(self) -> float:
        """Wait until there is room, record the event, and return how long it waited."""
        waited = 0.0
        while True:
            delay = self.wait_seconds()
            if delay <= 0:
                self._times.append(self._clock())
                if waited:
                    self.waits += 1
                return waited
            waited += delay
            await asyncio.sleep(delay)


class ConnectionBudget(SlidingWindowLimiter):
    """Connection attempts allowed per window, shared by every connection to one domain."""

    def __init__(self, max_attempts: int = 500, window_seconds: float = 300.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(max_attempts, window_seconds, clock)
