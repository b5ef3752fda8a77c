"""Event identity: ``seq`` per stream owner, strictly increasing across restarts and crashes.

The high-water mark lives in ``<state_dir>/seq/<owner>.json`` and is reserved ahead
in blocks: before handing out a number beyond the reserved mark, the next block is
written (atomically, fsynced). A crash therefore skips at most one block and never
hands out a number twice. Writes happen once per ``block_size`` events, so the hot
path costs an integer increment.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from agent.core.state_files import read_json, write_json_atomic

log = logging.getLogger("agent.identity")

DEFAULT_BLOCK_SIZE = 1000


class SeqAllocator:
    """Hands out ``(seq, id)`` for one stream owner; persisted when given a path."""

    def __init__(self, owner: str, path: Path | None = None, *, block_size: int = DEFAULT_BLOCK_SIZE) -> None:
        if block_size < 1:
            raise ValueError("block_size must be >= 1")
        self.owner = owner
        self.path = path
        self.block_size = block_size
        self._last = 0
        self._reserved = 0
        if path is not None:
            self._last = self._reserved = _load_reserved(path, owner)

    @property
    def last(self) -> int:
        """The last number handed out (0 before the first one of a fresh owner)."""
        return self._last

    def next(self) -> tuple[int, str]:
        """The next ``(seq, id)``; reserves a new block on disk when the current one is used up."""
        seq = self._last + 1
        if self.path is not None and seq > self._reserved:
            self._reserve(seq + self.block_size - 1)
        self._last = seq
        return seq, f"{self.owner}:{seq}"

    def _reserve(self, upto: int) -> None:
        assert self.path is not None
        write_json_atomic(self.path, {"owner": self.owner, "reserved": upto})
        self._reserved = upto


def _load_reserved(path: Path, owner: str) -> int:
    try:
        doc = read_json(path)
    except FileNotFoundError:
        return 0
    except (OSError, ValueError, json.JSONDecodeError) as exc:
        # Never restart numbering low: an unreadable mark is an error the operator must see.
        raise RuntimeError(f"{path}: unreadable sequence high-water mark for {owner!r}: {exc}; "
                           "restore it or move it aside to start a new numbering") from exc
    reserved = doc.get("reserved") if isinstance(doc, dict) else None
    if not isinstance(reserved, int) or reserved < 0:
        raise RuntimeError(f"{path}: sequence high-water mark for {owner!r} is not a non-negative integer")
    return reserved
