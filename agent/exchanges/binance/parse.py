"""Pure functions from Binance USDⓈ-M REST responses to observations. No I/O, no clocks.

The top level is decoded into raw rows first, then each row on its own: a
malformed row is counted and skipped, never fails the batch.
"""

from __future__ import annotations

from collections.abc import Collection
from decimal import Decimal
from typing import NamedTuple

import msgspec

from agent.core.observations import MarkPriceObs, PositionObs, Side
from agent.exchanges.binance.schemas import (
    BinanceErrorMsg, BinanceExchangeInfoMsg, BinanceListenKeyMsg, BinancePositionRiskData, BinancePremiumIndexData,
    BinanceServerTimeMsg, BinanceSymbolInfo,
)
from agent.exchanges.parsing import (
    BoundedDecoder, MalformedRow, optional_decimal, optional_epoch_ms, parse_rows, positive_decimal,
    required_decimal, to_decimal,
)

_ROWS = BoundedDecoder(list[msgspec.Raw])
_ONE = BoundedDecoder(msgspec.Raw)
_ERROR = BoundedDecoder(BinanceErrorMsg)
_SERVER_TIME = BoundedDecoder(BinanceServerTimeMsg)
_POSITION_ROW = BoundedDecoder(BinancePositionRiskData)
_PREMIUM_ROW = BoundedDecoder(BinancePremiumIndexData)
_LISTEN_KEY = BoundedDecoder(BinanceListenKeyMsg)
_EXCHANGE_INFO = BoundedDecoder(BinanceExchangeInfoMsg)
_SYMBOL_INFO = BoundedDecoder(BinanceSymbolInfo)

POSITION_IDX: dict[str, int] = {"BOTH": 0, "LONG": 1, "SHORT": 2}
"""Binance ``positionSide``/``ps`` → the event contract's ``position_idx``."""


class Positions(NamedTuple):
    """Positions parsed from one response, and how many rows were skipped as malformed."""

    positions: list[PositionObs]
    malformed: int


class MarkPrices(NamedTuple):
    """Mark prices parsed from one response, and how many rows were skipped as malformed."""

    prices: list[MarkPriceObs]
    malformed: int


class TickSizes(NamedTuple):
    """Tick size per symbol, and how many symbol entries were skipped as malformed."""

    tick_sizes: dict[str, Decimal]
    malformed: int


def decode_error(body: bytes) -> BinanceErrorMsg | None:
    """The ``{code, msg}`` of an error body, or None when the body is not one."""
    try:
        return _ERROR.decode(body)
    except msgspec.DecodeError:
        return None


def parse_server_time_ms(body: bytes) -> int:
    """``serverTime`` (ms) of GET /fapi/v1/time."""
    return _SERVER_TIME.decode(body).serverTime


def parse_listen_key(body: bytes) -> str:
    """The key of a listenKey POST/PUT reply (``""`` when the reply has none, e.g. old PUTs)."""
    return _LISTEN_KEY.decode(body).listenKey


def position_side(amount_sign: int, position_side_text: str) -> Side | None:
    """``BOTH``: the sign of the amount decides; ``LONG``/``SHORT`` decide by themselves; 0 is flat."""
    if amount_sign == 0:
        return None
    if position_side_text == "LONG":
        return "long"
    if position_side_text == "SHORT":
        return "short"
    return "long" if amount_sign > 0 else "short"


def size_and_side(amount_text: str, position_side_text: str, field: str) -> tuple[str, Side | None]:
    """A signed amount (``positionAmt``, ``pa``) → the size as sent without its sign, and the side.

    Binance signs hedge-mode amounts too: ``LONG`` is never negative and
    ``SHORT`` never positive, so an amount against its side is malformed,
    not a size to take the magnitude of. Raises ``MalformedRow``.
    """
    amount = to_decimal(amount_text, field)
    sign = (amount > 0) - (amount < 0)
    if (position_side_text == "LONG" and sign < 0) or (position_side_text == "SHORT" and sign > 0):
        raise MalformedRow(f"{field} {amount_text[:40]!r} has the wrong sign for positionSide {position_side_text}")
    return amount_text.lstrip("+-"), position_side(sign, position_side_text)


def parse_position(row: BinancePositionRiskData) -> PositionObs:
    """One positionRisk row: signed ``positionAmt`` → size and side. Raises ``MalformedRow``."""
    amount_text = required_decimal(row.positionAmt, "positionAmt")
    if row.positionSide not in POSITION_IDX:
        raise MalformedRow(f"positionSide {row.positionSide[:20]!r} is not BOTH, LONG or SHORT")
    symbol = row.symbol.strip()
    if not symbol:
        raise MalformedRow("symbol is empty")
    size, side = size_and_side(amount_text, row.positionSide, "positionAmt")
    return PositionObs(
        symbol=symbol,
        position_idx=POSITION_IDX[row.positionSide],
        side=side,
        size=size,  # the magnitude exactly as sent
        entry_price=optional_decimal(row.entryPrice, "entryPrice"),
        mark_price=optional_decimal(row.markPrice, "markPrice"),
        unrealized_pnl=optional_decimal(row.unRealizedProfit, "unRealizedProfit"),
        leverage=optional_decimal(row.leverage, "leverage"),
        liquidation_price=optional_decimal(row.liquidationPrice, "liquidationPrice"),
        ts_exchange_ms=optional_epoch_ms(row.updateTime, "updateTime"),
    )


def parse_position_risk(body: bytes) -> Positions:
    """Every row of GET /fapi/v3/positionRisk (symbols with a position or open orders)."""
    positions, malformed = parse_rows(_ROWS.decode(body), _POSITION_ROW, parse_position)
    return Positions(positions, malformed)


def parse_premium_index_row(row: BinancePremiumIndexData) -> MarkPriceObs:
    """One premiumIndex entry; a blank ``markPrice`` is malformed, a blank funding rate is None."""
    symbol = row.symbol.strip()
    if not symbol:
        raise MalformedRow("symbol is empty")
    return MarkPriceObs(
        symbol=symbol,
        mark_price=required_decimal(row.markPrice, "markPrice"),
        index_price=optional_decimal(row.indexPrice, "indexPrice"),
        funding_rate=optional_decimal(row.lastFundingRate, "lastFundingRate"),
        ts_exchange_ms=optional_epoch_ms(row.time, "time"),
    )


def parse_premium_index(body: bytes, symbols: Collection[str] = ()) -> MarkPrices:
    """Mark prices from GET /fapi/v1/premiumIndex, object or array, only for ``symbols`` when given."""
    raw = body.lstrip()
    rows = _ROWS.decode(raw) if raw[:1] == b"[" else [_ONE.decode(raw)]  # validates the JSON either way
    wanted = frozenset(symbols)

    def parse(row: BinancePremiumIndexData) -> MarkPriceObs | None:
        if wanted and row.symbol not in wanted:
            return None
        return parse_premium_index_row(row)

    prices, malformed = parse_rows(rows, _PREMIUM_ROW, parse)
    return MarkPrices(prices, malformed)


def parse_exchange_info(body: bytes) -> TickSizes:
    """``PRICE_FILTER.tickSize`` per symbol from GET /fapi/v1/exchangeInfo; an entry without one is malformed."""
    info = _EXCHANGE_INFO.decode(body)

    def parse(entry: BinanceSymbolInfo) -> tuple[str, Decimal]:
        price = next((f for f in entry.filters if f.filterType == "PRICE_FILTER"), None)
        if price is None:
            raise MalformedRow("no PRICE_FILTER")
        if not entry.symbol:
            raise MalformedRow("symbol is empty")
        return entry.symbol, positive_decimal(price.tickSize, "PRICE_FILTER.tickSize")

    rows, malformed = parse_rows(info.symbols, _SYMBOL_INFO, parse)
    return TickSizes(dict(rows), malformed)
