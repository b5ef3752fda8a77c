"""Venue-neutral observations: what adapters produce and the PositionBook consumes.

Prices and sizes are decimal strings, exactly as the exchange sent them (or as
computed with ``decimal``); they are never floats. Fields that the exchange
does not give are ``None``, never invented.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Literal

import msgspec

Source = Literal["rest", "ws"]
Side = Literal["long", "short"]


class PositionObs(msgspec.Struct, frozen=True, kw_only=True):
    """One position row of one exchange, normalised.

    ``size`` is never negative; a flat position has ``size == "0"`` and
    ``side is None`` (the side it had while open is the book's business).
    ``position_idx`` is 0 one-way (Binance ``BOTH``), 1 hedge long/buy, 2 hedge short/sell.
    """

    symbol: str
    position_idx: int
    side: Side | None
    size: str
    entry_price: str | None = None
    mark_price: str | None = None
    unrealized_pnl: str | None = None
    leverage: str | None = None
    liquidation_price: str | None = None
    ts_exchange_ms: int | None = None

    @property
    def key(self) -> tuple[str, int]:
        """The identity of a position within one exchange."""
        return (self.symbol, self.position_idx)

    @property
    def is_open(self) -> bool:
        """True when the size is a positive number."""
        return decimal_or_zero(self.size) > 0


class MarkPriceObs(msgspec.Struct, frozen=True, kw_only=True):
    """The mark price of one symbol at ``ts_exchange_ms``."""

    symbol: str
    mark_price: str
    index_price: str | None = None
    funding_rate: str | None = None
    ts_exchange_ms: int | None = None


class PositionSnapshot(msgspec.Struct, frozen=True, kw_only=True):
    """A set of position rows observed at one moment.

    ``complete`` means the rows are the whole account (for the configured
    category): a position missing from a complete snapshot is flat. A partial
    snapshot (a WebSocket delta, Binance ``ACCOUNT_UPDATE``) only speaks for
    the rows it carries. ``as_of_ms`` lets the book tell a snapshot that was
    already on its way from news it received since (see PositionBook).
    """

    positions: tuple[PositionObs, ...]
    source: Source
    ts_received_ms: int
    complete: bool = True
    as_of_ms: int | None = None  # local wall time the data was asked for (a REST request's send time)


class MarkPriceBatch(msgspec.Struct, frozen=True, kw_only=True):
    """Mark prices received together (one REST poll or one WS frame)."""

    prices: tuple[MarkPriceObs, ...]
    source: Source
    ts_received_ms: int


def decimal_or_zero(value: str | None) -> Decimal:
    """Parse a decimal string leniently: ``None``, ``""`` and junk count as zero."""
    if not value:
        return Decimal(0)
    try:
        return Decimal(value)
    except (InvalidOperation, ValueError):
        return Decimal(0)


def blank_to_none(value: object) -> str | None:
    """Exchanges send ``""`` where a number is unknown; the event contract wants ``null``."""
    if value is None:
        return None
    text = str(value).strip()
    return text or None
