"""A bounded event queue that never blocks the producer and never drops a lifecycle event.

Latest-wins events (those with a ``coalesce_key``, e.g. mark prices) coalesce: a
newer one replaces the queued one with the same key in place. When the queue is
full the oldest latest-wins event makes room. A lifecycle event that finds the
queue full of lifecycle events is refused, not dropped: the caller keeps it
elsewhere (the runner spills it to disk). The queue counts nothing itself; every
``put`` says what left the queue and why, and the caller counts.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Literal

from agent.core.events import Event, coalesce_key

DropReason = Literal["coalesced", "queue_full", "backlogged", "shutdown"]
DROP_REASONS: tuple[DropReason, ...] = ("coalesced", "queue_full", "backlogged", "shutdown")


@dataclass(frozen=True, slots=True)
class Put:
    """What ``SinkQueue.put`` did: whether the new event is queued, and which event left, why."""

    accepted: bool
    dropped: Event | None = None
    reason: DropReason | None = None


class _Slot:
    __slots__ = ("event", "alive")

    def __init__(self, event: Event) -> None:
        self.event = event
        self.alive = True


class SinkQueue:
    """Bounded FIFO with latest-wins coalescing; full of lifecycle events, it refuses more."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("capacity must be >= 1")
        self.capacity = capacity
        self._slots: deque[_Slot] = deque()
        self._latest: deque[_Slot] = deque()  # the latest-wins slots, oldest first: eviction candidates
        self._by_key: dict[tuple[str, str], _Slot] = {}
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def put(self, event: Event) -> Put:
        """Queue ``event`` unless the queue is full of events that may not be dropped."""
        key = coalesce_key(event)
        if key is not None:
            slot = self._by_key.get(key)
            if slot is not None and slot.alive:
                replaced, slot.event = slot.event, event
                return Put(True, replaced, "coalesced")
        evicted = self._evict_oldest_latest() if self._size >= self.capacity else None
        if self._size >= self.capacity:
            return Put(False, event, "queue_full") if key is not None else Put(False)
        self._append(event, key)
        return Put(True, evicted, "queue_full" if evicted is not None else None)

    def _append(self, event: Event, key: tuple[str, str] | None) -> None:
        slot = _Slot(event)
        self._slots.append(slot)
        if key is not None:
            self._latest.append(slot)
            self._by_key[key] = slot
        self._size += 1

    def _evict_oldest_latest(self) -> Event | None:
        while self._latest:
            slot = self._latest.popleft()
            if slot.alive:
                self._kill(slot)
                self._compact()
                return slot.event
        return None

    def _kill(self, slot: _Slot) -> None:
        slot.alive = False
        self._size -= 1
        key = coalesce_key(slot.event)
        if key is not None and self._by_key.get(key) is slot:
            del self._by_key[key]

    def _compact(self) -> None:
        while self._slots and not self._slots[0].alive:
            self._slots.popleft()
        while self._latest and not self._latest[0].alive:
            self._latest.popleft()

    def take(self, max_items: int) -> list[Event]:
        """Remove and return up to ``max_items`` events in order (non-blocking)."""
        batch: list[Event] = []
        while self._slots and len(batch) < max_items:
            slot = self._slots.popleft()
            if slot.alive:
                self._kill(slot)
                batch.append(slot.event)
        self._compact()
        return batch
