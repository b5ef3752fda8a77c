"""The normalized event stream, schema version 1 (DESIGN §4).

One JSON object per event, the same whatever the mode. Prices and sizes are
decimal strings; fields the exchange does not give are ``null``.
"""

from __future__ import annotations

from typing import Literal

import msgspec

SCHEMA_VERSION = 1

Change = Literal["opened", "updated", "closed"]
StatusState = Literal["ok", "degraded", "resyncing"]
StatusScope = Literal["positions", "book", "trades"]

# Every event carries its identity right after ``v``: ``id`` is "<owner>:<seq>", ``seq`` is strictly
# increasing per stream owner across restarts (agent.core.identity). A repeated ``id`` is a redelivery
# (at-least-once) that consumers drop; a repeated fact under a new ``id`` would be a bug.


class PositionEvent(msgspec.Struct, frozen=True, kw_only=True, tag_field="kind", tag="position"):
    """A position was opened, changed or closed (a closed one has size "0" and its last side)."""

    v: int = SCHEMA_VERSION
    id: str
    seq: int
    change: Change
    exchange: str
    venue: str
    symbol: str
    position_idx: int
    side: Literal["long", "short"]
    size: str
    entry_price: str | None
    mark_price: str | None
    unrealized_pnl: str | None
    leverage: str | None
    liquidation_price: str | None
    source: Literal["rest", "ws"]
    ts_exchange_ms: int | None
    ts_received_ms: int


class MarkPriceEvent(msgspec.Struct, frozen=True, kw_only=True, tag_field="kind", tag="mark_price"):
    """The latest mark price of one symbol."""

    v: int = SCHEMA_VERSION
    id: str
    seq: int
    exchange: str
    venue: str
    symbol: str
    mark_price: str
    index_price: str | None
    funding_rate: str | None
    source: Literal["rest", "ws"]
    ts_exchange_ms: int | None
    ts_received_ms: int


class ModeEvent(msgspec.Struct, frozen=True, kw_only=True, tag_field="kind", tag="mode"):
    """An exchange changed its data-source mode, and why."""

    v: int = SCHEMA_VERSION
    id: str
    seq: int
    exchange: str
    from_: str = msgspec.field(name="from")
    to: str
    reason: str
    automatic: bool
    ts_ms: int


class StatusEvent(msgspec.Struct, frozen=True, kw_only=True, tag_field="kind", tag="status"):
    """Whether a scope of an exchange can be trusted now; only ``ok`` means whole and live.

    ``degraded`` says the agent does not know the true state (a snapshot failed or was
    incomplete, the private stream is down and REST has not filled the gap yet): nothing
    is invented meanwhile, and a later ``ok`` says the view is whole again.
    """

    v: int = SCHEMA_VERSION
    id: str
    seq: int
    exchange: str
    scope: StatusScope
    symbol: str | None = None
    state: StatusState
    reason: str
    ts_ms: int


Event = PositionEvent | MarkPriceEvent | ModeEvent | StatusEvent


def event_kind(event: Event) -> str:
    """The ``kind`` of an event as it appears on the wire."""
    return type(event).__struct_config__.tag  # type: ignore[return-value]

_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(Event)


def encode_event(event: Event) -> bytes:
    """One event as compact JSON bytes, without a trailing newline."""
    return _encoder.encode(event)


def decode_event(line: bytes | str) -> Event:
    """Parse one JSON line back into its event type (for consumers and tests)."""
    return _decoder.decode(line)


def event_owner(event: Event) -> str:
    """The stream owner whose ``seq`` the event carries (the part of ``id`` before the last colon)."""
    return event.id.rpartition(":")[0]


def coalesce_key(event: Event) -> tuple[str, str] | None:
    """Events with the same key may replace each other in a queue (latest wins); lifecycle events never."""
    if isinstance(event, MarkPriceEvent):
        return (event.exchange, event.symbol)
    return None
