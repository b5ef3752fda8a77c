"""Fidelity: independent real clients (the official pybit SDK and ccxt) against the simulator.

The clients sign, send and parse as they do against the real venues; only their base URLs
are pointed at the simulator. ccxt is told to load linear markets only and to skip its
currency fetch (an unrelated wallet endpoint), as the task allows.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import ccxt.async_support as ccxt_async
import pytest
from pybit.exceptions import FailedRequestError, InvalidRequestError
from pybit.unified_trading import HTTP

from agent.simulator import Simulator, synthetic_symbols
from agent.simulator.instruments import DEFAULT_BYBIT_SYMBOLS


def pybit_session(sim: Simulator, *, secret: str | None = None, key: str | None = None) -> HTTP:
    assert sim.endpoints is not None
    ep = sim.endpoints.bybit
    session = HTTP(api_key=key or ep.api_key, api_secret=secret or ep.api_secret, max_retries=1, retry_delay=0)
    session.endpoint = ep.rest_url
    return session


async def test_pybit_time_tickers_and_paginated_positions(start_sim) -> None:
    sim = await start_sim(bybit_symbols=DEFAULT_BYBIT_SYMBOLS + synthetic_symbols(22),
                          bybit_hedge_symbols=("ETHUSDT",))
    market = sim.market
    for i in range(22):
        market.open_position("bybit", f"SIM{i:03d}USDT", "long", str(10 + i))
    market.open_position("bybit", "ETHUSDT", "long", "1.00")
    market.open_position("bybit", "ETHUSDT", "short", "0.50")
    session = pybit_session(sim)

    server_time = await asyncio.to_thread(session.get_server_time)
    tickers = await asyncio.to_thread(session.get_tickers, category="linear")
    first = await asyncio.to_thread(session.get_positions, category="linear", settleCoin="USDT")
    cursor = first["result"]["nextPageCursor"]
    second = await asyncio.to_thread(session.get_positions, category="linear", settleCoin="USDT", cursor=cursor)

    assert server_time["retCode"] == 0 and int(server_time["result"]["timeSecond"]) > 1_600_000_000
    by_symbol = {t["symbol"]: t for t in tickers["result"]["list"]}
    assert by_symbol["BTCUSDT"]["markPrice"] == str(market.quote("bybit", "BTCUSDT").mark_price)
    rows = first["result"]["list"] + second["result"]["list"]
    assert len(first["result"]["list"]) == 20 and cursor and second["result"]["nextPageCursor"] == ""
    assert len(rows) == 24 == len(market.positions("bybit"))
    assert {(r["symbol"], r["positionIdx"]) for r in rows} == {
        (p.symbol, p.position_idx) for p in market.positions("bybit")}
    eth = sorted((r["positionIdx"], r["side"], r["size"]) for r in rows if r["symbol"] == "ETHUSDT")
    assert eth == [(1, "Buy", "1.00"), (2, "Sell", "0.50")]


async def test_pybit_wrong_secret_and_wrong_key_are_rejected(sim: Simulator) -> None:
    with pytest.raises(InvalidRequestError) as bad_sign:
        await asyncio.to_thread(pybit_session(sim, secret="0" * 36).get_positions,
                                category="linear", settleCoin="USDT")
    assert bad_sign.value.status_code == 10004
    with pytest.raises(FailedRequestError) as bad_key:
        await asyncio.to_thread(pybit_session(sim, key="A" * 18).get_positions,
                                category="linear", settleCoin="USDT")
    assert bad_key.value.status_code == 401


@pytest.fixture
async def ccxt_bybit(sim: Simulator) -> AsyncIterator[Any]:
    assert sim.endpoints is not None
    ep = sim.endpoints.bybit
    exchange = ccxt_async.bybit({"apiKey": ep.api_key, "secret": ep.api_secret,
                                 "options": {"fetchMarkets": {"types": ["linear"]}}})
    exchange.urls["api"] = {"public": ep.rest_url, "private": ep.rest_url}
    exchange.has["fetchCurrencies"] = False
    yield exchange
    await exchange.close()


@pytest.fixture
async def ccxt_binance(sim: Simulator) -> AsyncIterator[Any]:
    assert sim.endpoints is not None
    ep = sim.endpoints.binance
    exchange = ccxt_async.binanceusdm({"apiKey": ep.api_key, "secret": ep.api_secret})
    for name, version in (("fapiPublic", "v1"), ("fapiPublicV2", "v2"), ("fapiPublicV3", "v3"),
                          ("fapiPrivate", "v1"), ("fapiPrivateV2", "v2"), ("fapiPrivateV3", "v3")):
        exchange.urls["api"][name] = f"{ep.rest_url}/fapi/{version}"
    exchange.has["fetchCurrencies"] = False
    yield exchange
    await exchange.close()


async def test_ccxt_bybit_markets_positions_ticker(sim: Simulator, ccxt_bybit: Any) -> None:
    market = sim.market
    market.set_mark_price("bybit", "SOLUSDT", "150.250")
    market.open_position("bybit", "SOLUSDT", "short", "12.5", leverage="3")
    market.open_position("bybit", "BTCUSDT", "long", "0.004")

    markets = await ccxt_bybit.load_markets()
    positions = await ccxt_bybit.fetch_positions()
    ticker = await ccxt_bybit.fetch_ticker("SOL/USDT:USDT")

    assert set(markets) == {"BTC/USDT:USDT", "ETH/USDT:USDT", "SOL/USDT:USDT", "XRP/USDT:USDT"}
    assert markets["SOL/USDT:USDT"]["precision"]["price"] == 0.01
    got = {(p["symbol"], p["side"], p["contracts"], p["leverage"]) for p in positions}
    assert got == {("SOL/USDT:USDT", "short", 12.5, 3.0), ("BTC/USDT:USDT", "long", 0.004, 10.0)}
    sol = next(p for p in positions if p["symbol"] == "SOL/USDT:USDT")
    assert Decimal(str(sol["entryPrice"])) == Decimal("150.25")
    assert Decimal(str(ticker["markPrice"])) == market.quote("bybit", "SOLUSDT").mark_price


async def test_ccxt_binance_markets_positions_mark_price_ticker(sim: Simulator, ccxt_binance: Any) -> None:
    market = sim.market
    market.set_mark_price("binance", "BNBUSDT", "590.000")
    market.open_position("binance", "BNBUSDT", "long", "4.00")
    market.set_mark_price("binance", "BNBUSDT", "600.000")

    markets = await ccxt_binance.load_markets()
    positions = await ccxt_binance.fetch_positions()
    mark = await ccxt_binance.fetch_mark_price("BNB/USDT:USDT")
    ticker = await ccxt_binance.fetch_ticker("BNB/USDT:USDT")
    listen_key = await ccxt_binance.fapiPrivatePostListenKey()

    assert set(markets) == {"BTC/USDT:USDT", "ETH/USDT:USDT", "BNB/USDT:USDT", "SOL/USDT:USDT"}
    (pos,) = positions
    assert (pos["symbol"], pos["side"], pos["contracts"], pos["hedged"]) == ("BNB/USDT:USDT", "long", 4.0, False)
    assert Decimal(str(pos["unrealizedPnl"])) == Decimal("40") and pos["entryPrice"] == 590.0
    assert Decimal(str(mark["markPrice"])) == Decimal("600")
    assert Decimal(str(mark["indexPrice"])) == market.quote("binance", "BNBUSDT").index_price
    assert Decimal(str(ticker["last"])) == market.quote("binance", "BNBUSDT").last_price
    assert listen_key["listenKey"] == sim.binance_rest.listen_keys.key


async def test_ccxt_wrong_secret_is_rejected_with_the_venue_code(sim: Simulator, ccxt_bybit: Any,
                                                                 ccxt_binance: Any) -> None:
    await ccxt_bybit.load_markets()
    await ccxt_binance.load_markets()
    ccxt_bybit.secret = "0" * 36
    ccxt_binance.secret = "0" * 64
    with pytest.raises(ccxt_async.AuthenticationError, match="10004"):
        await ccxt_bybit.fetch_positions()
    with pytest.raises(ccxt_async.AuthenticationError, match="-1022"):
        await ccxt_binance.fetch_positions()
