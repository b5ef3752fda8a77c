"""SinkRunner overflow: every drop counted with a reason, lifecycle events spilled to disk in order, kept over stops."""

from __future__ import annotations

import asyncio

from prometheus_client import CollectorRegistry

from agent.core.events import Event, MarkPriceEvent, PositionEvent, decode_event, encode_event
from agent.sinks.base import SinkRunner
from agent.sinks.spool import Spool, spool_path
from agent.telemetry.metrics import Metrics
from tests.integration.harness import eventually
from tests.sinks.test_queue import mark, position


class StepSink:
    """Writes a batch only when the test grants a permit; ``open_gate`` lets everything through."""

    def __init__(self, name: str = "step") -> None:
        self.name = name
        self.permits = asyncio.Semaphore(0)
        self.written: list[Event] = []
        self.waiting = 0  # batches handed to write_batch and not yet written
        self.closed = False

    async def open(self) -> None:
        self.closed = False

    async def write_batch(self, events: list[Event]) -> None:
        self.waiting += 1
        try:
            await self.permits.acquire()
        finally:
            self.waiting -= 1
        self.written.extend(events)

    def open_gate(self) -> None:
        self.permits.release()
        self.permits = _AlwaysOpen()  # type: ignore[assignment]

    async def close(self) -> None:
        self.closed = True


class _AlwaysOpen:
    async def acquire(self) -> None:
        return None

    def release(self) -> None:
        return None


def dropped(metrics: Metrics, sink: str, reason: str, kind: str = "mark_price") -> float | None:
    return metrics.registry.get_sample_value("feedagent_sink_events_dropped_total",
                                             {"sink": sink, "kind": kind, "reason": reason})


def gauge(metrics: Metrics, name: str, sink: str) -> float | None:
    return metrics.registry.get_sample_value(name, {"sink": sink})


def lifecycle_seqs(events: list[Event]) -> list[int]:
    return [e.seq for e in events if isinstance(e, PositionEvent)]


async def blocked_runner(tmp_path, metrics: Metrics, capacity: int) -> tuple[SinkRunner, StepSink]:
    """A started runner whose writer has taken position 0 and waits for a permit."""
    sink = StepSink()
    runner = SinkRunner(sink, capacity=capacity, metrics=metrics, spool_dir=tmp_path / "spool")
    await runner.start()
    runner.offer(position(0))
    await eventually(lambda: sink.waiting == 1, what="the writer holds its first batch")
    return runner, sink


async def test_coalesced_mark_prices_are_counted_and_the_latest_is_written(tmp_path, metrics):
    # Arrange
    runner, sink = await blocked_runner(tmp_path, metrics, capacity=10)
    # Act
    for price in ("1", "2", "3"):
        runner.offer(mark("BTCUSDT", price))
    sink.open_gate()
    await runner.stop(timeout_seconds=5)
    # Assert
    assert [e.mark_price for e in sink.written if isinstance(e, MarkPriceEvent)] == ["3"]
    assert dropped(metrics, "step", "coalesced") == 2
    assert dropped(metrics, "step", "queue_full") == 0
    assert runner.status()["dropped"] == {"mark_price": {"coalesced": 2}}


async def test_full_queue_drops_the_oldest_mark_price_and_counts_queue_full(tmp_path, metrics):
    # Arrange
    runner, sink = await blocked_runner(tmp_path, metrics, capacity=3)
    # Act: [BTC, ETH, pos1] is full; pos2 pushes BTC out, SOL pushes ETH out
    runner.offer(mark("BTCUSDT", "1"))
    runner.offer(mark("ETHUSDT", "1"))
    runner.offer(position(1))
    runner.offer(position(2))
    runner.offer(mark("SOLUSDT", "1"))
    # Assert
    assert dropped(metrics, "step", "queue_full") == 2
    assert not runner.backlogged and runner.status()["state"] == "ok"
    sink.open_gate()
    await runner.stop(timeout_seconds=5)
    assert lifecycle_seqs(sink.written) == [0, 1, 2]
    assert [e.symbol for e in sink.written if isinstance(e, MarkPriceEvent)] == ["SOLUSDT"]


async def test_spill_keeps_the_total_order_of_lifecycle_events_across_queue_and_spool(tmp_path, metrics):
    # Arrange
    runner, sink = await blocked_runner(tmp_path, metrics, capacity=5)
    # Act: 5 fit in the queue, the rest spill; prices arriving while spilling are dropped
    for seq in range(1, 41):
        runner.offer(position(seq))
        runner.offer(mark("BTCUSDT", str(seq)))
    # Assert: backlogged, with the overflow on disk
    assert runner.backlogged
    assert gauge(metrics, "feedagent_sink_backlogged", "step") == 1
    status = runner.status()
    assert status["state"] == "backlogged" and status["queue_depth"] == 5
    assert status["spool_events"] == 35 == gauge(metrics, "feedagent_sink_spool_events", "step")
    assert dropped(metrics, "step", "backlogged") and dropped(metrics, "step", "backlogged") > 0
    # Act: let one batch through at a time while more events arrive in between
    for seq in range(41, 61):
        before = len(sink.written)
        sink.permits.release()
        runner.offer(position(seq))
        await eventually(lambda: len(sink.written) > before, what="one more batch written")
    sink.open_gate()
    await eventually(lambda: not runner.backlogged and len(runner.queue) == 0, what="the spool drained")
    runner.offer(position(61))  # back to the queue once caught up
    await eventually(lambda: lifecycle_seqs(sink.written)[-1:] == [61], what="a new event written")
    # Assert: every lifecycle event exactly once, in order; the spool file is emptied
    assert lifecycle_seqs(sink.written) == list(range(62))
    assert gauge(metrics, "feedagent_sink_backlogged", "step") == 0
    assert gauge(metrics, "feedagent_sink_spool_events", "step") == 0
    await runner.stop(timeout_seconds=5)
    assert not spool_path(tmp_path / "spool", "step").exists()
    assert runner.status()["dropped"]["mark_price"].keys() <= {"coalesced", "queue_full", "backlogged"}


async def test_stop_with_a_blocked_sink_keeps_every_unwritten_lifecycle_event_on_disk(tmp_path, metrics):
    # Arrange: position 0 in flight, 1-3 queued, 4-9 spilled; a price queued too
    runner, sink = await blocked_runner(tmp_path, metrics, capacity=4)
    runner.offer(mark("BTCUSDT", "1"))
    for seq in range(1, 10):
        runner.offer(position(seq))
    # Act: the sink never returns
    async with asyncio.timeout(5):
        await runner.stop(timeout_seconds=0.2)
    # Assert
    path = spool_path(tmp_path / "spool", "step")
    on_disk = [decode_event(line) for line in path.read_bytes().splitlines()]
    assert lifecycle_seqs(on_disk) == list(range(10)) and len(on_disk) == 10
    assert sink.written == [] and sink.closed
    assert gauge(metrics, "feedagent_sink_spool_events", "step") == 10
    assert dropped(metrics, "step", "shutdown") == 0, "the queued price was pushed out by position 4, not at stop"
    assert dropped(metrics, "step", "queue_full") == 1
    runner.offer(position(99))  # nothing is accepted after stop
    assert len(runner.queue) == 0 and runner.spool.count == 10


async def test_unwritten_latest_wins_events_are_counted_at_shutdown(tmp_path, metrics):
    runner, sink = await blocked_runner(tmp_path, metrics, capacity=10)
    runner.offer(mark("BTCUSDT", "1"))
    runner.offer(position(1))
    await runner.stop(timeout_seconds=0.1)
    on_disk = [decode_event(line) for line in spool_path(tmp_path / "spool", "step").read_bytes().splitlines()]
    assert lifecycle_seqs(on_disk) == [0, 1] and len(on_disk) == 2
    assert dropped(metrics, "step", "shutdown") == 1


async def test_restart_writes_the_spool_first_then_new_events(tmp_path, metrics):
    # Arrange: a run that stops with everything unwritten
    runner, _ = await blocked_runner(tmp_path, metrics, capacity=3)
    for seq in range(1, 20):
        runner.offer(position(seq))
    await runner.stop(timeout_seconds=0.1)
    # Act: the next run, with a sink that keeps up
    sink = StepSink()
    sink.open_gate()
    again = SinkRunner(sink, capacity=3, metrics=Metrics(CollectorRegistry()), spool_dir=tmp_path / "spool")
    await again.start()
    assert again.backlogged, "a spool left behind is a backlog"
    for seq in range(20, 30):
        again.offer(position(seq))
    await eventually(lambda: not again.backlogged, what="the old spool written")
    again.offer(position(30))
    await again.stop(timeout_seconds=5)
    # Assert: nothing lost, nothing repeated, in order
    assert lifecycle_seqs(sink.written) == list(range(31))
    assert not spool_path(tmp_path / "spool", "step").exists()


async def test_spool_cuts_a_line_torn_by_a_crash(tmp_path):
    path = spool_path(tmp_path, "s")
    path.write_bytes(b"".join(encode(position(seq)) for seq in (1, 2)) + b'{"kind":"position","v":1,"ex')
    spool = Spool(path)
    assert await spool.load() == 2
    spool.append(position(3))
    batch = await spool.read(10)
    assert lifecycle_seqs(batch.events) == [1, 2, 3]
    spool.commit(batch)
    assert spool.count == 0
    await spool.save([])
    spool.close()
    assert not path.exists()


def encode(event: Event) -> bytes:
    return encode_event(event) + b"\n"
