"""Between receive and processing: a bounded buffer that never blocks the reader.

``WsDataQueue.put`` has the signature of ``ResilientWebSocket``'s ``on_data``
and returns at once; a consumer task drains it with ``get``. Streaming topics
(mark prices) are coalesced, latest wins: a newer value replaces the waiting
one in place, keeping its turn, so a hot topic never starves the others. Event
topics (position updates) wait in a bounded FIFO; when it is full the oldest
event is dropped and counted, and ``overflowed`` tells the consumer its view
is no longer complete (take a REST snapshot). Nothing is dropped silently.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass

from agent.telemetry.metrics import Metrics


@dataclass(frozen=True, slots=True)
class WsMessage:
    """One data message as received."""

    topic: str
    payload: object
    ts_received_ms: int


class WsDataQueue:
    """Latest-wins per streaming topic, bounded FIFO for event topics, one arrival order across both."""

    def __init__(self, is_streaming: Callable[[str], bool], *, max_events: int = 10_000,
                 metrics: Metrics | None = None, exchange: str = "", stream: str = "") -> None:
        if max_events < 1:
            raise ValueError(f"max_events must be >= 1, was {max_events}")
        self._is_streaming = is_streaming
        self._max_events = max_events
        self._latest: OrderedDict[str, tuple[int, WsMessage]] = OrderedDict()
        self._events: deque[tuple[int, WsMessage]] = deque()
        self._seq = 0
        self._ready = asyncio.Event()
        self._metrics = metrics
        self._labels = (exchange, stream)
        self.coalesced = 0
        self.overflowed = 0

    def __len__(self) -> int:
        return len(self._latest) + len(self._events)

    def put(self, topic: str, payload: object, ts_received_ms: int) -> None:
        """Queue one message; never blocks, never raises."""
        message = WsMessage(topic, payload, ts_received_ms)
        if self._is_streaming(topic):
            waiting = self._latest.get(topic)
            if waiting is not None:
                self._latest[topic] = (waiting[0], message)  # keep its turn, replace its value
                self._dropped("coalesced")
                self.coalesced += 1
            else:
                self._seq += 1
                self._latest[topic] = (self._seq, message)
        else:
            if len(self._events) >= self._max_events:
                self._events.popleft()
                self._dropped("overflow")
                self.overflowed += 1
            self._seq += 1
            self._events.append((self._seq, message))
        self._ready.set()

    def get_nowait(self) -> WsMessage | None:
        """The next message in arrival order, or None when empty."""
        head_latest = next(iter(self._latest.values()), None)
        head_event = self._events[0] if self._events else None
        if head_latest is None and head_event is None:
            self._ready.clear()
            return None
        if head_event is None or (head_latest is not None and head_latest[0] < head_event[0]):
            _, (_, message) = self._latest.popitem(last=False)
        else:
            _, message = self._events.popleft()
        if not self:
            self._ready.clear()
        return message

    async def get(self) -> WsMessage:
        """Wait for the next message."""
        while True:
            message = self.get_nowait()
            if message is not None:
                return message
            await self._ready.wait()

    def _dropped(self, reason: str) -> None:
        if self._metrics is not None:
            self._metrics.ws_delivery_dropped.labels(*self._labels, reason).inc()
