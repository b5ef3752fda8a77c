"""What one exchange's lifecycle looked like when last persisted (``<state_dir>/lifecycle/<exchange>.json``).

Written atomically before lifecycle events are published (write-ahead): the
open positions as the book holds them, the trust state per scope, and an
*outbox* of lifecycle events published but not yet confirmed written by every
sink. After a restart or a crash the outbox is published again under the same
ids (a consumer drops what it already has), the positions go back into the
book, and the first snapshot is diffed against them, so a change is neither
lost nor sent again under a new id.

The file names the account it belongs to (a hash of venue, category and API
key): state of another account is never diffed against this one.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import msgspec

from agent.core.events import Event
from agent.core.observations import PositionObs, Source
from agent.core.state_files import write_bytes_atomic

log = logging.getLogger("agent.lifecycle")

FORMAT_VERSION = 1


class HeldPosition(msgspec.Struct, frozen=True, kw_only=True):
    """One open position with the provenance of its last change."""

    obs: PositionObs
    source: Source
    ts_received_ms: int


class PersistedLifecycle(msgspec.Struct, kw_only=True):
    """The file's content."""

    version: int = FORMAT_VERSION
    exchange: str
    account: str
    saved_ms: int
    positions: list[HeldPosition] = []
    status: dict[str, str] = {}  # scope -> last state published ("ok", "degraded")
    outbox: list[Event] = []


def account_fingerprint(venue: str, category: str, api_key: str | None) -> str:
    """A short stable id of the account whose positions are persisted (the key itself is never stored)."""
    digest = hashlib.sha256(f"{venue}\0{category}\0{api_key or ''}".encode()).hexdigest()
    return digest[:16]


class LifecycleStore:
    """Reads and writes one exchange's persisted lifecycle."""

    def __init__(self, path: Path, *, exchange: str, account: str) -> None:
        self.path = path
        self.exchange = exchange
        self.account = account
        self.writes = 0

    def load(self) -> PersistedLifecycle | None:
        """The persisted state of this account, or None (absent, unreadable or another account's)."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return None
        try:
            state = msgspec.json.decode(data, type=PersistedLifecycle)
        except (msgspec.DecodeError, RecursionError) as exc:
            log.error("persisted lifecycle unreadable; open positions will be sent as opened again",
                      extra={"event": "lifecycle_state_unreadable", "exchange": self.exchange,
                             "path": str(self.path), "error": str(exc)[:200]})
            return None
        if state.account != self.account:
            log.warning("persisted lifecycle belongs to another account; ignored",
                        extra={"event": "lifecycle_state_other_account", "exchange": self.exchange,
                               "path": str(self.path)})
            return None
        return state

    def save(self, state: PersistedLifecycle) -> None:
        """Replace the file atomically."""
        write_bytes_atomic(self.path, msgspec.json.encode(state))
        self.writes += 1
