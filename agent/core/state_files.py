"""Small state files under ``state_dir``: written atomically (temp file, fsync, rename, fsync dir)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` so that a crash leaves either the old or the new content, never a mix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # the rename itself must survive a power cut
    finally:
        os.close(dir_fd)


def write_json_atomic(path: Path, doc: Any) -> None:
    """``write_bytes_atomic`` of a JSON document."""
    write_bytes_atomic(path, json.dumps(doc, separators=(",", ":")).encode())


def read_json(path: Path) -> Any:
    """Read a JSON state file (FileNotFoundError when absent)."""
    return json.loads(path.read_bytes())
