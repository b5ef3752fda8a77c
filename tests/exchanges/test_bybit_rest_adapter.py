"""BybitRestApi against a tiny fake Bybit on loopback that checks signatures like the real one."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections import Counter

import pytest
from aiohttp import web

from agent.config.models import ExchangeConfig, RestSection
from agent.exchanges.base import ApiCredentials, ResolvedEndpoints
from agent.exchanges.bybit.rest import BybitRestApi
from agent.transport.errors import (
    AuthError, Banned, ClockSkew, ExchangeUnavailable, MalformedResponse, RateLimited,
)

NAME = "bybit-test"
KEY = "BYBITKEY0123456789"
SECRET = "BYBITSECRETabcdefghijklmnop"
LIST = "/v5/position/list"


def _row(symbol: str, side: str = "Buy", size: str = "1", idx: int = 0) -> dict:
    return {"positionIdx": idx, "symbol": symbol, "side": side, "size": size, "avgPrice": "100",
            "markPrice": "101", "leverage": "10", "liqPrice": "", "unrealisedPnl": "1", "updatedTime": "1732100000000"}


def _envelope(result: dict, code: int = 0, msg: str = "OK", time_ms: int = 1732100000000) -> dict:
    return {"retCode": code, "retMsg": msg, "result": result, "retExtInfo": {}, "time": time_ms}


def _raw_params(request: web.Request) -> dict[str, str]:
    """Query parameters exactly as received, percent-encoding untouched."""
    raw = request.raw_path.partition("?")[2]
    return dict(part.split("=", 1) for part in raw.split("&") if part)


class FakeBybit:
    def __init__(self, clock, tickers_body: bytes) -> None:
        self.clock = clock
        self.tickers_body = tickers_body
        self.hits: Counter[str] = Counter()
        self.pages: dict[str, tuple[list[dict], str]] = {"": ([_row("BTCUSDT")], "")}
        self.scripted: list[web.Response] = []  # served by /v5/position/list before the pages
        self.list_queries: list[dict[str, str]] = []
        self.ticker_queries: list[str] = []

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/v5/market/time", self._time)
        app.router.add_get(LIST, self._positions)
        app.router.add_get("/v5/market/tickers", self._tickers)
        return app

    def now_ms(self) -> int:
        return int(self.clock.wall_s() * 1000)

    async def _time(self, request: web.Request) -> web.Response:
        self.hits["time"] += 1
        ms = self.now_ms()
        return web.json_response(_envelope({"timeSecond": str(ms // 1000), "timeNano": str(ms * 1_000_000)}, time_ms=ms))

    async def _positions(self, request: web.Request) -> web.Response:
        self.hits["list"] += 1
        raw = request.raw_path.partition("?")[2]
        h = request.headers
        expected = hmac.new(SECRET.encode(), f"{h['X-BAPI-TIMESTAMP']}{KEY}{h['X-BAPI-RECV-WINDOW']}{raw}".encode(),
                            hashlib.sha256).hexdigest()
        if h.get("X-BAPI-API-KEY") != KEY or h.get("X-BAPI-SIGN") != expected:
            return web.json_response(_envelope({}, 10004, "error sign!"))
        params = _raw_params(request)
        self.list_queries.append(params)
        if self.scripted:
            return self.scripted.pop(0)
        rows, cursor = self.pages[params.get("cursor", "")]
        return web.json_response(_envelope({"category": "linear", "list": rows, "nextPageCursor": cursor},
                                           time_ms=self.now_ms()),
                                 headers={"X-Bapi-Limit-Status": "45", "X-Bapi-Limit": "50",
                                          "X-Bapi-Limit-Reset-Timestamp": str(self.now_ms() + 1000)})

    async def _tickers(self, request: web.Request) -> web.Response:
        self.hits["tickers"] += 1
        self.ticker_queries.append(request.raw_path.partition("?")[2])
        return web.Response(body=self.tickers_body, content_type="application/json")


@pytest.fixture
def fake(clock, fixture_bytes) -> FakeBybit:
    return FakeBybit(clock, fixture_bytes("bybit_tickers_linear.json"))


@pytest.fixture
async def make_api(serve, fake, metrics, clock):
    apis: list[BybitRestApi] = []

    async def make(credentials: ApiCredentials | None = ApiCredentials(KEY, SECRET)) -> BybitRestApi:
        base = await serve(fake.app())
        config = ExchangeConfig(venue="bybit", rest=RestSection(request_timeout_seconds=2.0))
        endpoints = ResolvedEndpoints(rest_url=base, ws_public_url="ws://127.0.0.1:1/public",
                                      ws_private_url="ws://127.0.0.1:1/private")
        api = BybitRestApi(NAME, config, endpoints, credentials, metrics, clock=clock)
        apis.append(api)
        await api.start()
        return api

    yield make
    for api in apis:
        await api.close()


def requests(metrics, endpoint: str, outcome: str) -> float:
    value = metrics.registry.get_sample_value(
        "feedagent_rest_requests_total", {"exchange": NAME, "endpoint": endpoint, "outcome": outcome})
    return value or 0.0


async def test_positions_follow_next_page_cursor_across_three_pages(make_api, fake, metrics):
    fake.pages = {
        "": ([_row("BTCUSDT")], "cursor%3D2%2Cx"),
        "cursor%3D2%2Cx": ([_row("ETHUSDT", "Sell", "2")], "cursor%3D3"),
        "cursor%3D3": ([_row("SOLUSDT", "Buy", "3", idx=1), _row("SOLUSDT", "Sell", "4", idx=2)], ""),
    }
    api = await make_api()

    positions = await api.fetch_positions()

    assert [(p.symbol, p.position_idx, p.side, p.size) for p in positions] == [
        ("BTCUSDT", 0, "long", "1"), ("ETHUSDT", 0, "short", "2"),
        ("SOLUSDT", 1, "long", "3"), ("SOLUSDT", 2, "short", "4")]
    assert [q.get("cursor") for q in fake.list_queries] == [None, "cursor%3D2%2Cx", "cursor%3D3"]
    assert all(q["category"] == "linear" and q["settleCoin"] == "USDT" and q["limit"] == "200"
               for q in fake.list_queries)
    assert requests(metrics, f"GET {LIST}", "ok") == 3
    assert metrics.registry.get_sample_value(
        "feedagent_rest_rate_limit_remaining_ratio", {"exchange": NAME}) == pytest.approx(0.9)


async def test_a_cursor_loop_is_refused(make_api, fake):
    fake.pages = {"": ([_row("BTCUSDT")], "again"), "again": ([_row("ETHUSDT")], "again")}
    api = await make_api()

    with pytest.raises(MalformedResponse, match="repeats"):
        await api.fetch_positions()
    assert fake.hits["list"] == 2


async def test_ret_code_10006_holds_calls_until_the_reset_timestamp(make_api, fake, clock, metrics):
    api = await make_api()
    reset_ms = fake.now_ms() + 2_000
    fake.scripted.append(web.json_response(_envelope({}, 10006, "Too many visits"),
                                           headers={"X-Bapi-Limit-Reset-Timestamp": str(reset_ms)}))

    with pytest.raises(RateLimited) as first:
        await api.fetch_positions()
    assert first.value.retry_after_seconds == pytest.approx(2.0)
    assert api.status.backoff_until_unix_s == pytest.approx(reset_ms / 1000)

    with pytest.raises(RateLimited):
        await api.fetch_positions()
    with pytest.raises(RateLimited):
        await api.fetch_mark_prices(["BTCUSDT"])  # the gate covers every endpoint
    assert fake.hits["list"] == 1 and fake.hits["tickers"] == 0

    clock.advance(2.1)
    assert [p.symbol for p in await api.fetch_positions()] == ["BTCUSDT"]
    assert fake.hits["list"] == 2
    assert requests(metrics, f"GET {LIST}", "rate_limited") == 1


async def test_http_403_is_a_ban_of_at_least_ten_minutes(make_api, fake, clock):
    api = await make_api()
    fake.scripted.append(web.Response(status=403, text="access too frequent"))

    with pytest.raises(Banned) as caught:
        await api.fetch_positions()
    assert caught.value.retry_after_seconds >= 600

    clock.advance(599)
    with pytest.raises(Banned):
        await api.fetch_mark_prices([])
    assert fake.hits["list"] == 1 and fake.hits["tickers"] == 0

    clock.advance(2)
    assert len(await api.fetch_mark_prices([])) == 3


async def test_http_429_is_a_short_rate_limit(make_api, fake):
    api = await make_api()
    fake.scripted.append(web.Response(status=429, text="Too Many Requests"))

    with pytest.raises(RateLimited) as caught:
        await api.fetch_positions()
    assert 0 < caught.value.retry_after_seconds <= 10


async def test_ret_code_10002_resyncs_the_clock_and_retries_once(make_api, fake, metrics):
    api = await make_api()
    fake.scripted.append(web.json_response(_envelope({}, 10002, "invalid request, please check your server timestamp")))

    assert [p.symbol for p in await api.fetch_positions()] == ["BTCUSDT"]
    assert fake.hits["time"] == 2 and fake.hits["list"] == 2
    assert requests(metrics, f"GET {LIST}", "clock_skew") == 1


async def test_ret_code_10002_twice_raises_clock_skew(make_api, fake):
    api = await make_api()
    fake.scripted += [web.json_response(_envelope({}, 10002, "ts")), web.json_response(_envelope({}, 10002, "ts"))]

    with pytest.raises(ClockSkew):
        await api.fetch_positions()
    assert fake.hits["list"] == 2


@pytest.mark.parametrize("code", [10003, 10004, 10005, 10007, 10010, 33004])
async def test_auth_codes_raise_auth_error_without_the_key(make_api, fake, code):
    api = await make_api()
    fake.scripted.append(web.json_response(_envelope(
        {}, code, f"error sign! origin_string[1732100000000{KEY}5000category=linear&limit=200]")))

    with pytest.raises(AuthError) as caught:
        await api.fetch_positions()
    assert caught.value.code == code
    assert KEY not in str(caught.value) and KEY not in (api.status.last_error or "")


async def test_without_credentials_positions_fail_but_prices_work(make_api, fake):
    api = await make_api(credentials=None)

    with pytest.raises(AuthError, match="credentials"):
        await api.fetch_positions()
    assert fake.hits["list"] == 0
    assert [p.symbol for p in await api.fetch_mark_prices(["BTCUSDT", "ETHUSDT"])] == ["BTCUSDT", "ETHUSDT"]


async def test_one_symbol_uses_the_symbol_parameter(make_api, fake):
    api = await make_api()
    await api.fetch_mark_prices(["ETHUSDT"])
    await api.fetch_mark_prices([])
    assert fake.ticker_queries == ["category=linear&symbol=ETHUSDT", "category=linear"]


async def test_malformed_rows_are_counted_and_reported(make_api, fake, metrics, fixture_bytes):
    api = await make_api()
    body = json.loads(fixture_bytes("bybit_position_list_oneway.json"))
    fake.scripted.append(web.json_response(body))

    positions = await api.fetch_positions()
    prices = await api.fetch_mark_prices([])

    assert len(positions) == 3 and len(prices) == 3
    assert api.status.last_positions_malformed_rows == 1
    assert metrics.registry.get_sample_value(
        "feedagent_messages_malformed_total", {"exchange": NAME, "source": "rest"}) == 2


async def test_truncated_json_and_5xx(make_api, fake, metrics):
    api = await make_api()
    fake.scripted.append(web.Response(body=b'{"retCode":0,"result":{"list":[{"symbol":', content_type="application/json"))
    fake.scripted.append(web.Response(status=502, text="Bad Gateway"))

    with pytest.raises(MalformedResponse):
        await api.fetch_positions()
    with pytest.raises(ExchangeUnavailable):
        await api.fetch_positions()
    assert requests(metrics, f"GET {LIST}", "malformed") == 1
    assert requests(metrics, f"GET {LIST}", "unavailable") == 1
