"""Tick sizes from the venues' instrument lists, through the REST adapters, against the real simulator.

Bybit: GET /v5/market/instruments-info ``priceFilter.tickSize`` (paginated); Binance: GET
/fapi/v1/exchangeInfo ``filters[PRICE_FILTER].tickSize``. Cached, refreshed daily, and a failed
refresh keeps the cached sizes.
"""

from __future__ import annotations

from decimal import Decimal

import pytest

from agent.config.models import ExchangeConfig, RestSection
from agent.exchanges.base import ResolvedEndpoints
from agent.exchanges.binance.parse import parse_exchange_info
from agent.exchanges.binance.rest import BinanceRestApi
from agent.exchanges.bybit.parse import decode_envelope, parse_instruments
from agent.exchanges.bybit.rest import BybitRestApi
from agent.exchanges.rest_base import TICK_SIZES_MISSING_RETRY_SECONDS, TICK_SIZES_REFRESH_SECONDS
from agent.simulator import Simulator, SimulatorConfig
from agent.simulator.instruments import DEFAULT_BINANCE_SYMBOLS, DEFAULT_BYBIT_SYMBOLS, synthetic_symbols
from agent.transport.errors import RestError

INSTRUMENTS = "GET /v5/market/instruments-info"
EXCHANGE_INFO = "GET /fapi/v1/exchangeInfo"
MANY = synthetic_symbols(1200)  # more than one 1000-row page of instruments-info


@pytest.fixture
async def sim():
    simulator = Simulator(SimulatorConfig(seed=3, price_tick_interval_seconds=0, position_change_interval_seconds=0,
                                          bybit_symbols=DEFAULT_BYBIT_SYMBOLS + MANY))
    await simulator.start()
    yield simulator
    await simulator.stop()


@pytest.fixture
async def make_api(sim, metrics, clock):
    apis = []

    async def make(venue: str):
        eps = getattr(sim.endpoints, venue)
        ws = eps.ws_public_url if venue == "bybit" else eps.ws_market_url
        endpoints = ResolvedEndpoints(rest_url=eps.rest_url, ws_public_url=ws, ws_private_url=eps.ws_private_url)
        config = ExchangeConfig(venue=venue, rest=RestSection(request_timeout_seconds=2.0))
        cls = BybitRestApi if venue == "bybit" else BinanceRestApi
        api = cls(f"{venue}-t", config, endpoints, None, metrics, clock=clock)
        apis.append(api)
        await api.start()
        return api

    yield make
    for api in apis:
        await api.close()


def calls(metrics, venue: str, endpoint: str, outcome: str = "ok") -> float:
    return metrics.registry.get_sample_value(
        "feedagent_rest_requests_total", {"exchange": f"{venue}-t", "endpoint": endpoint, "outcome": outcome}) or 0.0


async def test_bybit_tick_sizes_come_from_every_page_of_instruments_info(make_api, metrics):
    api = await make_api("bybit")

    ticks = await api.tick_sizes(["BTCUSDT", "XRPUSDT", MANY[-1].symbol, "NOPEUSDT"])

    assert ticks == {"BTCUSDT": Decimal("0.10"), "XRPUSDT": Decimal("0.0001"), MANY[-1].symbol: Decimal("0.0001")}
    assert calls(metrics, "bybit", INSTRUMENTS) == 2  # 1204 instruments, 1000 per page
    assert len(await api.tick_sizes()) == len(DEFAULT_BYBIT_SYMBOLS) + len(MANY)


async def test_binance_tick_sizes_come_from_the_price_filter(make_api, metrics):
    api = await make_api("binance")

    ticks = await api.tick_sizes(["BTCUSDT", "SOLUSDT"])

    assert ticks == {"BTCUSDT": Decimal("0.10"), "SOLUSDT": Decimal("0.0100")}
    assert set(await api.tick_sizes()) == {s.symbol for s in DEFAULT_BINANCE_SYMBOLS}
    assert calls(metrics, "binance", EXCHANGE_INFO) == 1


@pytest.mark.parametrize("venue, endpoint", [("bybit", INSTRUMENTS), ("binance", EXCHANGE_INFO)])
async def test_cached_refreshed_daily_and_a_failed_refresh_keeps_the_cache(make_api, metrics, clock, sim,
                                                                           venue, endpoint):
    api = await make_api(venue)
    first = await api.tick_sizes(["BTCUSDT"])
    pages = calls(metrics, venue, endpoint)

    clock.advance(TICK_SIZES_REFRESH_SECONDS - 1)
    assert await api.tick_sizes(["BTCUSDT", "ETHUSDT"]) == {**first, "ETHUSDT": Decimal("0.01")}
    assert calls(metrics, venue, endpoint) == pages, "served from the cache within a day"

    clock.advance(1)
    sim.faults.inject(venue, "rest_error", status=503, endpoint=endpoint.split(" ")[1])
    assert await api.tick_sizes(["BTCUSDT"]) == first, "a failed refresh keeps what is cached"
    assert calls(metrics, venue, endpoint, "ok") == pages
    sim.faults.clear()

    clock.advance(TICK_SIZES_MISSING_RETRY_SECONDS)
    assert await api.tick_sizes(["BTCUSDT"]) == first
    assert calls(metrics, venue, endpoint) == 2 * pages, "refreshed once the day is over"


async def test_an_unknown_symbol_refetches_at_most_every_retry_period(make_api, metrics, clock):
    api = await make_api("binance")
    await api.tick_sizes(["BTCUSDT"])
    for _ in range(3):
        assert await api.tick_sizes(["NEWUSDT"]) == {}
    assert calls(metrics, "binance", EXCHANGE_INFO) == 1
    clock.advance(TICK_SIZES_MISSING_RETRY_SECONDS)
    await api.tick_sizes(["NEWUSDT"])
    assert calls(metrics, "binance", EXCHANGE_INFO) == 2


async def test_nothing_cached_and_the_venue_fails_raises(make_api, sim):
    api = await make_api("bybit")
    sim.faults.inject("bybit", "rest_error", status=503, endpoint="/v5/market/instruments-info")
    with pytest.raises(RestError):
        await api.tick_sizes(["BTCUSDT"])


def test_rows_without_a_positive_tick_size_are_malformed_and_skipped():
    bybit = decode_envelope(
        b'{"retCode":0,"retMsg":"OK","time":1,"result":{"category":"linear","nextPageCursor":"",'
        b'"list":[{"symbol":"BTCUSDT","priceFilter":{"tickSize":"0.10"}},{"symbol":"ETHUSDT","priceFilter":'
        b'{"tickSize":"0"}},{"symbol":"SOLUSDT","priceFilter":{"tickSize":""}},{"symbol":"XRPUSDT"},'
        b'{"symbol":"ADAUSDT","priceFilter":{"tickSize":"0.0001","minPrice":"0.0001","newField":1}}]}}')
    page = parse_instruments(bybit)
    assert page.tick_sizes == {"BTCUSDT": Decimal("0.10"), "ADAUSDT": Decimal("0.0001")}
    assert page.malformed == 3
    binance = parse_exchange_info(
        b'{"timezone":"UTC","symbols":[{"symbol":"BTCUSDT","filters":[{"filterType":"LOT_SIZE","stepSize":"0.001"},'
        b'{"filterType":"PRICE_FILTER","tickSize":"0.10","minPrice":"0.10"}]},{"symbol":"ETHUSDT","filters":[]},'
        b'{"symbol":"BNBUSDT","filters":[{"filterType":"PRICE_FILTER","tickSize":"-1"}]},"junk"]}')
    assert binance.tick_sizes == {"BTCUSDT": Decimal("0.10")}
    assert binance.malformed == 3
