"""Bad values are refused at the parse edge, for both venues, REST and WebSocket alike.

A price of ``1e999999`` is a finite Decimal, yet ``(mark - entry) * size`` overflows downstream; NaN and
Infinity poison every comparison; a negative size breaks the event contract; a time of ``1`` or of the
year 5000 is garbage; JSON nested thousands deep raises ``RecursionError`` in any decoder. Each one makes
its row or frame malformed (counted, skipped), never an exception that ends a task.
"""

from __future__ import annotations

import json
from decimal import Decimal

import msgspec
import pytest
from aiohttp import web

from agent.config.models import ExchangeConfig, RestSection
from agent.exchanges.base import ResolvedEndpoints
from agent.exchanges.binance import parse as binance_parse
from agent.exchanges.binance.rest import BinanceRestApi
from agent.exchanges.binance.ws import BinanceMarketProtocol, BinancePrivateProtocol
from agent.exchanges.binance.ws_parse import AccountPositionCache, MalformedFrame as BinanceMalformedFrame, MarkPriceCache
from agent.exchanges.bybit import parse as bybit_parse
from agent.exchanges.bybit.rest import BybitRestApi
from agent.exchanges.bybit.ws import classify_frame
from agent.exchanges.bybit.ws_parse import (
    BybitPositionReader, MalformedFrame as BybitMalformedFrame, TickerCache,
)
from agent.exchanges.parsing import (
    MAX_ABS_DECIMAL, MAX_EPOCH_MS, MIN_EPOCH_MS, MalformedRow, optional_epoch_ms, to_decimal,
)
from agent.transport.errors import MalformedResponse
from agent.transport.ws_spec import Data

NOW_MS = 1_732_100_000_000
DEEP = 5_000  # far past any decoder's nesting limit (about a thousand)

# One case per way a number can be bad; the id names it.
BAD_NUMBERS = {
    "overflow": "1e999999",
    "nan": "NaN",
    "snan": "sNaN",
    "infinity": "Infinity",
    "minus_infinity": "-Infinity",
    "too_large": "1e15",
    "tiny_exponent": "1e-999999",
    "zero_with_huge_exponent": "0e999999",
    "too_long": "1" + "0" * 70,
    "underscore": "1_000",
    "non_ascii_digits": "\u0661\u0662",
}
BAD_TIMES = {"one": 1, "seconds_not_ms": 1_732_100_000, "year_5000": 95_617_584_000_000, "negative": -5,
             "huge": 10**17, "junk": "12ab"}
DEEP_LIST = "[" * DEEP + "]" * DEEP


def deep_object(key: str) -> str:
    """A JSON value nested ``DEEP`` levels: ``{"key":{"key":…1…}}``."""
    return f'{{"{key}":' * DEEP + "1" + "}" * DEEP


# -- the shared helpers: bounds in one place -------------------------------------------------------


@pytest.mark.parametrize("text", BAD_NUMBERS.values(), ids=BAD_NUMBERS.keys())
def test_to_decimal_refuses_every_bad_number(text):
    with pytest.raises(MalformedRow):
        to_decimal(text, "markPrice")


@pytest.mark.parametrize("text", ["0", "-0", "43020.1", "-4.8", "+1.5", "0.00000000", "1E-8", ".5", "5.",
                                  "999999999999999.9", "0.000000000000000000000000000001"])
def test_to_decimal_keeps_real_numbers(text):
    assert to_decimal(text, "x") == Decimal(text)
    assert abs(to_decimal(text, "x")) < MAX_ABS_DECIMAL


@pytest.mark.parametrize("value", BAD_TIMES.values(), ids=BAD_TIMES.keys())
def test_optional_epoch_ms_refuses_implausible_times(value):
    with pytest.raises(MalformedRow):
        optional_epoch_ms(value, "E")


def test_optional_epoch_ms_keeps_unknown_and_plausible_times():
    assert [optional_epoch_ms(v, "E") for v in (None, "", 0, "0")] == [None, None, None, None]
    assert optional_epoch_ms(NOW_MS, "E") == NOW_MS and optional_epoch_ms(str(NOW_MS), "E") == NOW_MS
    assert optional_epoch_ms(MIN_EPOCH_MS, "E") == MIN_EPOCH_MS
    with pytest.raises(MalformedRow):
        optional_epoch_ms(MAX_EPOCH_MS, "E")
    with pytest.raises(MalformedRow):
        optional_epoch_ms(True, "E")


# -- Bybit REST ------------------------------------------------------------------------------------


def bybit_envelope(result: dict) -> bytes:
    return json.dumps({"retCode": 0, "retMsg": "OK", "result": result, "time": NOW_MS}).encode()


def bybit_ticker_row(symbol: str, mark: str = "43020.1") -> dict:
    return {"symbol": symbol, "markPrice": mark, "indexPrice": "43018.9", "fundingRate": "0.0001"}


def bybit_position_row(symbol: str, **fields) -> dict:
    row = {"symbol": symbol, "positionIdx": 0, "side": "Buy", "size": "0.5", "avgPrice": "43010.5",
           "markPrice": "43020.1", "unrealisedPnl": "4.8", "leverage": "10", "liqPrice": "39000",
           "updatedTime": str(NOW_MS)}
    row.update(fields)
    return row


@pytest.mark.parametrize("text", BAD_NUMBERS.values(), ids=BAD_NUMBERS.keys())
def test_bybit_rest_ticker_with_a_bad_mark_price_is_skipped(text):
    body = bybit_envelope({"category": "linear", "list": [bybit_ticker_row("BTCUSDT"),
                                                           bybit_ticker_row("ETHUSDT", text)]})
    result = bybit_parse.parse_tickers(bybit_parse.decode_envelope(body))
    assert [p.symbol for p in result.prices] == ["BTCUSDT"] and result.malformed == 1


@pytest.mark.parametrize("field, value", [
    ("size", "1e999999"), ("size", "NaN"), ("size", "Infinity"), ("size", "-0.5"), ("avgPrice", "1e999999"),
    ("markPrice", "NaN"), ("unrealisedPnl", "-Infinity"), ("leverage", "1e999999"), ("liqPrice", "sNaN"),
    ("updatedTime", "1"), ("updatedTime", str(10**17)),
], ids=lambda v: str(v)[:12])
def test_bybit_rest_position_with_a_bad_value_is_skipped(field, value):
    body = bybit_envelope({"category": "linear", "nextPageCursor": "",
                           "list": [bybit_position_row("BTCUSDT"), bybit_position_row("ETHUSDT", **{field: value})]})
    page = bybit_parse.parse_position_list(bybit_parse.decode_envelope(body))
    assert [p.symbol for p in page.positions] == ["BTCUSDT"] and page.malformed == 1


def test_bybit_rest_implausible_response_time_makes_its_rows_malformed():
    body = json.dumps({"retCode": 0, "retMsg": "OK", "time": 1,
                       "result": {"category": "linear", "list": [bybit_ticker_row("BTCUSDT")]}}).encode()
    result = bybit_parse.parse_tickers(bybit_parse.decode_envelope(body))
    assert result.prices == [] and result.malformed == 1


def test_bybit_rest_deep_nesting_is_a_decode_error_not_a_recursion_error():
    with pytest.raises(msgspec.DecodeError):
        bybit_parse.decode_envelope(DEEP_LIST.encode())
    body = bybit_envelope({"category": "linear", "list": []}).replace(b'"list": []', b'"list": ' + DEEP_LIST.encode())
    with pytest.raises(msgspec.DecodeError):
        bybit_parse.parse_tickers(bybit_parse.decode_envelope(body))


# -- Bybit WebSocket -------------------------------------------------------------------------------


def bybit_ticker_frame(mark: str, *, ts: object = NOW_MS, kind: str = "snapshot") -> str:
    return json.dumps({"topic": "tickers.BTCUSDT", "type": kind, "ts": ts, "cs": 7,
                       "data": {"symbol": "BTCUSDT", "markPrice": mark, "indexPrice": "43018.9"}})


@pytest.mark.parametrize("text", BAD_NUMBERS.values(), ids=BAD_NUMBERS.keys())
def test_bybit_ws_ticker_with_a_bad_mark_price_is_counted_and_changes_nothing(text):
    cache = TickerCache()
    cache.read("tickers.BTCUSDT", classify_frame(bybit_ticker_frame("43020.1")).payload, NOW_MS)
    bad = classify_frame(bybit_ticker_frame(text, ts=NOW_MS + 1, kind="delta"))
    assert cache.read(bad.topic, bad.payload, NOW_MS) == ([], 1)
    assert cache.mark_price("BTCUSDT") == "43020.1"


@pytest.mark.parametrize("ts", BAD_TIMES.values(), ids=BAD_TIMES.keys())
def test_bybit_ws_ticker_with_an_absurd_time_is_a_malformed_frame(ts):
    with pytest.raises(BybitMalformedFrame):
        classify_frame(bybit_ticker_frame("43020.1", ts=ts))


@pytest.mark.parametrize("field, value", [
    ("size", "1e999999"), ("size", "NaN"), ("size", "Infinity"), ("size", "-1"), ("entryPrice", "1e999999"),
    ("unrealisedPnl", "NaN"), ("updatedTime", "1"), ("updatedTime", str(10**17)),
], ids=lambda v: str(v)[:12])
def test_bybit_ws_position_row_with_a_bad_value_is_counted_and_skipped(field, value):
    def ws_row(symbol: str, **fields) -> dict:  # the stream names the entry ``entryPrice`` (REST: ``avgPrice``)
        row = {k: v for k, v in bybit_position_row(symbol).items() if k != "avgPrice"}
        return {**row, "entryPrice": "43010.5", "category": "linear", **fields}

    good, bad = ws_row("BTCUSDT"), ws_row("ETHUSDT", **{field: value})
    frame = classify_frame(json.dumps({"topic": "position", "creationTime": NOW_MS, "data": [good, bad]}))
    rows, malformed = BybitPositionReader().read(frame.topic, frame.payload, NOW_MS)
    assert [r.symbol for r in rows] == ["BTCUSDT"] and malformed == 1


def test_bybit_ws_position_frame_with_an_absurd_creation_time_is_malformed():
    with pytest.raises(BybitMalformedFrame):
        classify_frame(json.dumps({"topic": "position", "creationTime": 10**17, "data": []}))


@pytest.mark.parametrize("text", [DEEP_LIST, deep_object("topic"),
                                  '{"topic":"tickers.BTCUSDT","type":"snapshot","ts":%d,"data":%s}'
                                  % (NOW_MS, deep_object("symbol"))],
                         ids=["list", "object", "inside_data"])
def test_bybit_ws_deep_frame_is_malformed_not_a_recursion_error(text):
    with pytest.raises(BybitMalformedFrame):
        classify_frame(text)


# -- Binance REST ----------------------------------------------------------------------------------


def binance_premium_row(symbol: str, mark: str = "43020.1", time: object = NOW_MS) -> dict:
    return {"symbol": symbol, "markPrice": mark, "indexPrice": "43018.9", "lastFundingRate": "0.0001",
            "time": time}


def binance_risk_row(symbol: str, **fields) -> dict:
    row = {"symbol": symbol, "positionSide": "BOTH", "positionAmt": "0.5", "entryPrice": "43010.5",
           "markPrice": "43020.1", "unRealizedProfit": "4.8", "liquidationPrice": "39000", "updateTime": NOW_MS}
    row.update(fields)
    return row


@pytest.mark.parametrize("text", BAD_NUMBERS.values(), ids=BAD_NUMBERS.keys())
def test_binance_rest_premium_index_with_a_bad_mark_price_is_skipped(text):
    body = json.dumps([binance_premium_row("BTCUSDT"), binance_premium_row("ETHUSDT", text)]).encode()
    result = binance_parse.parse_premium_index(body)
    assert [p.symbol for p in result.prices] == ["BTCUSDT"] and result.malformed == 1


@pytest.mark.parametrize("time", [t for t in BAD_TIMES.values() if isinstance(t, int)],
                         ids=[k for k, t in BAD_TIMES.items() if isinstance(t, int)])
def test_binance_rest_premium_index_with_an_absurd_time_is_skipped(time):
    body = json.dumps([binance_premium_row("BTCUSDT"), binance_premium_row("ETHUSDT", time=time)]).encode()
    result = binance_parse.parse_premium_index(body)
    assert [p.symbol for p in result.prices] == ["BTCUSDT"] and result.malformed == 1


@pytest.mark.parametrize("fields", [
    {"positionAmt": "1e999999"}, {"positionAmt": "NaN"}, {"positionAmt": "-Infinity"},
    {"positionSide": "LONG", "positionAmt": "-0.5"}, {"positionSide": "SHORT", "positionAmt": "0.5"},
    {"entryPrice": "1e999999"}, {"unRealizedProfit": "NaN"}, {"liquidationPrice": "Infinity"},
    {"updateTime": 1}, {"updateTime": 10**17},
], ids=lambda f: "-".join(f"{k}={v}"[:24] for k, v in f.items()))
def test_binance_rest_position_with_a_bad_value_is_skipped(fields):
    body = json.dumps([binance_risk_row("BTCUSDT"), binance_risk_row("ETHUSDT", **fields)]).encode()
    result = binance_parse.parse_position_risk(body)
    assert [p.symbol for p in result.positions] == ["BTCUSDT"] and result.malformed == 1


def test_binance_rest_hedge_amounts_with_their_own_sign_are_kept():
    body = json.dumps([binance_risk_row("ETHUSDT", positionSide="LONG", positionAmt="1.2"),
                       binance_risk_row("ETHUSDT", positionSide="SHORT", positionAmt="-0.4")]).encode()
    result = binance_parse.parse_position_risk(body)
    assert [(p.side, p.size) for p in result.positions] == [("long", "1.2"), ("short", "0.4")]
    assert result.malformed == 0


@pytest.mark.parametrize("body", [DEEP_LIST, deep_object("symbol"), "[%s]" % deep_object("symbol")],
                         ids=["list", "object", "row"])
def test_binance_rest_deep_nesting_is_a_decode_error_not_a_recursion_error(body):
    with pytest.raises(msgspec.DecodeError):
        binance_parse.parse_premium_index(body.encode())
    with pytest.raises(msgspec.DecodeError):
        binance_parse.parse_position_risk(body.encode())


# -- Binance WebSocket -----------------------------------------------------------------------------


def binance_mark_frame(mark: str, *, E: object = NOW_MS) -> str:  # noqa: N803
    return json.dumps({"stream": "btcusdt@markPrice@1s", "data": {
        "e": "markPriceUpdate", "E": E, "s": "BTCUSDT", "p": mark, "i": "43018.9", "r": "0.0001", "T": NOW_MS}})


@pytest.mark.parametrize("text", BAD_NUMBERS.values(), ids=BAD_NUMBERS.keys())
def test_binance_ws_mark_price_with_a_bad_value_is_counted(text):
    frame = BinanceMarketProtocol("ws://x/market").classify(binance_mark_frame(text))
    assert isinstance(frame, Data)
    assert MarkPriceCache().read(frame.topic, frame.payload, NOW_MS) == ([], 1)


@pytest.mark.parametrize("E", BAD_TIMES.values(), ids=BAD_TIMES.keys())
def test_binance_ws_mark_price_with_an_absurd_time_is_counted(E):  # noqa: N803
    frame = BinanceMarketProtocol("ws://x/market").classify(binance_mark_frame("43020.1", E=E))
    assert isinstance(frame, Data)
    assert MarkPriceCache().read(frame.topic, frame.payload, NOW_MS) == ([], 1)


def binance_account_update(rows: list[dict], *, E: object = NOW_MS) -> str:  # noqa: N803
    return json.dumps({"e": "ACCOUNT_UPDATE", "E": E, "T": E, "a": {"m": "ORDER", "B": [], "P": rows}})


def binance_account_row(symbol: str, **fields) -> dict:
    row = {"s": symbol, "pa": "0.5", "ep": "43010.5", "bep": "43010.5", "cr": "0", "up": "4.8", "mt": "cross",
           "iw": "0", "ps": "BOTH"}
    row.update(fields)
    return row


def private_protocol() -> BinancePrivateProtocol:
    return BinancePrivateProtocol("ws://x/private", listen_keys=None)  # type: ignore[arg-type]  # classify only


@pytest.mark.parametrize("fields", [
    {"pa": "1e999999"}, {"pa": "NaN"}, {"pa": "Infinity"}, {"ps": "LONG", "pa": "-1"}, {"ps": "SHORT", "pa": "1"},
    {"ep": "1e999999"}, {"up": "sNaN"},
], ids=lambda f: "-".join(f"{k}={v}" for k, v in f.items()))
def test_binance_ws_account_update_row_with_a_bad_value_is_counted_and_skipped(fields):
    frame = private_protocol().classify(binance_account_update([binance_account_row("BTCUSDT"),
                                                                binance_account_row("ETHUSDT", **fields)]))
    rows, malformed = AccountPositionCache().read(frame.topic, frame.payload, NOW_MS)
    assert [r.symbol for r in rows] == ["BTCUSDT"] and malformed == 1


@pytest.mark.parametrize("E", BAD_TIMES.values(), ids=BAD_TIMES.keys())
def test_binance_ws_account_update_with_an_absurd_time_is_counted(E):  # noqa: N803
    frame = private_protocol().classify(binance_account_update([binance_account_row("BTCUSDT")], E=E))
    cache = AccountPositionCache()
    assert cache.read(frame.topic, frame.payload, NOW_MS) == ([], 1)
    assert cache.positions() == []


@pytest.mark.parametrize("text", [DEEP_LIST, deep_object("stream"),
                                  '{"stream":"btcusdt@markPrice@1s","data":%s}' % deep_object("e")],
                         ids=["list", "object", "inside_data"])
def test_binance_ws_deep_frame_is_malformed_not_a_recursion_error(text):
    with pytest.raises(BinanceMalformedFrame):
        BinanceMarketProtocol("ws://x/market").classify(text)
    with pytest.raises(BinanceMalformedFrame):
        private_protocol().classify(text)


# -- REST adapters over loopback: counted, never raised past the adapter -----------------------------


def _venue_app(venue: str, prices_body: bytes) -> web.Application:
    async def server_time(request: web.Request) -> web.Response:
        if venue == "bybit":
            return web.json_response({"retCode": 0, "retMsg": "OK", "time": NOW_MS,
                                      "result": {"timeSecond": str(NOW_MS // 1000), "timeNano": str(NOW_MS * 10**6)}})
        return web.json_response({"serverTime": NOW_MS})

    async def prices(request: web.Request) -> web.Response:
        return web.Response(body=prices_body, content_type="application/json")

    app = web.Application()
    if venue == "bybit":
        app.router.add_get("/v5/market/time", server_time)
        app.router.add_get("/v5/market/tickers", prices)
    else:
        app.router.add_get("/fapi/v1/time", server_time)
        app.router.add_get("/fapi/v1/premiumIndex", prices)
    return app


async def _api(venue: str, base: str, metrics):
    config = ExchangeConfig(venue=venue, rest=RestSection(request_timeout_seconds=2.0))
    endpoints = ResolvedEndpoints(rest_url=base, ws_public_url="ws://127.0.0.1:1/public",
                                  ws_private_url="ws://127.0.0.1:1/private")
    cls = BybitRestApi if venue == "bybit" else BinanceRestApi
    api = cls(f"{venue}-bad", config, endpoints, None, metrics)
    await api.start()
    return api


def _prices_body(venue: str, rows: str) -> bytes:
    if venue == "bybit":
        return ('{"retCode":0,"retMsg":"OK","time":%d,"result":{"category":"linear","list":%s}}'
                % (NOW_MS, rows)).encode()
    return rows.encode()


def _row(venue: str, symbol: str, mark: str) -> dict:
    return bybit_ticker_row(symbol, mark) if venue == "bybit" else binance_premium_row(symbol, mark)


@pytest.mark.parametrize("venue", ["bybit", "binance"])
async def test_rest_adapter_counts_a_bad_row_and_keeps_the_rest(venue, serve, metrics):
    rows = json.dumps([_row(venue, "BTCUSDT", "43020.1"), _row(venue, "ETHUSDT", "1e999999")])
    api = await _api(venue, await serve(_venue_app(venue, _prices_body(venue, rows))), metrics)
    try:
        prices = await api.fetch_mark_prices(["BTCUSDT", "ETHUSDT"])
    finally:
        await api.close()
    assert [p.symbol for p in prices] == ["BTCUSDT"]
    assert metrics.registry.get_sample_value("feedagent_messages_malformed_total",
                                             {"exchange": f"{venue}-bad", "source": "rest"}) == 1


@pytest.mark.parametrize("venue", ["bybit", "binance"])
async def test_rest_adapter_deep_nesting_is_a_malformed_response(venue, serve, metrics):
    api = await _api(venue, await serve(_venue_app(venue, _prices_body(venue, DEEP_LIST))), metrics)
    try:
        with pytest.raises(MalformedResponse):
            await api.fetch_mark_prices(["BTCUSDT"])
    finally:
        await api.close()
    endpoint = "GET /v5/market/tickers" if venue == "bybit" else "GET /fapi/v1/premiumIndex"
    assert metrics.registry.get_sample_value("feedagent_rest_requests_total", {
        "exchange": f"{venue}-bad", "endpoint": endpoint, "outcome": "malformed"}) == 1
