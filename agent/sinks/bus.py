"""EventBus: fans every event out to every sink's runner and to live subscribers."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable

import msgspec

from agent.core.events import Event, event_kind
from agent.sinks.base import SinkRunner
from agent.telemetry.metrics import Metrics

log = logging.getLogger("agent.sinks")

SUBSCRIBER_DROP_REASONS = ("slow_consumer",)


class StreamClosed(msgspec.Struct, frozen=True, tag_field="kind", tag="stream_closed"):
    """The last item a disconnected subscriber gets, and the last line of its stream."""

    reason: str

    def to_line(self) -> bytes:
        """``{"kind":"stream_closed","reason":...}`` and a newline."""
        return msgspec.json.encode(self) + b"\n"


class EventBus:
    """Publishing never blocks: each sink and each live subscriber has its own bounded queue."""

    def __init__(self, runners: Iterable[SinkRunner], metrics: Metrics) -> None:
        self.runners = list(runners)
        self._metrics = metrics
        self._subscribers: set[asyncio.Queue[Event | StreamClosed]] = set()
        for reason in SUBSCRIBER_DROP_REASONS:
            metrics.stream_subscribers_dropped.labels(reason)

    def publish(self, event: Event, source: str) -> None:
        """Deliver one event to every sink runner and live subscriber; never waits."""
        exchange = getattr(event, "exchange", "")
        self._metrics.events.labels(exchange, event_kind(event), source).inc()
        for runner in self.runners:
            runner.offer(event)
        for queue in list(self._subscribers):
            if queue.qsize() >= queue.maxsize - 1:  # the last slot is kept for the StreamClosed notice
                self._disconnect(queue, "slow_consumer")
            else:
                queue.put_nowait(event)

    def publish_all(self, events: Iterable[Event], source: str) -> None:
        """Publish several events in order."""
        for event in events:
            self.publish(event, source)

    def delivered_through(self, owner: str) -> int:
        """The highest lifecycle ``seq`` of ``owner`` that every sink has written or made durable.

        Lifecycle events reach each sink in order, so everything of ``owner`` up to this
        number is safe; what lies above it is redelivered after a crash. With no sinks
        configured nothing can be redelivered, so everything counts as delivered.
        """
        if not self.runners:
            return 1 << 62
        return min(r.delivered_seq.get(owner, 0) for r in self.runners)

    def subscribe(self, capacity: int = 10_000) -> asyncio.Queue[Event | StreamClosed]:
        """A live feed of events (for /v1/events); call ``unsubscribe`` when done.

        A subscriber that lets ``capacity`` events pile up is disconnected rather than fed a stream
        with holes: it gets what was queued, then a ``StreamClosed`` and nothing more.
        """
        queue: asyncio.Queue[Event | StreamClosed] = asyncio.Queue(capacity + 1)
        self._subscribers.add(queue)
        return queue

    @property
    def subscribers(self) -> int:
        """How many live subscribers are being fed."""
        return len(self._subscribers)

    def unsubscribe(self, queue: asyncio.Queue[Event | StreamClosed]) -> None:
        """Stop feeding a live subscriber."""
        self._subscribers.discard(queue)

    def _disconnect(self, queue: asyncio.Queue[Event | StreamClosed], reason: str) -> None:
        self._subscribers.discard(queue)
        queue.put_nowait(StreamClosed(reason))
        self._metrics.stream_subscribers_dropped.labels(reason).inc()
        log.warning("live event subscriber disconnected", extra={"event": "stream_subscriber_dropped",
                                                                 "reason": reason, "queued": queue.qsize()})

    async def start(self) -> None:
        """Open every sink."""
        for runner in self.runners:
            await runner.start()

    async def stop(self, timeout_seconds: float) -> None:
        """Drain and close every sink, all at once: one stuck sink does not eat the others' time."""
        await asyncio.gather(*(runner.stop(timeout_seconds) for runner in self.runners))
