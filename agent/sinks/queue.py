"""A bounded event queue that never blocks the producer.

Mark prices coalesce (a newer price for the same symbol replaces the queued
one in place: latest wins). When the queue is full the oldest mark price is
dropped first; a lifecycle event is dropped only when nothing else is left,
and every drop is counted by kind.
"""

from __future__ import annotations

import asyncio
from collections import Counter, deque

from agent.core.events import Event, coalesce_key, event_kind


class _Slot:
    __slots__ = ("event", "alive")

    def __init__(self, event: Event) -> None:
        self.event = event
        self.alive = True


class SinkQueue:
    """Bounded FIFO with latest-wins coalescing for mark prices."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("capacity must be >= 1")
        self.capacity = capacity
        self._slots: deque[_Slot] = deque()
        self._by_key: dict[tuple[str, str], _Slot] = {}
        self._size = 0
        self._not_empty = asyncio.Event()
        self.dropped: Counter[str] = Counter()
        self.coalesced = 0

    def __len__(self) -> int:
        return self._size

    def put(self, event: Event) -> Event | None:
        """Queue ``event``; returns the event dropped to make room, if any."""
        key = coalesce_key(event)
        if key is not None:
            slot = self._by_key.get(key)
            if slot is not None and slot.alive:
                slot.event = event
                self.coalesced += 1
                return None
        dropped = self._make_room() if self._size >= self.capacity else None
        slot = _Slot(event)
        self._slots.append(slot)
        if key is not None:
            self._by_key[key] = slot
        self._size += 1
        self._not_empty.set()
        return dropped

    def _make_room(self) -> Event:
        victim = next((s for s in self._slots if s.alive and coalesce_key(s.event) is not None), None)
        if victim is None:
            victim = next(s for s in self._slots if s.alive)
        victim.alive = False
        self._size -= 1
        key = coalesce_key(victim.event)
        if key is not None and self._by_key.get(key) is victim:
            del self._by_key[key]
        self.dropped[event_kind(victim.event)] += 1
        self._compact()
        return victim.event

    def _compact(self) -> None:
        while self._slots and not self._slots[0].alive:
            self._slots.popleft()

    def take(self, max_items: int) -> list[Event]:
        """Remove and return up to ``max_items`` events in order (non-blocking)."""
        batch: list[Event] = []
        while self._slots and len(batch) < max_items:
            slot = self._slots.popleft()
            if not slot.alive:
                continue
            key = coalesce_key(slot.event)
            if key is not None and self._by_key.get(key) is slot:
                del self._by_key[key]
            batch.append(slot.event)
            self._size -= 1
        if self._size == 0:
            self._not_empty.clear()
        return batch

    async def wait(self) -> None:
        """Return once the queue holds at least one event."""
        await self._not_empty.wait()
