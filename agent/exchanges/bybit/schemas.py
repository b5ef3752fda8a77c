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
    category: str = ""  # on the WebSocket rows of the all-in-one ``position`` topic: linear | inverse | option


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


class BybitInstrumentsResult(msgspec.Struct, frozen=True, rename="camel"):
    """``result`` of GET /v5/market/instruments-info. https://bybit-exchange.github.io/docs/v5/market/instrument"""

    category: str = ""
    rows: list[msgspec.Raw] = msgspec.field(name="list", default_factory=list)
    next_page_cursor: str = ""  # "" on the last page


class BybitPriceFilter(msgspec.Struct, frozen=True, rename="camel"):
    """``priceFilter`` of an instrument row."""

    tick_size: str = ""
    min_price: str = ""
    max_price: str = ""


class BybitInstrumentData(msgspec.Struct, frozen=True, rename="camel"):
    """One linear instrument row (only what the agent reads)."""

    symbol: str
    status: str = ""  # Trading | PreLaunch | Delivering | Closed
    price_filter: BybitPriceFilter = BybitPriceFilter()


# -- WebSocket (https://bybit-exchange.github.io/docs/v5/ws/connect) ---------------------------------


class BybitWsEnvelope(msgspec.Struct, frozen=True):
    """Any frame of a v5 stream, decoded just enough to route it.

    Data frames carry ``topic``; control frames carry ``op`` (``pong``, ``auth``,
    ``subscribe``…) or, on option/spread streams, ``type: "COMMAND_RESP"``.
    Success is ``success``, never ``retCode`` (the stream replies have none).
    """

    topic: str | None = None
    op: str | None = None
    type: str | None = None  # "snapshot" | "delta" on data frames; "COMMAND_RESP" on option acks
    success: bool | None = None
    ret_msg: str | None = None
    req_id: str | int | None = None  # echoed as sent; linear acks send "" when none was sent
    data: msgspec.Raw | msgspec.UnsetType = msgspec.UNSET
    ts: int | str | None = None  # ms
    cs: int | str | None = None  # cross sequence (tickers)
    creation_time: int | str | None = msgspec.field(name="creationTime", default=None)  # private topics


class BybitCommandRespData(msgspec.Struct, frozen=True, rename="camel"):
    """``data`` of an option/spread ``COMMAND_RESP`` subscribe ack."""

    fail_topics: list[str] = msgspec.field(default_factory=list)
    success_topics: list[str] = msgspec.field(default_factory=list)


class BybitTickerWsData(msgspec.Struct, frozen=True, rename="camel"):
    """``data`` of a ``tickers.{symbol}`` frame. https://bybit-exchange.github.io/docs/v5/websocket/public/ticker

    A delta carries only the fields that changed: an absent field is ``UNSET``
    (unchanged), which is not the same as ``""`` (the value is now empty, e.g.
    ``fundingRate`` on dated futures).
    """

    symbol: str | msgspec.UnsetType = msgspec.UNSET
    mark_price: str | None | msgspec.UnsetType = msgspec.UNSET
    index_price: str | None | msgspec.UnsetType = msgspec.UNSET
    funding_rate: str | None | msgspec.UnsetType = msgspec.UNSET


class BybitTickerMsg(msgspec.Struct, frozen=True, kw_only=True):
    """One ``tickers.{symbol}`` frame, as classified from the stream (built by ``ws_parse``)."""

    topic: str
    type: str  # "snapshot" | "delta"
    data: BybitTickerWsData
    ts: int | None = None  # ms
    cs: int | None = None


class BybitPositionMsg(msgspec.Struct, frozen=True, kw_only=True):
    """One private ``position`` frame. https://bybit-exchange.github.io/docs/v5/websocket/private/position

    Rows stay raw (``BybitPositionData`` each) so one bad row is skipped, not the frame.
    """

    topic: str
    rows: tuple[msgspec.Raw, ...]
    creation_time: int | None = None  # ms
