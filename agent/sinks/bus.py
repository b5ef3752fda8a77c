"""EventBus: fans every event out to every sink's runner and to live subscribers."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from agent.core.events import Event, event_kind
from agent.sinks.base import SinkRunner
from agent.telemetry.metrics import Metrics


class EventBus:
    """Publishing never blocks: each sink and each live subscriber has its own bounded queue."""

    def __init__(self, runners: Iterable[SinkRunner], metrics: Metrics) -> None:
        self.runners = list(runners)
        self._metrics = metrics
        self._subscribers: set[asyncio.Queue[Event]] = set()

    def publish(self, event: Event, source: str) -> None:
        """Deliver one event to every sink queue (drop-oldest when full, counted)."""
        exchange = getattr(event, "exchange", "")
        self._metrics.events.labels(exchange, event_kind(event), source).inc()
        for runner in self.runners:
            runner.offer(event)
        for queue in list(self._subscribers):
            if queue.full():
                queue.get_nowait()
            queue.put_nowait(event)

    def publish_all(self, events: Iterable[Event], source: str) -> None:
        """Publish several events in order."""
        for event in events:
            self.publish(event, source)

    def subscribe(self, capacity: int = 10_000) -> asyncio.Queue[Event]:
        """A live feed of events (for /v1/events); call ``unsubscribe`` when done."""
        queue: asyncio.Queue[Event] = asyncio.Queue(capacity)
        self._subscribers.add(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue[Event]) -> None:
        """Stop feeding a live subscriber."""
        self._subscribers.discard(queue)

    async def start(self) -> None:
        """Open every sink."""
        for runner in self.runners:
            await runner.start()

    async def stop(self, timeout_seconds: float) -> None:
        """Drain and close every sink."""
        for runner in self.runners:
            await runner.stop(timeout_seconds)
