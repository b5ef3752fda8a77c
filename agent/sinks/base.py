"""The sink contract and the runner that feeds one sink from its own queue."""

from __future__ import annotations

import asyncio
import logging
from typing import Protocol

from agent.core.events import Event, event_kind
from agent.sinks.queue import SinkQueue
from agent.telemetry.metrics import Metrics

log = logging.getLogger("agent.sinks")

_BATCH_MAX_EVENTS = 512


class Sink(Protocol):
    """Writes batches of events somewhere. ``write_batch`` may raise; the runner counts and goes on."""

    name: str

    async def open(self) -> None:
        """Acquire resources (files, connections)."""

    async def write_batch(self, events: list[Event]) -> None:
        """Write events in order."""

    async def close(self) -> None:
        """Flush and release; safe to call twice."""


class SinkRunner:
    """Owns one sink, its bounded queue and the single task that writes to it."""

    def __init__(self, sink: Sink, capacity: int, metrics: Metrics) -> None:
        self.sink = sink
        self.queue = SinkQueue(capacity)
        self._metrics = metrics
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self.written = 0
        metrics.sink_queue_depth.labels(sink.name).set(0)
        metrics.sink_events_written.labels(sink.name)
        metrics.sink_write_errors.labels(sink.name)
        for kind in ("position", "mark_price", "mode"):
            metrics.sink_events_dropped.labels(sink.name, kind)

    def offer(self, event: Event) -> None:
        """Queue an event without waiting; a full queue drops (and counts) rather than blocks."""
        if self._closing:
            return
        dropped = self.queue.put(event)
        if dropped is not None:
            self._metrics.sink_events_dropped.labels(self.sink.name, event_kind(dropped)).inc()
            if event_kind(dropped) != "mark_price":
                log.error("sink dropped a lifecycle event", extra={"event": "sink_dropped_lifecycle",
                                                                    "sink": self.sink.name})
        self._metrics.sink_queue_depth.labels(self.sink.name).set(len(self.queue))

    async def start(self) -> None:
        """Open the sink and start its writer task."""
        await self.sink.open()
        self._task = asyncio.create_task(self._run(), name=f"sink/{self.sink.name}")

    async def _run(self) -> None:
        while True:
            await self.queue.wait()
            await self._write_some()

    async def _write_some(self) -> None:
        batch = self.queue.take(_BATCH_MAX_EVENTS)
        if not batch:
            return
        try:
            await self.sink.write_batch(batch)
        except Exception:  # a broken sink must not take the agent down; the batch is counted as lost
            self._metrics.sink_write_errors.labels(self.sink.name).inc()
            log.exception("sink write failed", extra={"event": "sink_write_failed", "sink": self.sink.name})
            return
        finally:
            self._metrics.sink_queue_depth.labels(self.sink.name).set(len(self.queue))
        self.written += len(batch)
        self._metrics.sink_events_written.labels(self.sink.name).inc(len(batch))

    async def stop(self, timeout_seconds: float) -> None:
        """Stop accepting, drain what was accepted (within the timeout), close the sink."""
        self._closing = True
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        try:
            async with asyncio.timeout(timeout_seconds):
                while len(self.queue):
                    await self._write_some()
        except TimeoutError:
            log.error("sink drain timed out", extra={"event": "sink_drain_timeout", "sink": self.sink.name,
                                                     "pending": len(self.queue)})
        await self.sink.close()
