"""Events as JSON lines on standard output (logs go to standard error)."""

from __future__ import annotations

import sys
from typing import BinaryIO

from agent.core.events import Event, encode_event


class StdoutSink:
    """One JSON object per line on stdout, flushed per batch."""

    def __init__(self, name: str = "stdout", stream: BinaryIO | None = None) -> None:
        self.name = name
        self._stream = stream

    async def open(self) -> None:
        if self._stream is None:
            self._stream = sys.stdout.buffer

    async def write_batch(self, events: list[Event]) -> None:
        assert self._stream is not None
        self._stream.write(b"".join(encode_event(e) + b"\n" for e in events))
        self._stream.flush()

    async def close(self) -> None:
        if self._stream is not None:
            try:
                self._stream.flush()
            except (ValueError, OSError):  # stdout already closed by the parent
                pass
