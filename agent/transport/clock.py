"""Local clocks and the estimate of an exchange's server time.

Durations and deadlines use the monotonic clock, so a wall-clock step (NTP,
suspend) cannot shorten a ban or stretch a timeout. Wall time is used only
where the exchange needs it: signed timestamps and reset times it sends us.
"""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    """Where the REST client reads time from; tests pass a fake one."""

    def wall_s(self) -> float:
        """Unix time in seconds."""

    def monotonic_s(self) -> float:
        """A clock that never goes backwards, for durations."""


class SystemClock:
    """The process's real clocks."""

    def wall_s(self) -> float:
        return time.time()

    def monotonic_s(self) -> float:
        return time.monotonic()


SYSTEM_CLOCK = SystemClock()


def offset_from_sample_ms(server_ms: float, sent_wall_ms: float, rtt_ms: float) -> float:
    """Server time minus local time, from one server-time request.

    The server stamped its reply at some moment between sending and receiving;
    the midpoint of the round trip is the best guess, off by at most ``rtt/2``.
    """
    return server_ms - (sent_wall_ms + rtt_ms / 2.0)


class ServerClock:
    """The exchange's clock as seen from here: local wall time plus a measured offset."""

    def __init__(self, clock: Clock = SYSTEM_CLOCK) -> None:
        self._clock = clock
        self.offset_ms = 0.0
        self.rtt_ms: float | None = None
        self._measured_at_mono_s: float | None = None

    @property
    def measured(self) -> bool:
        """True once one sample has been recorded."""
        return self._measured_at_mono_s is not None

    def record(self, server_ms: float, sent_wall_ms: float, rtt_ms: float) -> float:
        """Store the offset of one sample and return it (ms)."""
        self.offset_ms = offset_from_sample_ms(server_ms, sent_wall_ms, rtt_ms)
        self.rtt_ms = rtt_ms
        self._measured_at_mono_s = self._clock.monotonic_s()
        return self.offset_ms

    def age_s(self) -> float | None:
        """Seconds since the last sample, or None before the first."""
        if self._measured_at_mono_s is None:
            return None
        return self._clock.monotonic_s() - self._measured_at_mono_s

    def server_now_ms(self) -> int:
        """Current server time in ms, for signed timestamps."""
        return int(self._clock.wall_s() * 1000.0 + self.offset_ms)

    def to_local_unix_s(self, server_ms: float) -> float:
        """A server timestamp (ms) translated to local Unix seconds."""
        return (server_ms - self.offset_ms) / 1000.0


class ManualClock:
    """A clock that only moves when told to: for tests and simulations of bans and resets."""

    def __init__(self, wall_s: float = 1_700_000_000.0, monotonic_s: float = 1_000.0) -> None:
        self._wall_s = wall_s
        self._monotonic_s = monotonic_s

    def wall_s(self) -> float:
        return self._wall_s

    def monotonic_s(self) -> float:
        return self._monotonic_s

    def advance(self, seconds: float) -> None:
        """Move both clocks forward."""
        self._wall_s += seconds
        self._monotonic_s += seconds

    def step_wall(self, seconds: float) -> None:
        """Move only the wall clock (an NTP step); durations are unaffected."""
        self._wall_s += seconds
