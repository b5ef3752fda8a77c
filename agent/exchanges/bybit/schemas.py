"""Bybit v5 REST wire structs. Pure data: unknown fields are ignored, most fields are optional,
numbers stay strings. Rows are kept as ``msgspec.Raw`` in the page structs so one bad row
can be skipped without failing the page (see ``parse.py``).
"""

from __future__ import annotations

import msgspec


class BybitEnvelope(msgspec.Struct, frozen=True, rename="camel"):
    """Every REST response. https://bybit-exchange.github.io/docs/v5/guide (common response parameters).

    Success is ``retCode == 0`` whatever ``retMsg`` says (``OK``, ``success``, ``SUCCESS`` or ``""``).
    """

    ret_code: int
    ret_msg: str = ""
    result: msgspec.Raw = msgspec.Raw(b"{}")
    time: int | None = None  # server time of the response, ms


class BybitServerTimeResult(msgspec.Struct, frozen=True, rename="camel"):
    """``result`` of GET /v5/market/time. https://bybit-exchange.github.io/docs/v5/market/time"""

    time_second: str = ""
    time_nano: str = ""


class BybitPositionListResult(msgspec.Struct, frozen=True, rename="camel"):
    """``result`` of GET /v5/position/list. https://bybit-exchange.github.io/docs/v5/position"""

    rows: list[msgspec.Raw] = msgspec.field(name="list", default_factory=list)
    next_page_cursor: str = ""  # "" on the last page
    category: str = ""


class BybitPositionData(msgspec.Struct, frozen=True, rename="camel"):
    """One position row (REST list, and the private ``position`` topic)."""

    symbol: str
    size: str  # always >= 0; "0" when flat
    position_idx: int = 0  # 0 one-way, 1 hedge buy side, 2 hedge sell side
    side: str = ""  # "Buy" | "Sell" | "" when flat
    avg_price: str = ""  # REST name of the entry price
    entry_price: str = ""  # the WebSocket topic's name for the same thing
    mark_price: str = ""
    unrealised_pnl: str = ""
    leverage: str = ""  # "" under portfolio margin
    liq_price: str = ""  # can be ""
    updated_time: str | int = ""  # ms


class BybitTickersResult(msgspec.Struct, frozen=True, rename="camel"):
    """``result`` of GET /v5/market/tickers. https://bybit-exchange.github.io/docs/v5/market/tickers"""

    category: str = ""
    rows: list[msgspec.Raw] = msgspec.field(name="list", default_factory=list)


class BybitTickerData(msgspec.Struct, frozen=True, rename="camel"):
    """One linear ticker row; every value is a string."""

    symbol: str
    mark_price: str = ""
    index_price: str = ""
    funding_rate: str = ""  # "" on dated futures
