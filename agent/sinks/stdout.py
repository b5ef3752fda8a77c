"""Events as JSON lines on standard output (logs go to standard error).

The write happens on the sink's own thread: ``feedagent run | slow-consumer``
stalls that thread and that sink's runner, never the event loop.
"""

from __future__ import annotations

import io
import os
import select
import sys
from typing import BinaryIO

from agent.core.events import Event, encode_event
from agent.sinks.worker import WorkerThread


class StdoutSink:
    """One JSON object per line on stdout (or on ``stream``), written off the event loop."""

    def __init__(self, name: str = "stdout", stream: BinaryIO | None = None) -> None:
        self.name = name
        self._stream = stream
        self._fd: int | None = None
        self._worker = WorkerThread(f"sink/{name}")

    async def open(self) -> None:
        """Pick the stream (stdout unless one was given) and write to its file descriptor when it has one."""
        if self._stream is None:
            self._stream = sys.stdout.buffer
        self._fd = _fileno(self._stream)
        if self._fd is not None:
            await self._worker.run(self._stream.flush)  # whatever was buffered before goes out first

    async def write_batch(self, events: list[Event]) -> None:
        """Write events in order; returns once the reader took them (which may be never)."""
        data = b"".join(encode_event(e) + b"\n" for e in events)
        await self._worker.run(self._write, data)

    def _write(self, data: bytes) -> None:
        # Straight to the descriptor rather than through the buffered stream: a thread stuck in a
        # buffered write holds the stream's lock, and the interpreter aborts at exit when it cannot
        # take that lock to flush sys.stdout.
        if self._fd is not None:
            write_all(self._fd, data)
            return
        assert self._stream is not None, "open() first"
        self._stream.write(data)
        self._stream.flush()

    async def close(self) -> None:
        """Flush a buffered stream and let the thread go; safe to call twice."""
        worker, self._worker = self._worker, WorkerThread(f"sink/{self.name}")  # a fresh one if reopened
        try:
            if self._fd is None and self._stream is not None:
                await worker.run(self._stream.flush)
        except (ValueError, OSError):  # stdout already closed by the parent
            pass
        finally:
            worker.close()


def write_all(fd: int, data: bytes) -> None:
    """Write every byte of ``data`` to ``fd``, waiting (blocking) while a pipe is full."""
    view = memoryview(data)
    while view:
        try:
            written = os.write(fd, view)
        except BlockingIOError:  # a descriptor inherited in non-blocking mode: wait until it drains
            select.select([], [fd], [])
            continue
        view = view[written:]


def _fileno(stream: BinaryIO) -> int | None:
    try:
        return stream.fileno()
    except (AttributeError, OSError, io.UnsupportedOperation):
        return None
