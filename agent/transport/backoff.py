"""The back-off gate: once a venue says "rate limited" or "banned", stop calling it.

While the gate is closed, every call fails at once with a copy of the error
that closed it and sends nothing; sending more requests during a ban is what
makes Binance extend it and Bybit keep the IP blocked.
"""

from __future__ import annotations

from agent.transport.clock import SYSTEM_CLOCK, Clock
from agent.transport.errors import Banned, RestError


class BackoffGate:
    """Holds calls back until a deadline set by the venue's last refusal."""

    def __init__(self, clock: Clock = SYSTEM_CLOCK) -> None:
        self._clock = clock
        self._error: RestError | None = None
        self._until_mono_s = 0.0
        self._until_wall_s = 0.0

    @property
    def until_unix_s(self) -> float:
        """Unix time when the gate opens again; 0 when it is open."""
        return self._until_wall_s if self.remaining_s() > 0 else 0.0

    def remaining_s(self) -> float:
        """Seconds until the gate opens (0 when open)."""
        if self._error is None:
            return 0.0
        return max(0.0, self._until_mono_s - self._clock.monotonic_s())

    def close(self, error: RestError, seconds: float) -> float:
        """Hold calls for ``seconds``; returns the Unix time the gate opens.

        A deadline is only ever extended, and a ban is not downgraded to a rate
        limit by a later, shorter refusal.
        """
        until_mono = self._clock.monotonic_s() + max(0.0, seconds)
        held = self.remaining_s() > 0
        weaker = held and isinstance(self._error, Banned) and not isinstance(error, Banned)
        if not held or (until_mono > self._until_mono_s and not weaker):
            self._error = error
            self._until_mono_s = until_mono
            self._until_wall_s = self._clock.wall_s() + max(0.0, seconds)
        return self._until_wall_s

    def check(self) -> None:
        """Raise a copy of the closing error, with the time left, while the gate is closed."""
        remaining = self.remaining_s()
        if remaining <= 0 or self._error is None:
            self._error = None
            return
        err = self._error
        raise type(err)(str(err), status=err.status, code=err.code, retry_after_seconds=remaining)


class GrowingDelay:
    """A delay that doubles each time it is used in a row, up to a cap; ``reset`` after a success."""

    def __init__(self, initial_s: float, cap_s: float, factor: float = 2.0) -> None:
        self._initial_s = initial_s
        self._cap_s = cap_s
        self._factor = factor
        self._next_s = initial_s

    def next(self) -> float:
        """The delay to use now; the following one is longer."""
        delay = self._next_s
        self._next_s = min(self._cap_s, self._next_s * self._factor)
        return delay

    def reset(self) -> None:
        """Start again from the initial delay."""
        self._next_s = self._initial_s
