"""The sink contract and the runner that feeds one sink from its own queue and spool.

What happens to an event offered to a runner (``offer`` never waits):

- a latest-wins event (one with a ``coalesce_key``) whose key is already queued
  replaces the queued one: dropped, reason ``coalesced``;
- a full queue makes room by dropping its oldest latest-wins event, or drops the
  newcomer when it is latest-wins and the queue holds only lifecycle events:
  reason ``queue_full``;
- a lifecycle event that finds the queue full of lifecycle events is never
  dropped: the runner becomes *backlogged* and spills it, and every later
  lifecycle event, to the sink's spool on disk until the writer has emptied it,
  so order is kept; latest-wins events arriving meanwhile are dropped, reason
  ``backlogged``.

The writer task writes the queue, then the spool, in order. On stop it drains
for at most the timeout; lifecycle events still unwritten then stay in the spool
and the next start writes them first (latest-wins ones are dropped, reason
``shutdown``).
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from pathlib import Path
from typing import Any, Protocol

from agent.core.events import Event, coalesce_key, event_kind, event_owner
from agent.sinks.queue import DROP_REASONS, DropReason, SinkQueue
from agent.sinks.spool import Spool, spool_path
from agent.telemetry.metrics import Metrics

log = logging.getLogger("agent.sinks")

_BATCH_MAX_EVENTS = 512
_CLOSE_TIMEOUT_MIN_SECONDS = 0.5
_WRITER_RETRY_SECONDS = 1.0


class Sink(Protocol):
    """Writes batches of events somewhere. ``write_batch`` may raise; the runner counts and goes on.

    A sink whose writes can block (files, pipes) does them off the event loop, on a thread of its own.
    """

    name: str

    async def open(self) -> None:
        """Acquire resources (files, connections)."""

    async def write_batch(self, events: list[Event]) -> None:
        """Write events in order."""

    async def close(self) -> None:
        """Flush and release; safe to call twice."""


class SinkRunner:
    """Owns one sink, its bounded queue, its on-disk spool and the single task that writes to it.

    Call ``start`` before offering events: a spool left by the previous run is written first.
    """

    def __init__(self, sink: Sink, capacity: int, metrics: Metrics, *, spool_dir: Path) -> None:
        self.sink = sink
        self.queue = SinkQueue(capacity)
        self.spool = Spool(spool_path(spool_dir, sink.name))
        self.written = 0
        self.delivered_seq: dict[str, int] = {}  # owner -> highest lifecycle seq the sink has written
        self.dropped: Counter[tuple[str, str]] = Counter()  # (kind, reason) -> events
        self._metrics = metrics
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._backlogged = False
        self._work = asyncio.Event()  # set whenever the queue or the spool got something
        self._inflight: list[Event] = []  # a batch taken from the queue, not yet written
        self._latest_wins_kinds: set[str] = set()
        self._init_series()

    @property
    def backlogged(self) -> bool:
        """True while lifecycle events spill to the spool."""
        return self._backlogged

    # -- producer side (on the event loop, never waits) --------------------------------------------

    def offer(self, event: Event) -> None:
        """Accept an event without waiting: queue it, spill it, or drop (and count) a latest-wins one."""
        if self._closing:
            return
        latest_wins = coalesce_key(event) is not None
        if latest_wins:
            self._note_latest_wins_kind(event_kind(event))
        if self._backlogged:
            self._offer_backlogged(event, latest_wins)
        else:
            put = self.queue.put(event)
            if put.dropped is not None and put.reason is not None:
                self._count_drop(put.dropped, put.reason)
            if not put.accepted and not latest_wins:  # full of lifecycle events: keep order on disk
                self._enter_backlog("queue_full")
                self._offer_backlogged(event, latest_wins)
            self._metrics.sink_queue_depth.labels(self.sink.name).set(len(self.queue))
        self._work.set()

    def _offer_backlogged(self, event: Event, latest_wins: bool) -> None:
        if latest_wins:
            self._count_drop(event, "backlogged")
            return
        self.spool.append(event)
        self._metrics.sink_spool_events.labels(self.sink.name).set(self.spool.count)

    def _count_drop(self, event: Event, reason: DropReason) -> None:
        kind = event_kind(event)
        self.dropped[(kind, reason)] += 1
        self._metrics.sink_events_dropped.labels(self.sink.name, kind, reason).inc()

    # -- lifecycle ---------------------------------------------------------------------------------

    async def start(self) -> None:
        """Open the sink, pick up a spool left behind, and start the writer task."""
        self._closing = False
        await self.sink.open()
        was_backlogged = self._backlogged
        if await self.spool.load():
            self._metrics.sink_spool_events.labels(self.sink.name).set(self.spool.count)
            if not was_backlogged:
                self._enter_backlog("spool_from_previous_run")
                for event in self.queue.take(len(self.queue)):  # offered before start: after the old spool
                    self._offer_backlogged(event, coalesce_key(event) is not None)
        self._task = asyncio.create_task(self._run(), name=f"sink/{self.sink.name}")

    async def stop(self, timeout_seconds: float) -> None:
        """Stop accepting, drain what was accepted (within the timeout), keep the rest on disk, close."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_seconds
        self._closing = True
        self._work.set()
        if self._task is not None:
            done, _ = await asyncio.wait({self._task}, timeout=timeout_seconds)
            if not done:
                self._task.cancel()
                await asyncio.gather(self._task, return_exceptions=True)
                log.error("sink drain timed out; unwritten lifecycle events stay in its spool",
                          extra={"event": "sink_drain_timeout", "sink": self.sink.name,
                                 "pending": len(self._inflight) + len(self.queue) + self.spool.count})
            self._task = None
        await self._keep_leftovers()
        try:
            async with asyncio.timeout(max(_CLOSE_TIMEOUT_MIN_SECONDS, deadline - loop.time())):
                await self.sink.close()
        except TimeoutError:  # a writer stuck for good: its thread is a daemon and dies with the process
            log.error("sink close timed out", extra={"event": "sink_close_timeout", "sink": self.sink.name})

    async def _keep_leftovers(self) -> None:
        leftovers, self._inflight = self._inflight + self.queue.take(len(self.queue)), []
        lifecycle = [e for e in leftovers if coalesce_key(e) is None]
        for event in leftovers:
            if coalesce_key(event) is not None:
                self._count_drop(event, "shutdown")
        await self.spool.save(lifecycle)
        self.spool.close()
        self._metrics.sink_queue_depth.labels(self.sink.name).set(0)
        self._metrics.sink_spool_events.labels(self.sink.name).set(self.spool.count)
        if self.spool.count:
            log.warning("sink stopped with a backlog; it is written first at the next start",
                        extra={"event": "sink_spool_kept", "sink": self.sink.name, "events": self.spool.count,
                               "path": str(self.spool.path)})

    # -- writer task -------------------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            self._work.clear()
            try:
                wrote = await self._write_next()
            except Exception:  # spool I/O failed (disk full?): keep the events counted, try again
                log.exception("sink spool failed", extra={"event": "sink_spool_failed", "sink": self.sink.name})
                await asyncio.sleep(_WRITER_RETRY_SECONDS)
                continue
            if not wrote:
                if self._closing:
                    return
                await self._work.wait()

    async def _write_next(self) -> bool:
        """Write one batch, from the queue first, then from the spool; False when both are empty."""
        batch = self.queue.take(_BATCH_MAX_EVENTS)
        if batch:
            self._inflight = batch
            self._metrics.sink_queue_depth.labels(self.sink.name).set(len(self.queue))
            await self._deliver(batch)
            self._inflight = []
            return True
        if not self.spool.count:
            return False
        spooled = await self.spool.read(_BATCH_MAX_EVENTS)
        if spooled.events:
            await self._deliver(spooled.events)
        self.spool.commit(spooled)  # only once written: a stop meanwhile keeps them on disk
        self._metrics.sink_spool_events.labels(self.sink.name).set(self.spool.count)
        if not self.spool.count:
            self._leave_backlog()
        return True

    async def _deliver(self, batch: list[Event]) -> None:
        try:
            await self.sink.write_batch(batch)
        except Exception:  # a broken sink must not take the agent down; the batch is counted as lost
            self._metrics.sink_write_errors.labels(self.sink.name).inc()
            log.exception("sink write failed", extra={"event": "sink_write_failed", "sink": self.sink.name})
            return
        self.written += len(batch)
        self._metrics.sink_events_written.labels(self.sink.name).inc(len(batch))
        for event in batch:  # lifecycle events arrive in order per owner; latest-wins ones may be reordered
            if coalesce_key(event) is None:
                self.delivered_seq[event_owner(event)] = event.seq

    # -- backlog state and telemetry ---------------------------------------------------------------

    def _enter_backlog(self, reason: str) -> None:
        self._backlogged = True
        self._metrics.sink_backlogged.labels(self.sink.name).set(1)
        log.warning("sink backlogged: lifecycle events spill to disk until it catches up",
                    extra={"event": "sink_backlogged", "sink": self.sink.name, "reason": reason,
                           "path": str(self.spool.path)})

    def _leave_backlog(self) -> None:
        self._backlogged = False
        self._metrics.sink_backlogged.labels(self.sink.name).set(0)
        log.info("sink caught up: spool drained", extra={"event": "sink_backlog_drained", "sink": self.sink.name})

    def _init_series(self) -> None:
        name = self.sink.name
        self._metrics.sink_queue_depth.labels(name).set(0)
        self._metrics.sink_spool_events.labels(name).set(0)
        self._metrics.sink_backlogged.labels(name).set(0)
        self._metrics.sink_events_written.labels(name)
        self._metrics.sink_write_errors.labels(name)

    def _note_latest_wins_kind(self, kind: str) -> None:
        """Create a latest-wins kind's drop series at zero when the kind first shows up (only those drop)."""
        if kind in self._latest_wins_kinds:
            return
        self._latest_wins_kinds.add(kind)
        for reason in DROP_REASONS:
            self._metrics.sink_events_dropped.labels(self.sink.name, kind, reason)

    def status(self) -> dict[str, Any]:
        """This sink's part of /status: state, backlog and counts."""
        dropped: dict[str, dict[str, int]] = {}
        for (kind, reason), events in sorted(self.dropped.items()):
            dropped.setdefault(kind, {})[reason] = events
        return {"state": "backlogged" if self._backlogged else "ok", "queue_depth": len(self.queue),
                "spool_events": self.spool.count, "written": self.written, "dropped": dropped}
