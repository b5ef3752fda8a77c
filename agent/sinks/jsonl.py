"""Events appended to a JSON-lines file.

Durability policy (``fsync``): ``always`` fsyncs after every batch, ``interval``
at most every ``fsync_interval_seconds``, ``never`` leaves it to the OS; every
policy flushes and fsyncs on close. The file is only ever appended to, so a
restart continues it; a line torn by a crash is terminated before new lines
are written, so every later line stays parseable.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import BinaryIO, Literal

from agent.core.events import Event, encode_event


class JsonlSink:
    """Append-only JSON lines file with an explicit fsync policy."""

    def __init__(self, path: Path, *, fsync: Literal["always", "interval", "never"] = "interval",
                 fsync_interval_seconds: float = 1.0, name: str | None = None) -> None:
        self.name = name or f"jsonl:{path.name}"
        self.path = path
        self.fsync = fsync
        self.fsync_interval_seconds = fsync_interval_seconds
        self._file: BinaryIO | None = None
        self._last_fsync_mono = 0.0

    async def open(self) -> None:
        if self._file is not None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "ab")  # noqa: SIM115 - lives as long as the sink
        if self._file.tell() > 0 and not _ends_with_newline(self.path):
            self._file.write(b"\n")

    async def write_batch(self, events: list[Event]) -> None:
        assert self._file is not None, "open() first"
        self._file.write(b"".join(encode_event(e) + b"\n" for e in events))
        self._file.flush()
        now = time.monotonic()
        if self.fsync == "always" or (self.fsync == "interval" and now - self._last_fsync_mono >= self.fsync_interval_seconds):
            os.fsync(self._file.fileno())
            self._last_fsync_mono = now

    async def close(self) -> None:
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
