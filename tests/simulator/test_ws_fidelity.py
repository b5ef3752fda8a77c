"""Fidelity of the WebSocket side: independent real clients (pybit, ccxt.pro) against the simulator.

How they are pointed at the simulator, without touching their protocol code:

* pybit builds its URL inside ``WebSocket.__init__`` from a ``wss://{SUBDOMAIN}.{DOMAIN}.{TLD}``
  template and connects at once, so neither ``domain``/``tld`` (TLS and a ``.com`` host are baked
  in) nor setting ``endpoint`` afterwards can reach a loopback ``ws://`` URL. The supported seam is
  ``_connect(url)``, which every (re)connect goes through: ``SimWebSocket`` overrides it to pass the
  simulator's URL instead of the template. Everything else (auth, ping, delta merging) is pybit's.
* ccxt.pro takes its URLs from ``exchange.urls['api']['ws']``. For Bybit the ``public.linear`` and
  ``private.contract`` entries are set to the simulator's URLs. For Binance USDⓈ-M the ``linear``
  entry is set to ``<binance root>/ws``, and ccxt's own routing (``get_ws_url``) inserts ``/market``
  for mark prices, so the client lands on the simulator's routed ``/market`` base as it would on
  ``fstream.binance.com``. REST URLs are pointed as in ``test_fidelity.py`` (markets load over REST).

pybit runs in its own threads (websocket-client); its blocking calls go through ``asyncio.to_thread``
and its callbacks append to lists that the test polls with a deadline. ccxt.pro is asyncio-native
and runs on the test's loop; every ``watch_*`` call is bounded by ``asyncio.wait_for``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from decimal import Decimal
from typing import Any

import ccxt.pro as ccxtpro
import pytest
from pybit.unified_trading import WebSocket

from agent.simulator import Simulator

from .conftest import FAST_WS, eventually

WAIT_SECONDS = 10.0


class SimWebSocket(WebSocket):
    """pybit's unified-trading WebSocket, connecting to ``url`` instead of its built-in host."""

    def __init__(self, url: str, **kwargs: Any) -> None:
        self._sim_url = url
        super().__init__(**kwargs)

    def _connect(self, url: str) -> None:
        super()._connect(self._sim_url)


@pytest.fixture
async def pybit_clients() -> AsyncIterator[Callable[..., Awaitable[SimWebSocket]]]:
    """Start pybit WebSockets off the loop (their constructor blocks until connected); exit them all."""
    started: list[SimWebSocket] = []

    async def start(url: str, **kwargs: Any) -> SimWebSocket:
        ws = await asyncio.wait_for(asyncio.to_thread(SimWebSocket, url, testnet=False, **kwargs), WAIT_SECONDS)
        started.append(ws)
        return ws

    yield start
    for ws in started:
        await asyncio.wait_for(asyncio.to_thread(ws.exit), WAIT_SECONDS)


async def test_pybit_public_tickers_merge_snapshot_and_deltas(start_sim, pybit_clients) -> None:
    sim = await start_sim(**FAST_WS)
    ws = await pybit_clients(sim.endpoints.bybit.ws_public_url, channel_type="linear")
    messages: list[dict[str, Any]] = []

    await asyncio.wait_for(asyncio.to_thread(ws.ticker_stream, "BTCUSDT", messages.append), WAIT_SECONDS)
    await eventually(lambda: len(messages) >= 5)
    sim.market.set_mark_price("bybit", "BTCUSDT", "66999.90", index_price="67001.00")
    await eventually(lambda: messages[-1]["data"]["markPrice"] == "66999.90")

    merged = messages[-1]["data"]
    # pybit hands every delta over merged into its cached snapshot, so no field goes missing.
    assert all(m["type"] == "snapshot" and m["topic"] == "tickers.BTCUSDT" for m in messages)
    assert merged["indexPrice"] == "67001.00" and merged["fundingRate"] == "0.0001"
    assert merged["symbol"] == "BTCUSDT" and "nextFundingTime" in merged and "bid1Size" in merged
    stats = sim.ws_stats()["bybit"]["public"]
    assert stats["opened"] == 1 and stats["subscriptions"] == ["tickers.BTCUSDT"]
    sent = [t for t in sim.ws_connections("bybit", "public")[0].sent_texts() if '"type":"delta"' in t]
    assert any('"markPrice"' not in t for t in sent)


async def test_pybit_private_authenticates_and_gets_position_messages(start_sim, pybit_clients) -> None:
    sim = await start_sim()
    ep = sim.endpoints.bybit
    ws = await pybit_clients(ep.ws_private_url, channel_type="private", api_key=ep.api_key,
                             api_secret=ep.api_secret)
    messages: list[dict[str, Any]] = []

    await asyncio.wait_for(asyncio.to_thread(ws.position_stream, messages.append), WAIT_SECONDS)
    await eventually(lambda: ws.auth and sim.ws_stats()["bybit"]["private"]["subscriptions"] == ["position"])
    sim.market.open_position("bybit", "XRPUSDT", "short", "120")
    sim.market.close_position("bybit", "XRPUSDT")
    await eventually(lambda: len(messages) == 2)

    rows = [m["data"][0] for m in messages]
    assert [m["topic"] for m in messages] == ["position", "position"]
    assert [(r["symbol"], r["side"], r["size"]) for r in rows] == [("XRPUSDT", "Sell", "120"), ("XRPUSDT", "", "0")]
    assert rows[0]["entryPrice"] == "0.5230" and rows[0]["positionIdx"] == 0


def _point_binance(exchange: Any, sim: Simulator) -> None:
    assert sim.endpoints is not None
    rest = sim.endpoints.binance.rest_url
    for name, version in (("fapiPublic", "v1"), ("fapiPublicV2", "v2"), ("fapiPublicV3", "v3"),
                          ("fapiPrivate", "v1"), ("fapiPrivateV2", "v2"), ("fapiPrivateV3", "v3")):
        exchange.urls["api"][name] = f"{rest}/fapi/{version}"
    exchange.urls["api"]["ws"]["linear"] = rest.replace("http://", "ws://", 1) + "/ws"
    exchange.has["fetchCurrencies"] = False


async def test_ccxt_pro_binanceusdm_watch_mark_price(start_sim) -> None:
    sim = await start_sim(**FAST_WS)
    exchange = ccxtpro.binanceusdm({"apiKey": sim.endpoints.binance.api_key,
                                    "secret": sim.endpoints.binance.api_secret})
    _point_binance(exchange, sim)
    try:
        first = await asyncio.wait_for(exchange.watch_mark_price("ETH/USDT:USDT"), WAIT_SECONDS)
        sim.market.set_mark_price("binance", "ETHUSDT", "3399.99", index_price="3401.00")
        moved = first
        while Decimal(str(moved["markPrice"])) != Decimal("3399.99"):
            moved = await asyncio.wait_for(exchange.watch_mark_price("ETH/USDT:USDT"), WAIT_SECONDS)
    finally:
        await exchange.close()

    assert first["symbol"] == "ETH/USDT:USDT" and Decimal(str(first["markPrice"])) == Decimal("3480.27")
    assert Decimal(str(moved["indexPrice"])) == Decimal("3401.00")
    stats = sim.ws_stats()["binance"]
    # ccxt routed itself to /market, subscribing live with its own request ids.
    assert stats["market"]["opened"] == 1 and stats["legacy"]["opened"] == 0
    (conn,) = sim.ws_connections("binance", "market")
    assert conn.path.startswith("/binance/market/ws/") and "ethusdt@markPrice@1s" in conn.subscriptions


async def test_ccxt_pro_bybit_watch_ticker(start_sim) -> None:
    sim = await start_sim(**FAST_WS)
    ep = sim.endpoints.bybit
    exchange = ccxtpro.bybit({"apiKey": ep.api_key, "secret": ep.api_secret,
                              "options": {"fetchMarkets": {"types": ["linear"]}}})
    exchange.urls["api"] = {"public": ep.rest_url, "private": ep.rest_url,
                            "ws": {"public": {"linear": ep.ws_public_url}, "private": {"contract": ep.ws_private_url}}}
    exchange.has["fetchCurrencies"] = False
    tickers = []
    try:
        tickers.append(await asyncio.wait_for(exchange.watch_ticker("SOL/USDT:USDT"), WAIT_SECONDS))
        for _ in range(3):
            tickers.append(await asyncio.wait_for(exchange.watch_ticker("SOL/USDT:USDT"), WAIT_SECONDS))
        sim.market.set_mark_price("bybit", "SOLUSDT", "149.990")
        while Decimal(str(tickers[-1]["markPrice"])) != Decimal("149.99"):
            tickers.append(await asyncio.wait_for(exchange.watch_ticker("SOL/USDT:USDT"), WAIT_SECONDS))
    finally:
        await exchange.close()

    # Deltas without markPrice must not blank ccxt's merged ticker.
    assert all(t["symbol"] == "SOL/USDT:USDT" and t["markPrice"] is not None for t in tickers)
    assert Decimal(str(tickers[0]["markPrice"])) == Decimal("152.34")
    assert Decimal(str(tickers[-1]["last"])) == Decimal("149.99")
    (conn,) = sim.ws_connections("bybit", "public")
    assert conn.subscriptions == ["tickers.SOLUSDT"] and conn.close_reason == "client"
