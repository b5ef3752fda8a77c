"""Event-loop lag: how late a periodic timer fires. A blocked loop delays pongs, polls and events alike."""

from __future__ import annotations

import asyncio
import time

from agent.telemetry.metrics import Metrics

_INTERVAL_SECONDS = 0.25


class LoopLagMonitor:
    """A named task that measures timer lateness on the monotonic clock."""

    def __init__(self, metrics: Metrics, interval_seconds: float = _INTERVAL_SECONDS) -> None:
        self._metrics = metrics
        self._interval = interval_seconds
        self._task: asyncio.Task[None] | None = None
        self._latest: float | None = None

    def start(self) -> None:
        """Start measuring; safe to call twice."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="agent/loop-lag")

    async def stop(self) -> None:
        """Stop measuring; safe to call twice."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    def latest_seconds(self) -> float | None:
        """The lag of the most recent tick."""
        return self._latest

    async def _run(self) -> None:
        while True:
            due = time.monotonic() + self._interval
            await asyncio.sleep(self._interval)
            lag = max(0.0, time.monotonic() - due)
            self._latest = lag
            self._metrics.event_loop_lag.observe(lag)
