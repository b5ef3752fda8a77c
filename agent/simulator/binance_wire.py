"""Binance USDⓈ-M REST payloads built from the market model (pure functions).

Shapes follow https://developers.binance.com/docs/derivatives/usds-margined-futures/
(premiumIndex, positionRisk v2/v3, exchangeInfo, ticker/24hr, leverageBracket).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from agent.simulator.instruments import SymbolSpec, fmt
from agent.simulator.positions import Position, Quote, position_metrics

_EIGHT = Decimal("0.00000001")
FUNDING_INTERVAL_MS = 8 * 3600 * 1000
ONBOARD_DATE_MS = 1_569_398_400_000
PERPETUAL_DELIVERY_DATE_MS = 4_133_404_800_000
POSITION_SIDES = {0: "BOTH", 1: "LONG", 2: "SHORT"}


def error(code: int, msg: str) -> dict[str, Any]:
    """Binance's error body."""
    return {"code": code, "msg": msg}


def eight(value: Decimal) -> str:
    """A value with 8 decimals, as Binance prints mark prices and PnL."""
    return fmt(value.quantize(_EIGHT))


def next_funding_ms(now_ms: int) -> int:
    """The next 8-hour funding boundary after ``now_ms``."""
    return (now_ms // FUNDING_INTERVAL_MS + 1) * FUNDING_INTERVAL_MS


def premium_index(spec: SymbolSpec, quote: Quote, now_ms: int) -> dict[str, Any]:
    """One object of GET /fapi/v1/premiumIndex."""
    return {
        "symbol": spec.symbol,
        "markPrice": eight(quote.mark_price),
        "indexPrice": eight(quote.index_price),
        "estimatedSettlePrice": eight(quote.index_price),
        "lastFundingRate": eight(quote.funding_rate),
        "interestRate": "0.00010000",
        "nextFundingTime": next_funding_ms(now_ms),
        "time": now_ms,
    }


def ticker_24hr(spec: SymbolSpec, quote: Quote, now_ms: int) -> dict[str, Any]:
    """One object of GET /fapi/v1/ticker/24hr."""
    change = quote.last_price - quote.prev_price_24h
    pct = (change / quote.prev_price_24h * 100).quantize(Decimal("0.001"))
    volume = (Decimal(250_000) / Decimal(spec.start_price) * 900).quantize(spec.step)
    return {
        "symbol": spec.symbol,
        "priceChange": fmt(change),
        "priceChangePercent": fmt(pct),
        "weightedAvgPrice": fmt(quote.prev_price_24h),
        "lastPrice": fmt(quote.last_price),
        "lastQty": fmt(spec.step * 3),
        "openPrice": fmt(quote.prev_price_24h),
        "highPrice": fmt(quote.high_price_24h),
        "lowPrice": fmt(quote.low_price_24h),
        "volume": fmt(volume),
        "quoteVolume": fmt((volume * quote.mark_price).quantize(Decimal("0.01"))),
        "openTime": now_ms - 86_400_000,
        "closeTime": now_ms,
        "firstId": 5_000_000_000,
        "lastId": 5_001_234_567,
        "count": 1_234_568,
    }


def symbol_info(spec: SymbolSpec) -> dict[str, Any]:
    """One entry of ``symbols`` in GET /fapi/v1/exchangeInfo."""
    tick = spec.tick
    return {
        "symbol": spec.symbol, "pair": spec.symbol, "contractType": "PERPETUAL",
        "deliveryDate": PERPETUAL_DELIVERY_DATE_MS, "onboardDate": ONBOARD_DATE_MS, "status": "TRADING",
        "maintMarginPercent": "2.5000", "requiredMarginPercent": "5.0000",
        "baseAsset": spec.base, "quoteAsset": spec.quote, "marginAsset": spec.quote,
        "pricePrecision": spec.price_decimals, "quantityPrecision": spec.qty_decimals,
        "baseAssetPrecision": 8, "quotePrecision": 8, "underlyingType": "COIN", "underlyingSubType": [],
        "settlePlan": 0, "triggerProtect": "0.0500", "liquidationFee": "0.012500", "marketTakeBound": "0.05",
        "maxMoveOrderLimit": 10000,
        "filters": [
            {"filterType": "PRICE_FILTER", "minPrice": fmt(tick), "maxPrice": fmt(tick * 10_000_000),
             "tickSize": spec.tick_size},
            {"filterType": "LOT_SIZE", "stepSize": spec.qty_step, "maxQty": fmt(spec.step * 1_000_000),
             "minQty": spec.qty_step},
            {"filterType": "MARKET_LOT_SIZE", "stepSize": spec.qty_step, "maxQty": fmt(spec.step * 120_000),
             "minQty": spec.qty_step},
            {"filterType": "MAX_NUM_ORDERS", "limit": 200},
            {"filterType": "MAX_NUM_ALGO_ORDERS", "limit": 10},
            {"filterType": "MIN_NOTIONAL", "notional": "5"},
            {"filterType": "PERCENT_PRICE", "multiplierUp": "1.0500", "multiplierDown": "0.9500",
             "multiplierDecimal": "4"},
        ],
        "orderTypes": ["LIMIT", "MARKET", "STOP", "STOP_MARKET", "TAKE_PROFIT", "TAKE_PROFIT_MARKET",
                       "TRAILING_STOP_MARKET"],
        "timeInForce": ["GTC", "IOC", "FOK", "GTX", "GTD"],
        "permissionSet": ["GRID", "COPY"],
    }


def exchange_info(specs: tuple[SymbolSpec, ...], now_ms: int, weight_limit_per_minute: int) -> dict[str, Any]:
    """GET /fapi/v1/exchangeInfo."""
    return {
        "timezone": "UTC",
        "serverTime": now_ms,
        "futuresType": "U_MARGINED",
        "rateLimits": [
            {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1,
             "limit": weight_limit_per_minute},
            {"rateLimitType": "ORDERS", "interval": "MINUTE", "intervalNum": 1, "limit": 1200},
            {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": 300},
        ],
        "exchangeFilters": [],
        "assets": [{"asset": "USDT", "marginAvailable": True, "autoAssetExchange": "-10000"}],
        "symbols": [symbol_info(s) for s in specs],
    }


def _signed_amount(pos: Position) -> Decimal:
    return pos.size * pos.direction


def position_risk_v3(pos: Position, spec: SymbolSpec, quote: Quote) -> dict[str, Any]:
    """One row of GET /fapi/v3/positionRisk (no leverage / marginType on v3)."""
    m = position_metrics(pos, quote.mark_price, spec)
    notional = m.mark_value * pos.direction
    return {
        "symbol": pos.symbol,
        "positionSide": POSITION_SIDES[pos.position_idx],
        "positionAmt": fmt(_signed_amount(pos)),
        "entryPrice": fmt(pos.entry_price),
        "breakEvenPrice": fmt(m.break_even_price),
        "markPrice": eight(quote.mark_price),
        "unRealizedProfit": eight(m.unrealised_pnl),
        "liquidationPrice": eight(m.liq_price),
        "isolatedMargin": "0",
        "notional": eight(notional),
        "marginAsset": spec.quote,
        "isolatedWallet": "0",
        "initialMargin": eight(m.mark_value / pos.leverage),
        "maintMargin": eight(m.maint_margin),
        "positionInitialMargin": eight(m.mark_value / pos.leverage),
        "openOrderInitialMargin": "0",
        "adl": 2,
        "bidNotional": "0",
        "askNotional": "0",
        "updateTime": pos.updated_ms,
    }


def position_risk_v2(pos: Position, spec: SymbolSpec, quote: Quote) -> dict[str, Any]:
    """One row of GET /fapi/v2/positionRisk for an open position."""
    m = position_metrics(pos, quote.mark_price, spec)
    return {
        "symbol": pos.symbol,
        "positionAmt": fmt(_signed_amount(pos)),
        "entryPrice": fmt(pos.entry_price),
        "breakEvenPrice": fmt(m.break_even_price),
        "markPrice": eight(quote.mark_price),
        "unRealizedProfit": eight(m.unrealised_pnl),
        "liquidationPrice": eight(m.liq_price),
        "leverage": fmt(pos.leverage),
        "maxNotionalValue": "4000000",
        "marginType": "cross",
        "isolatedMargin": "0.00000000",
        "isAutoAddMargin": "false",
        "positionSide": POSITION_SIDES[pos.position_idx],
        "notional": eight(m.mark_value * pos.direction),
        "isolatedWallet": "0",
        "updateTime": pos.updated_ms,
        "isolated": False,
        "adlQuantile": 2,
    }


def flat_risk_v2(symbol: str, position_idx: int, spec: SymbolSpec, quote: Quote) -> dict[str, Any]:
    """A flat row of GET /fapi/v2/positionRisk (v2 lists every symbol)."""
    return {
        "symbol": symbol,
        "positionAmt": fmt(Decimal(0).quantize(spec.step)),
        "entryPrice": "0.0",
        "breakEvenPrice": "0.0",
        "markPrice": eight(quote.mark_price),
        "unRealizedProfit": "0.00000000",
        "liquidationPrice": "0",
        "leverage": str(spec.default_leverage),
        "maxNotionalValue": "4000000",
        "marginType": "cross",
        "isolatedMargin": "0.00000000",
        "isAutoAddMargin": "false",
        "positionSide": POSITION_SIDES[position_idx],
        "notional": "0",
        "isolatedWallet": "0",
        "updateTime": 0,
        "isolated": False,
        "adlQuantile": 0,
    }


def leverage_bracket(spec: SymbolSpec) -> dict[str, Any]:
    """One symbol of GET /fapi/v1/leverageBracket (numbers are JSON numbers here)."""
    caps = [(spec.max_leverage, 50_000, 0.004), (spec.max_leverage // 2, 600_000, 0.005),
            (20, 3_000_000, 0.01), (10, 12_000_000, 0.025), (5, 50_000_000, 0.05)]
    brackets, floor, cum = [], 0, 0.0
    previous_mmr = 0.0
    for i, (lev, cap, mmr) in enumerate(caps, start=1):
        cum += floor * (mmr - previous_mmr)
        brackets.append({"bracket": i, "initialLeverage": max(lev, 1), "notionalCap": cap, "notionalFloor": floor,
                         "maintMarginRatio": mmr, "cum": round(cum, 2)})
        floor, previous_mmr = cap, mmr
    return {"symbol": spec.symbol, "notionalCoef": 1.0, "brackets": brackets}


def mark_price_update(spec: SymbolSpec, quote: Quote, now_ms: int, mark_price: Decimal) -> dict[str, Any]:
    """One ``markPriceUpdate`` event (``<symbol>@markPrice[@1s]``), with the undocumented ``st``."""
    return {
        "e": "markPriceUpdate",
        "E": now_ms,
        "s": spec.symbol,
        "p": eight(mark_price),
        "ap": eight(mark_price),
        "i": eight(quote.index_price),
        "P": eight(quote.index_price),
        "r": eight(quote.funding_rate),
        "T": next_funding_ms(now_ms),
        "st": 0,
    }


def account_position(symbol: str, position_idx: int, pos: Position | None, spec: SymbolSpec,
                     quote: Quote) -> dict[str, Any]:
    """One ``P`` row of ``ACCOUNT_UPDATE``; a closed slot has ``pa`` "0"."""
    if pos is None:
        return {"s": symbol, "pa": "0", "ep": "0.0", "bep": "0", "cr": "0", "up": "0", "mt": "cross",
                "iw": "0", "ps": POSITION_SIDES[position_idx]}
    m = position_metrics(pos, quote.mark_price, spec)
    return {"s": symbol, "pa": fmt(_signed_amount(pos)), "ep": fmt(pos.entry_price),
            "bep": fmt(m.break_even_price), "cr": eight(pos.cum_realised_pnl), "up": eight(m.unrealised_pnl),
            "mt": "cross", "iw": "0", "ps": POSITION_SIDES[position_idx]}


def account_update(rows: list[dict[str, Any]], now_ms: int, wallet_balance: Decimal) -> dict[str, Any]:
    """``ACCOUNT_UPDATE`` for an order fill: the USDT balance and only the positions that changed."""
    return {"e": "ACCOUNT_UPDATE", "E": now_ms, "T": now_ms - 1,
            "a": {"m": "ORDER",
                  "B": [{"a": "USDT", "wb": eight(wallet_balance), "cw": eight(wallet_balance), "bc": "0"}],
                  "P": rows}}


def listen_key_expired(listen_key: str, now_ms: int, *, e_as_string: bool = False) -> dict[str, Any]:
    """``listenKeyExpired``; production once sent ``E`` as a string."""
    return {"e": "listenKeyExpired", "E": str(now_ms) if e_as_string else now_ms, "listenKey": listen_key}
