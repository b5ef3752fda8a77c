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


class BinanceListenKeyMsg(msgspec.Struct, frozen=True):
    """POST/PUT /fapi/v1/listenKey. .../user-data-streams/Start-User-Data-Stream"""

    listenKey: str = ""
