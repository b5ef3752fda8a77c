"""Pure functions from Bybit v5 REST responses to observations. No I/O, no clocks.

Envelope first (``decode_envelope``), then the typed ``result``, then each row
on its own: a malformed row is counted and skipped, never fails the batch.
"""

from __future__ import annotations

from collections.abc import Collection
from decimal import Decimal
from typing import NamedTuple

import msgspec

from agent.core.observations import MarkPriceObs, PositionObs, Side
from agent.exchanges.bybit.schemas import (
    BybitEnvelope, BybitInstrumentData, BybitInstrumentsResult, BybitPositionData, BybitPositionListResult,
    BybitServerTimeResult, BybitTickerData, BybitTickersResult,
)
from agent.exchanges.parsing import (
    BoundedDecoder, MalformedRow, optional_decimal, optional_epoch_ms, parse_rows, positive_decimal,
    required_decimal, to_decimal,
)

_ENVELOPE = BoundedDecoder(BybitEnvelope)
_SERVER_TIME = BoundedDecoder(BybitServerTimeResult)
_POSITION_PAGE = BoundedDecoder(BybitPositionListResult)
_POSITION_ROW = BoundedDecoder(BybitPositionData)
_TICKERS = BoundedDecoder(BybitTickersResult)
_TICKER_ROW = BoundedDecoder(BybitTickerData)
_INSTRUMENTS = BoundedDecoder(BybitInstrumentsResult)
_INSTRUMENT_ROW = BoundedDecoder(BybitInstrumentData)

_SIDES: dict[str, Side] = {"Buy": "long", "Sell": "short"}


class PositionPage(NamedTuple):
    """One page of GET /v5/position/list."""

    positions: list[PositionObs]
    malformed: int
    next_cursor: str


class MarkPrices(NamedTuple):
    """Mark prices parsed from one response, and how many rows were skipped as malformed."""

    prices: list[MarkPriceObs]
    malformed: int


class TickSizePage(NamedTuple):
    """One page of GET /v5/market/instruments-info: tick size per symbol."""

    tick_sizes: dict[str, Decimal]
    malformed: int
    next_cursor: str


def decode_envelope(body: bytes) -> BybitEnvelope:
    """The common envelope; raises msgspec errors when the body is not one."""
    return _ENVELOPE.decode(body)


def parse_server_time_ms(envelope: BybitEnvelope) -> int:
    """Server time in ms from GET /v5/market/time (``timeNano`` is the most precise field)."""
    result = _SERVER_TIME.decode(envelope.result)
    if result.time_nano.isdigit():
        return int(result.time_nano) // 1_000_000
    if envelope.time:
        return envelope.time
    if result.time_second.isdigit():
        return int(result.time_second) * 1000
    raise msgspec.ValidationError("server time response has no timeNano, time or timeSecond")


def parse_position(row: BybitPositionData, *, ts_fallback_ms: int | None = None) -> PositionObs:
    """One position row; ``side`` ``""`` with size 0 is flat. Raises ``MalformedRow``.

    The time is ``updatedTime``, else ``ts_fallback_ms`` (the response's or frame's time); either must be plausible.
    """
    size = required_decimal(row.size, "size")
    amount = to_decimal(size, "size")
    if amount < 0:
        raise MalformedRow("size is negative")
    if row.position_idx not in (0, 1, 2):
        raise MalformedRow(f"positionIdx {row.position_idx} is not 0, 1 or 2")
    side: Side | None = None
    if amount != 0:
        if row.side not in _SIDES:
            raise MalformedRow(f"side {row.side[:20]!r} of an open position is not Buy or Sell")
        side = _SIDES[row.side]
    return PositionObs(
        symbol=_symbol(row.symbol),
        position_idx=row.position_idx,
        side=side,
        size=size,
        entry_price=optional_decimal(row.avg_price or row.entry_price, "avgPrice"),
        mark_price=optional_decimal(row.mark_price, "markPrice"),
        unrealized_pnl=optional_decimal(row.unrealised_pnl, "unrealisedPnl"),
        leverage=optional_decimal(row.leverage, "leverage"),
        liquidation_price=optional_decimal(row.liq_price, "liqPrice"),
        ts_exchange_ms=(optional_epoch_ms(row.updated_time, "updatedTime")
                        or optional_epoch_ms(ts_fallback_ms, "time")),
    )


def parse_position_list(envelope: BybitEnvelope) -> PositionPage:
    """The rows and next cursor of one position-list page (``""`` cursor on the last page)."""
    page = _POSITION_PAGE.decode(envelope.result)
    positions, malformed = parse_rows(
        page.rows, _POSITION_ROW, lambda row: parse_position(row, ts_fallback_ms=envelope.time))
    return PositionPage(positions, malformed, page.next_page_cursor)


def parse_ticker(row: BybitTickerData, *, ts_ms: int | None = None) -> MarkPriceObs:
    """One linear ticker row; a blank ``markPrice`` is malformed, a blank ``fundingRate`` is None."""
    return MarkPriceObs(
        symbol=_symbol(row.symbol),
        mark_price=required_decimal(row.mark_price, "markPrice"),
        index_price=optional_decimal(row.index_price, "indexPrice"),
        funding_rate=optional_decimal(row.funding_rate, "fundingRate"),
        ts_exchange_ms=optional_epoch_ms(ts_ms, "time"),
    )


def parse_tickers(envelope: BybitEnvelope, symbols: Collection[str] = ()) -> MarkPrices:
    """Mark prices from GET /v5/market/tickers, only for ``symbols`` when given.

    REST tickers carry no per-row time, so the envelope's ``time`` stamps them all.
    """
    result = _TICKERS.decode(envelope.result)
    wanted = frozenset(symbols)

    def parse(row: BybitTickerData) -> MarkPriceObs | None:
        if wanted and row.symbol not in wanted:
            return None
        return parse_ticker(row, ts_ms=envelope.time)

    prices, malformed = parse_rows(result.rows, _TICKER_ROW, parse)
    return MarkPrices(prices, malformed)


def parse_instruments(envelope: BybitEnvelope) -> TickSizePage:
    """``priceFilter.tickSize`` per symbol from one instruments-info page; a row without a positive
    tick size is malformed."""
    page = _INSTRUMENTS.decode(envelope.result)

    def parse(row: BybitInstrumentData) -> tuple[str, Decimal]:
        return _symbol(row.symbol), positive_decimal(row.price_filter.tick_size, "priceFilter.tickSize")

    rows, malformed = parse_rows(page.rows, _INSTRUMENT_ROW, parse)
    return TickSizePage(dict(rows), malformed, page.next_page_cursor)


def _symbol(value: str) -> str:
    symbol = value.strip()
    if not symbol:
        raise MalformedRow("symbol is empty")
    return symbol
