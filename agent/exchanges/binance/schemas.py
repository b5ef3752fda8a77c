"""Binance USDⓈ-M REST wire structs. Pure data: field names mirror the wire, unknown fields
are ignored, most fields are optional, prices and sizes stay strings.
"""

from __future__ import annotations

import msgspec


class BinanceErrorMsg(msgspec.Struct, frozen=True):
    """An error body, e.g. ``{"code":-1121,"msg":"Invalid symbol."}``. .../usds-margined-futures/error-code"""

    code: int
    msg: str = ""


class BinanceServerTimeMsg(msgspec.Struct, frozen=True):
    """GET /fapi/v1/time. .../market-data/rest-api/Check-Server-Time"""

    serverTime: int  # ms


class BinancePositionRiskData(msgspec.Struct, frozen=True):
    """One row of GET /fapi/v3/positionRisk (v2 rows decode too). .../trade/rest-api/Position-Information-V3"""

    symbol: str
    positionAmt: str  # signed: negative is short
    positionSide: str = "BOTH"  # BOTH (one-way) | LONG | SHORT (hedge)
    entryPrice: str = ""
    markPrice: str = ""
    unRealizedProfit: str = ""
    liquidationPrice: str = ""  # "0" when there is none
    leverage: str = ""  # v2 only; v3 moved it to /fapi/v1/symbolConfig
    updateTime: int = 0  # ms; 0 for a row never traded


class BinancePremiumIndexData(msgspec.Struct, frozen=True):
    """GET /fapi/v1/premiumIndex (an object with ``symbol``, an array without). .../market-data/rest-api/Mark-Price"""

    symbol: str
    markPrice: str = ""
    indexPrice: str = ""
    lastFundingRate: str = ""  # may be "" for delivery contracts
    time: int = 0  # ms


class BinanceSymbolFilter(msgspec.Struct, frozen=True):
    """One entry of a symbol's ``filters``; only ``PRICE_FILTER`` is read."""

    filterType: str = ""
    tickSize: str = ""  # PRICE_FILTER only


class BinanceSymbolInfo(msgspec.Struct, frozen=True):
    """One entry of ``symbols`` in GET /fapi/v1/exchangeInfo. .../market-data/rest-api/Exchange-Information"""

    symbol: str
    status: str = ""  # TRADING | PENDING_TRADING | SETTLING | CLOSE ...
    filters: list[BinanceSymbolFilter] = []


class BinanceExchangeInfoMsg(msgspec.Struct, frozen=True):
    """GET /fapi/v1/exchangeInfo; symbols stay raw so one bad entry is skipped, not the answer."""

    symbols: list[msgspec.Raw] = []


class BinanceListenKeyMsg(msgspec.Struct, frozen=True):
    """POST/PUT /fapi/v1/listenKey. .../user-data-streams/Start-User-Data-Stream"""

    listenKey: str = ""


# -- WebSocket (…/usds-margined-futures/websocket-market-streams, …/user-data-streams) -----------------


class BinanceWsEnvelope(msgspec.Struct, frozen=True):
    """Any JSON object a stream sends, decoded just enough to route it by shape.

    Combined wrapper ``{"stream","data"}``; bare event ``{"e",…}``; live-request
    answer ``{"result","id"}`` (``result`` is null for SUBSCRIBE); request error
    ``{"code","msg"[,"id"]}``. ``E`` is an int, but a real ``listenKeyExpired``
    carried it as a string.
    """

    stream: str | None = None
    data: msgspec.Raw | msgspec.UnsetType = msgspec.UNSET
    e: str | None = None  # event type
    E: int | str | None = None  # event time, ms
    result: msgspec.Raw | msgspec.UnsetType = msgspec.UNSET
    id: int | str | None = None
    code: int | str | None = None
    msg: str | None = None


class BinanceMarkPriceMsg(msgspec.Struct, frozen=True):
    """``<symbol>@markPrice[@1s]`` and ``!markPrice@arr[@1s]`` items. .../websocket-market-streams/Mark-Price-Stream"""

    e: str  # "markPriceUpdate"
    E: int | str = 0  # event time, ms
    s: str = ""  # symbol
    p: str = ""  # mark price
    ap: str = ""  # mark price moving average (added 2026-03-16)
    i: str = ""  # index price (absent in 2019 frames)
    P: str = ""  # estimated settle price
    r: str = ""  # funding rate; "" or "0.00000000" for delivery symbols
    T: int | str = 0  # next funding time, ms; 0 for delivery symbols
    st: int | str | None = None  # undocumented, seen in live frames


class BinanceAccountPositionData(msgspec.Struct, frozen=True):
    """One ``a.P`` row of ``ACCOUNT_UPDATE``: only positions that changed are sent."""

    s: str  # symbol
    pa: str  # signed position amount; "0" is flat
    ps: str = "BOTH"  # BOTH | LONG | SHORT
    ep: str = ""  # entry price
    bep: str = ""  # breakeven price (absent in 2021 frames)
    cr: str = ""  # accumulated realized PnL
    up: str = ""  # unrealized PnL
    mt: str = ""  # margin type
    iw: str = ""  # isolated wallet


class BinanceAccountUpdateData(msgspec.Struct, frozen=True):
    """``a`` of ``ACCOUNT_UPDATE``; FUNDING_FEE on a cross position carries ``B`` only, no ``P``."""

    m: str = ""  # reason: ORDER, FUNDING_FEE, MARGIN_TYPE_CHANGE, …
    B: list[msgspec.Raw] = msgspec.field(default_factory=list)  # balances
    P: list[msgspec.Raw] = msgspec.field(default_factory=list)  # positions (rows decoded one by one)


class BinanceAccountUpdateMsg(msgspec.Struct, frozen=True):
    """``ACCOUNT_UPDATE``. .../user-data-streams/Event-Balance-and-Position-Update (no mark price, no leverage)."""

    e: str
    E: int | str = 0  # event time, ms
    T: int | str = 0  # transaction time, ms
    a: BinanceAccountUpdateData = BinanceAccountUpdateData()


class BinanceAccountConfigData(msgspec.Struct, frozen=True):
    """``ac`` of ``ACCOUNT_CONFIG_UPDATE``: a symbol's new leverage."""

    s: str = ""
    l: int | str | None = None  # noqa: E741 (the wire's name)


class BinanceAccountConfigUpdateMsg(msgspec.Struct, frozen=True):
    """``ACCOUNT_CONFIG_UPDATE``. .../user-data-streams/Event-User-Account-Configuration-Update (``ai`` is ignored)."""

    e: str
    E: int | str = 0
    T: int | str = 0
    ac: BinanceAccountConfigData | None = None


class BinanceListenKeyExpiredMsg(msgspec.Struct, frozen=True):
    """``listenKeyExpired``. .../user-data-streams/Event-User-Data-Stream-Expired (``E`` may be a string,
    ``listenKey`` may be missing)."""

    e: str
    E: int | str | None = None
    listenKey: str = ""
