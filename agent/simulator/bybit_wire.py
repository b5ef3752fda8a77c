"""Bybit v5 REST payloads built from the market model (pure functions).

Shapes follow https://bybit-exchange.github.io/docs/v5/ (position/list, market/tickers,
market/instruments-info, market/time). Every number is a string, as on the venue.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from agent.simulator.instruments import SymbolSpec, fmt
from agent.simulator.positions import Position, Quote, position_metrics

FUNDING_INTERVAL_MS = 8 * 3600 * 1000
# A fixed launch time so instruments-info is stable across runs.
LAUNCH_TIME_MS = 1_584_230_400_000


def envelope(result: Any, time_ms: int, ret_code: int = 0, ret_msg: str = "OK") -> dict[str, Any]:
    """The v5 response envelope."""
    return {"retCode": ret_code, "retMsg": ret_msg, "result": result, "retExtInfo": {}, "time": time_ms}


def error_envelope(ret_code: int, ret_msg: str, time_ms: int) -> dict[str, Any]:
    """An error envelope; Bybit sends an empty object as ``result``."""
    return envelope({}, time_ms, ret_code, ret_msg)


def server_time(time_ms: int) -> dict[str, Any]:
    """``result`` of GET /v5/market/time."""
    return {"timeSecond": str(time_ms // 1000), "timeNano": str(time_ms * 1_000_000 + 423_213)}


def next_funding_ms(now_ms: int) -> int:
    """The next 8-hour funding boundary after ``now_ms``."""
    return (now_ms // FUNDING_INTERVAL_MS + 1) * FUNDING_INTERVAL_MS


def ticker_row(spec: SymbolSpec, quote: Quote, now_ms: int) -> dict[str, Any]:
    """One linear perpetual row of GET /v5/market/tickers."""
    tick = spec.tick
    change = (quote.last_price - quote.prev_price_24h) / quote.prev_price_24h
    volume = Decimal(250_000) / Decimal(spec.start_price)
    return {
        "symbol": spec.symbol,
        "lastPrice": fmt(quote.last_price),
        "indexPrice": fmt(quote.index_price),
        "markPrice": fmt(quote.mark_price),
        "prevPrice24h": fmt(quote.prev_price_24h),
        "price24hPcnt": fmt(change.quantize(Decimal("0.000001"))),
        "highPrice24h": fmt(quote.high_price_24h),
        "lowPrice24h": fmt(quote.low_price_24h),
        "prevPrice1h": fmt(quote.prev_price_24h),
        "openInterest": fmt((volume * 40).quantize(spec.step)),
        "openInterestValue": fmt((volume * 40 * quote.mark_price).quantize(Decimal("0.01"))),
        "turnover24h": fmt((volume * 900 * quote.mark_price).quantize(Decimal("0.0001"))),
        "volume24h": fmt((volume * 900).quantize(spec.step)),
        "fundingRate": fmt(quote.funding_rate),
        "nextFundingTime": str(next_funding_ms(now_ms)),
        "predictedDeliveryPrice": "",
        "basisRate": "",
        "deliveryFeeRate": "",
        "deliveryTime": "0",
        "ask1Size": fmt(spec.step * 37),
        "bid1Price": fmt(quote.mark_price - tick),
        "ask1Price": fmt(quote.mark_price + tick),
        "bid1Size": fmt(spec.step * 52),
        "basis": "",
        "preOpenPrice": "",
        "preQty": "",
        "curPreListingPhase": "",
        "fundingIntervalHour": "8",
        "basisRateYear": "",
        "fundingCap": "0.005",
    }


def instrument_row(spec: SymbolSpec) -> dict[str, Any]:
    """One linear perpetual row of GET /v5/market/instruments-info."""
    tick = spec.tick
    return {
        "symbol": spec.symbol,
        "contractType": "LinearPerpetual",
        "status": "Trading",
        "baseCoin": spec.base,
        "quoteCoin": spec.quote,
        "launchTime": str(LAUNCH_TIME_MS),
        "deliveryTime": "0",
        "deliveryFeeRate": "",
        "priceScale": str(spec.price_decimals),
        "leverageFilter": {"minLeverage": "1", "maxLeverage": f"{spec.max_leverage}.00", "leverageStep": "0.01"},
        "priceFilter": {"minPrice": fmt(tick), "maxPrice": fmt(tick * 19_999_998), "tickSize": spec.tick_size},
        "lotSizeFilter": {"maxOrderQty": fmt(spec.step * 1_190_000), "minOrderQty": spec.qty_step,
                          "qtyStep": spec.qty_step, "postOnlyMaxOrderQty": fmt(spec.step * 1_190_000),
                          "maxMktOrderQty": fmt(spec.step * 500_000), "minNotionalValue": "5"},
        "unifiedMarginTrade": True,
        "fundingInterval": 480,
        "settleCoin": spec.quote,
        "copyTrading": "both",
        "upperFundingRate": "0.005",
        "lowerFundingRate": "-0.005",
        "isPreListing": False,
        "preListingInfo": None,
        "riskParameters": {"priceLimitRatioX": "0.01", "priceLimitRatioY": "0.02"},
        "displayName": "",
    }


def position_row(pos: Position, spec: SymbolSpec, quote: Quote) -> dict[str, Any]:
    """One open position of GET /v5/position/list (entry price is ``avgPrice`` on REST)."""
    m = position_metrics(pos, quote.mark_price, spec)
    return {
        "positionIdx": pos.position_idx,
        "riskId": 1,
        "riskLimitValue": "2000000",
        "symbol": pos.symbol,
        "side": "Buy" if pos.side == "long" else "Sell",
        "size": fmt(pos.size),
        "avgPrice": fmt(pos.entry_price),
        "positionValue": fmt(m.position_value),
        "tradeMode": 0,
        "positionStatus": "Normal",
        "autoAddMargin": 0,
        "adlRankIndicator": 2,
        "leverage": fmt(pos.leverage),
        "positionBalance": fmt(m.initial_margin),
        "markPrice": fmt(quote.mark_price),
        "liqPrice": fmt(m.liq_price),
        "bustPrice": fmt(m.bust_price),
        "positionMM": fmt(m.maint_margin),
        "positionMMByMp": fmt(m.maint_margin),
        "positionIM": fmt(m.initial_margin),
        "positionIMByMp": fmt(m.initial_margin),
        "tpslMode": "Full",
        "takeProfit": "0",
        "stopLoss": "0",
        "trailingStop": "0",
        "breakEvenPrice": fmt(m.break_even_price),
        "unrealisedPnl": fmt(m.unrealised_pnl),
        "curRealisedPnl": fmt(pos.cur_realised_pnl),
        "cumRealisedPnl": fmt(pos.cum_realised_pnl),
        "seq": pos.seq,
        "isReduceOnly": False,
        "mmrSysUpdatedTime": "",
        "leverageSysUpdatedTime": "",
        "sessionAvgPrice": "",
        "openTime": pos.created_ms,
        "createdTime": str(pos.created_ms),
        "updatedTime": str(pos.updated_ms),
    }


def flat_row(symbol: str, position_idx: int, quote: Quote, leverage: int, seq: int,
             updated_ms: int) -> dict[str, Any]:
    """An empty slot, as GET /v5/position/list returns it when asked by symbol."""
    return {
        "positionIdx": position_idx,
        "riskId": 1,
        "riskLimitValue": "2000000",
        "symbol": symbol,
        "side": "",
        "size": "0",
        "avgPrice": "0",
        "positionValue": "0",
        "tradeMode": 0,
        "positionStatus": "Normal",
        "autoAddMargin": 0,
        "adlRankIndicator": 0,
        "leverage": str(leverage),
        "positionBalance": "0",
        "markPrice": fmt(quote.mark_price),
        "liqPrice": "",
        "bustPrice": "",
        "positionMM": "0",
        "positionMMByMp": "0",
        "positionIM": "0",
        "positionIMByMp": "0",
        "tpslMode": "Full",
        "takeProfit": "0",
        "stopLoss": "0",
        "trailingStop": "0",
        "breakEvenPrice": "0",
        "unrealisedPnl": "0",
        "curRealisedPnl": "0",
        "cumRealisedPnl": "0",
        "seq": seq,
        "isReduceOnly": False,
        "mmrSysUpdatedTime": "",
        "leverageSysUpdatedTime": "",
        "sessionAvgPrice": "",
        "openTime": 0,
        "createdTime": str(updated_ms),
        "updatedTime": str(updated_ms),
    }


def account_info(now_ms: int) -> dict[str, Any]:
    """``result`` of GET /v5/account/info: a unified trading account (UTA 2.0)."""
    return {"marginMode": "REGULAR_MARGIN", "updatedTime": str(now_ms - 86_400_000), "unifiedMarginStatus": 6,
            "dcpStatus": "OFF", "timeWindow": 10, "smpGroup": 0, "isMasterTrader": False,
            "spotHedgingStatus": "OFF"}


def api_key_info(api_key: str, now_ms: int) -> dict[str, Any]:
    """``result`` of GET /v5/user/query-api for a read-only key."""
    return {"id": "13770661", "note": "feedagent-simulator", "apiKey": api_key, "readOnly": 1, "secret": "",
            "permissions": {"ContractTrade": ["Order", "Position"], "Spot": [], "Wallet": ["AccountTransfer"],
                            "Options": [], "Derivatives": [], "CopyTrading": [], "BlockTrade": [],
                            "Exchange": [], "NFT": [], "Affiliate": []},
            "ips": ["*"], "type": 1, "deadlineDay": -1, "expiredAt": "", "createdAt": "2024-01-01T00:00:00Z",
            "unified": 0, "uta": 1, "userID": 24600000, "inviterID": 0, "vipLevel": "No VIP",
            "mktMakerLevel": "0", "affiliateID": 0, "rsaPublicKey": "", "isMaster": True}


def ws_position_row(row: dict[str, Any]) -> dict[str, Any]:
    """A REST position row (``position_row``/``flat_row``) as the ``position`` topic sends it.

    The WebSocket names the entry price ``entryPrice`` (REST: ``avgPrice``) and adds ``category``.
    """
    out = {("entryPrice" if key == "avgPrice" else key): value for key, value in row.items()}
    out["category"] = "linear"
    return out


def ws_ticker_row(spec: SymbolSpec, quote: Quote, now_ms: int, *, mark_price: Decimal,
                  tick_direction: str, bid_size: Decimal, ask_size: Decimal) -> dict[str, Any]:
    """All fields of a ``tickers.{symbol}`` snapshot: the REST row, plus the live book sizes."""
    row = ticker_row(spec, quote, now_ms)
    row["tickDirection"] = tick_direction
    row["markPrice"] = fmt(mark_price)
    row["bid1Size"] = fmt(bid_size)
    row["ask1Size"] = fmt(ask_size)
    return row
