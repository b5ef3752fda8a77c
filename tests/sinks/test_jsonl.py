"""JsonlSink and SinkRunner: append across restarts, torn lines, drain on stop."""

from __future__ import annotations

import asyncio

from prometheus_client import CollectorRegistry

from agent.core.events import PositionEvent, decode_event
from agent.sinks.base import SinkRunner
from agent.sinks.jsonl import JsonlSink
from agent.telemetry.metrics import Metrics
from tests.sinks.test_queue import mark, position


async def test_appends_across_restarts_and_heals_a_torn_line(tmp_path):
    path = tmp_path / "events.jsonl"
    sink = JsonlSink(path, fsync="always")
    await sink.open()
    await sink.write_batch([position(1)])
    await sink.close()
    with open(path, "ab") as f:
        f.write(b'{"kind":"position","v":1,"exch')  # a crash in the middle of a line
    sink = JsonlSink(path, fsync="never")
    await sink.open()
    await sink.write_batch([position(2)])
    await sink.close()
    await sink.close()  # safe twice
    lines = path.read_bytes().splitlines()
    assert decode_event(lines[0]).seq == 1
    assert decode_event(lines[-1]).seq == 2
    assert len(lines) == 3


async def test_runner_drains_everything_accepted_on_stop(tmp_path):
    metrics = Metrics(CollectorRegistry())
    path = tmp_path / "e.jsonl"
    runner = SinkRunner(JsonlSink(path, name="j"), capacity=10_000, metrics=metrics, spool_dir=tmp_path / "spool")
    await runner.start()
    for i in range(1, 2001):
        runner.offer(position(i))
    await runner.stop(timeout_seconds=5)
    seqs = [decode_event(line).seq for line in path.read_bytes().splitlines()]
    assert seqs == list(range(1, 2001))
    assert metrics.registry.get_sample_value("feedagent_sink_events_written_total", {"sink": "j"}) == 2000
    runner.offer(position(9999))  # accepted nothing after stop
    assert len(runner.queue) == 0


class _SlowSink:
    name = "slow"

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.written = []

    async def open(self) -> None: ...

    async def write_batch(self, events) -> None:
        await self.gate.wait()
        self.written.extend(events)

    async def close(self) -> None: ...


async def test_slow_sink_never_blocks_and_only_latest_wins_drops_are_counted(tmp_path):
    metrics = Metrics(CollectorRegistry())
    sink = _SlowSink()
    runner = SinkRunner(sink, capacity=5, metrics=metrics, spool_dir=tmp_path / "spool")
    await runner.start()
    for i in range(100):  # returns at once although the sink is stuck
        runner.offer(mark("BTCUSDT" if i % 2 else "ETHUSDT", str(i)))
        runner.offer(position(i))
    dropped = {reason: metrics.registry.get_sample_value(
        "feedagent_sink_events_dropped_total", {"sink": "slow", "kind": "mark_price", "reason": reason})
        for reason in ("coalesced", "queue_full", "backlogged")}
    assert dropped["backlogged"] and dropped["backlogged"] > 0
    assert runner.backlogged
    sink.gate.set()
    await runner.stop(timeout_seconds=5)
    assert len(runner.queue) == 0
    assert [e.seq for e in sink.written if isinstance(e, PositionEvent)] == list(range(100))
