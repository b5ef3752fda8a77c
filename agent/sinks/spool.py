"""A sink's on-disk overflow: lifecycle events its queue could not hold, in order.

One JSON-lines file per sink (``<state_dir>/spool/<sink>.jsonl``). Every file
operation runs on the spool's own thread in submission order, so the bookkeeping
here (how many events, where the unread part starts) is done on the event loop
when an operation is submitted, and appends never wait. A spool left behind by a
stopped or crashed agent is read back first by the next run: events are never
lost, and after a crash some may be delivered twice (consumers de-duplicate by
``id``).
"""

from __future__ import annotations

import logging
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import msgspec

from agent.core.events import Event, decode_event, encode_event
from agent.sinks.worker import WorkerThread

log = logging.getLogger("agent.sinks")

_CHUNK_BYTES = 1 << 20


def spool_path(spool_dir: Path, sink_name: str) -> Path:
    """Where the spool of ``sink_name`` lives (the name made safe for a file name)."""
    return spool_dir / f"{re.sub(r'[^A-Za-z0-9._-]', '_', sink_name)}.jsonl"


@dataclass(frozen=True, slots=True)
class SpoolBatch:
    """Events read from the front of a spool; ``commit`` it once they are written."""

    events: list[Event]
    size_bytes: int
    lines: int
    appended_before: int  # the spool's append count when the read was submitted (it saw those appends)


class Spool:
    """Append-only file of events, read from the front and emptied once everything was read."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.count = 0  # events appended and not yet committed as written
        self._offset_bytes = 0  # start of the unread part of the file
        self._appended = 0  # appends submitted so far
        self._worker = WorkerThread(f"spool/{path.stem}")

    async def load(self) -> int:
        """Count the events a previous run left behind (a line torn by a crash is cut off)."""
        self.count = await self._worker.run(_heal_and_count, self.path)
        self._offset_bytes = 0
        return self.count

    def append(self, event: Event) -> None:
        """Add one event at the end without waiting for the disk."""
        self._worker.submit(_append, self.path, encode_event(event) + b"\n")
        self._appended += 1
        self.count += 1

    async def read(self, max_events: int) -> SpoolBatch:
        """Up to ``max_events`` events from the front (every append submitted before is visible)."""
        appended_before = self._appended
        events, size_bytes, lines = await self._worker.run(_read_lines, self.path, self._offset_bytes, max_events)
        return SpoolBatch(events, size_bytes, lines, appended_before)

    def commit(self, batch: SpoolBatch) -> None:
        """Mark a batch as written; an emptied spool is truncated."""
        self._offset_bytes += batch.size_bytes
        self.count = max(0, self.count - batch.lines)
        if batch.lines == 0:
            # The read found nothing although events were counted: their appends failed (logged by the
            # worker). Only the appends submitted after that read are still to come.
            self.count = self._appended - batch.appended_before
        if self.count == 0:
            self._worker.submit(_truncate, self.path)  # runs before any later append: same thread, in order
            self._offset_bytes = 0

    async def save(self, before: list[Event]) -> None:
        """Keep only the unread events on disk, with ``before`` in front of them (or no file when empty)."""
        if not before and self._offset_bytes == 0 and self.count:
            return  # the file is exactly the unread part already: no need to copy a large backlog
        prefix = b"".join(encode_event(e) + b"\n" for e in before)
        await self._worker.run(_rewrite, self.path, prefix, self._offset_bytes)
        self.count += len(before)
        self._offset_bytes = 0

    def close(self) -> None:
        """Let the spool's thread end once the operations already submitted have run (reopening is fine)."""
        self._worker.close()
        self._worker = WorkerThread(f"spool/{self.path.stem}")


def _heal_and_count(path: Path) -> int:
    """The whole lines of the file, cutting off a torn last line; read in chunks."""
    whole_bytes = lines = position = 0
    try:
        f = open(path, "r+b")  # noqa: SIM115 - closed below
    except FileNotFoundError:
        return 0
    with f:
        while chunk := f.read(_CHUNK_BYTES):
            newlines = chunk.count(b"\n")
            if newlines:
                lines += newlines
                whole_bytes = position + chunk.rfind(b"\n") + 1
            position += len(chunk)
        if whole_bytes != position:
            f.truncate(whole_bytes)
    return lines


def _append(path: Path, line: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "ab") as f:
        f.write(line)


def _read_lines(path: Path, offset_bytes: int, max_lines: int) -> tuple[list[Event], int, int]:
    events: list[Event] = []
    size_bytes = lines = 0
    try:
        f = open(path, "rb")  # noqa: SIM115 - closed below
    except FileNotFoundError:
        return events, 0, 0
    with f:
        f.seek(offset_bytes)
        while lines < max_lines:
            line = f.readline()
            if not line.endswith(b"\n"):
                break  # end of file
            size_bytes += len(line)
            lines += 1
            try:
                events.append(decode_event(line))
            except msgspec.DecodeError:
                log.error("unreadable spool line skipped", extra={"event": "sink_spool_line_skipped",
                                                                   "path": str(path)})
    return events, size_bytes, lines


def _truncate(path: Path) -> None:
    try:
        with open(path, "r+b") as f:
            f.truncate(0)
    except FileNotFoundError:
        pass


def _rewrite(path: Path, prefix: bytes, offset_bytes: int) -> None:
    """Atomically replace the file with ``prefix`` + its unread part; remove it when that is empty."""
    tmp = path.with_name(f".{path.name}.tmp")
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(tmp, "wb") as out:
        out.write(prefix)
        try:
            with open(path, "rb") as f:
                f.seek(offset_bytes)
                shutil.copyfileobj(f, out, _CHUNK_BYTES)
        except FileNotFoundError:
            pass
        empty = out.tell() == 0
        out.flush()
        os.fsync(out.fileno())
    if empty:
        tmp.unlink()
        path.unlink(missing_ok=True)
    else:
        os.replace(tmp, path)
