"""Events appended to a JSON-lines file.

Durability policy (``fsync``): ``always`` fsyncs after every batch, ``interval``
at most every ``fsync_interval_seconds``, ``never`` leaves it to the OS; every
policy flushes and fsyncs on close. The file is only ever appended to, so a
restart continues it; a line torn by a crash is terminated before new lines
are written, so every later line stays parseable. Every file operation runs on
the sink's own thread: a slow or hung disk stalls this sink, not the event loop.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import BinaryIO, Literal

from agent.core.events import Event, encode_event
from agent.sinks.worker import WorkerThread


class JsonlSink:
    """Append-only JSON lines file with an explicit fsync policy."""

    def __init__(self, path: Path, *, fsync: Literal["always", "interval", "never"] = "interval",
                 fsync_interval_seconds: float = 1.0, name: str | None = None) -> None:
        self.name = name or f"jsonl:{path.name}"
        self.path = path
        self.fsync = fsync
        self.fsync_interval_seconds = fsync_interval_seconds
        self._file: BinaryIO | None = None
        self._opened = False
        self._last_fsync_mono = 0.0
        self._worker = WorkerThread(f"sink/{self.name}")

    async def open(self) -> None:
        """Open the file for appending (creating its folder), healing a torn last line."""
        if self._opened:
            return
        await self._worker.run(self._open_file)
        self._opened = True

    async def write_batch(self, events: list[Event]) -> None:
        """Append events in order, then flush (and fsync as the policy says)."""
        assert self._opened, "open() first"
        await self._worker.run(self._append, b"".join(encode_event(e) + b"\n" for e in events))

    async def close(self) -> None:
        """Flush, fsync and close; safe to call twice."""
        if not self._opened:
            return
        self._opened = False
        worker, self._worker = self._worker, WorkerThread(f"sink/{self.name}")  # a fresh one if reopened
        try:
            await worker.run(self._close_file)
        finally:
            worker.close()

    def _open_file(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "ab")  # noqa: SIM115 - lives as long as the sink
        if self._file.tell() > 0 and not _ends_with_newline(self.path):
            self._file.write(b"\n")

    def _append(self, data: bytes) -> None:
        assert self._file is not None
        self._file.write(data)
        self._file.flush()
        now = time.monotonic()
        if self.fsync == "always" or (self.fsync == "interval" and now - self._last_fsync_mono >= self.fsync_interval_seconds):
            os.fsync(self._file.fileno())
            self._last_fsync_mono = now

    def _close_file(self) -> None:
        if self._file is None:
            return
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        self._file = None


def _ends_with_newline(path: Path) -> bool:
    with open(path, "rb") as f:
        f.seek(-1, os.SEEK_END)
        return f.read(1) == b"\n"
