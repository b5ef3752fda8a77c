"""StdoutSink on a real pipe whose reader stops reading: the event loop keeps running, nothing is lost."""

from __future__ import annotations

import asyncio
import os
import threading

from agent.core.events import PositionEvent, decode_event
from agent.sinks.base import SinkRunner
from agent.sinks.stdout import StdoutSink
from tests.integration.harness import eventually
from tests.sinks.test_queue import mark, position

EVENTS = 3000  # about 1 MB of JSON lines: far more than a pipe buffers (64 KiB on Linux)


def read_until_eof(fd: int, into: bytearray) -> None:
    while chunk := os.read(fd, 1 << 16):
        into.extend(chunk)


async def test_a_pipe_nobody_reads_stalls_only_the_sink_and_loses_nothing(tmp_path, metrics):
    # Arrange
    read_fd, write_fd = os.pipe()
    stream = os.fdopen(write_fd, "wb")
    runner = SinkRunner(StdoutSink(name="stdout", stream=stream), capacity=50, metrics=metrics,
                        spool_dir=tmp_path / "spool")
    await runner.start()
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.001)

    ticker = asyncio.create_task(tick())
    reader: threading.Thread | None = None
    received = bytearray()
    try:
        # Act: publish far more than the pipe holds, a burst at a time, with nobody reading
        for seq in range(1, EVENTS + 1):
            runner.offer(position(seq))
            runner.offer(mark("BTCUSDT", str(seq)))
            if seq % 100 == 0:
                await asyncio.sleep(0)
        # Assert: the sink is backlogged, the loop still runs
        await eventually(lambda: runner.backlogged, what="the sink backlogged")
        ticks_then = ticks
        await eventually(lambda: ticks >= ticks_then + 20, timeout_seconds=5, what="the event loop keeps ticking")
        assert runner.written < EVENTS
        assert metrics.registry.get_sample_value("feedagent_sink_backlogged", {"sink": "stdout"}) == 1
        # Act: the reader comes back
        reader = threading.Thread(target=read_until_eof, args=(read_fd, received), daemon=True)
        reader.start()
        await eventually(lambda: not runner.backlogged and len(runner.queue) == 0, timeout_seconds=30,
                         what="the backlog written")
        await runner.stop(timeout_seconds=5)
    finally:
        ticker.cancel()
        if reader is None:  # failed early: a broken pipe frees the writer thread
            os.close(read_fd)
        stream.close()
    await asyncio.to_thread(reader.join, 10)
    os.close(read_fd)
    # Assert: every lifecycle event exactly once, in order
    events = [decode_event(line) for line in bytes(received).splitlines()]
    assert [e.seq for e in events if isinstance(e, PositionEvent)] == list(range(1, EVENTS + 1))
    assert metrics.registry.get_sample_value("feedagent_sink_backlogged", {"sink": "stdout"}) == 0
    assert not (tmp_path / "spool" / "stdout.jsonl").exists()
