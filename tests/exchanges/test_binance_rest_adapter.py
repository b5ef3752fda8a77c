"""BinanceRestApi against a tiny fake Binance on loopback that checks signatures and timestamps."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from collections import Counter

import pytest
from aiohttp import web

from agent.config.models import ExchangeConfig, RestSection
from agent.exchanges.base import ApiCredentials, ResolvedEndpoints
from agent.exchanges.binance.rest import BinanceRestApi
from agent.transport.errors import (
    AuthError, Banned, ClockSkew, ExchangeUnavailable, ListenKeyNotFound, MalformedResponse, RateLimited,
)

NAME = "binance-test"
KEY = "BINANCEKEY0123456789"
SECRET = "BINANCESECRETabcdefghijklmnop"
RISK = "/fapi/v3/positionRisk"
PREMIUM = "/fapi/v1/premiumIndex"
LISTEN = "/fapi/v1/listenKey"


def _error(status: int, code: int, msg: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"code": code, "msg": msg}, status=status, headers=headers)


class FakeBinance:
    def __init__(self, clock, fixture_bytes) -> None:
        self.clock = clock
        self.offset_ms = 0.0  # how far the fake server's clock runs ahead of the local one
        self.fixture_bytes = fixture_bytes
        self.hits: Counter[str] = Counter()
        self.scripted: dict[str, list[web.Response]] = {RISK: [], PREMIUM: [], LISTEN: []}
        self.premium_queries: list[str] = []
        self.risk_queries: list[str] = []
        self.listen_key: str | None = None
        self.used_weight = 0

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/fapi/v1/time", self._time)
        app.router.add_get(RISK, self._risk)
        app.router.add_get(PREMIUM, self._premium)
        app.router.add_route("*", LISTEN, self._listen)
        return app

    def now_ms(self) -> int:
        return int(self.clock.wall_s() * 1000 + self.offset_ms)

    def _weight(self, cost: int) -> dict[str, str]:
        self.used_weight += cost
        return {"X-MBX-USED-WEIGHT-1M": str(self.used_weight)}

    async def _time(self, request: web.Request) -> web.Response:
        self.hits["time"] += 1
        return web.json_response({"serverTime": self.now_ms()}, headers=self._weight(1))

    async def _risk(self, request: web.Request) -> web.Response:
        self.hits["risk"] += 1
        raw = request.raw_path.partition("?")[2]
        self.risk_queries.append(raw)
        if self.scripted[RISK]:
            return self.scripted[RISK].pop(0)
        if request.headers.get("X-MBX-APIKEY") != KEY:
            return _error(401, -2015, "Invalid API-key, IP, or permissions for action.")
        unsigned, _, sig = raw.rpartition("&signature=")
        if "signature=" in unsigned or sig != hmac.new(SECRET.encode(), unsigned.encode(), hashlib.sha256).hexdigest():
            return _error(400, -1022, "Signature for this request is not valid.")
        params = dict(p.split("=", 1) for p in unsigned.split("&"))
        timestamp, window = int(params["timestamp"]), int(params["recvWindow"])
        if not (timestamp < self.now_ms() + 1000 and self.now_ms() - timestamp <= window):
            return _error(400, -1021, "Timestamp for this request is outside of the recvWindow.")
        return web.Response(body=self.fixture_bytes("binance_position_risk_v3_hedge.json"),
                            content_type="application/json", headers=self._weight(5))

    async def _premium(self, request: web.Request) -> web.Response:
        self.hits["premium"] += 1
        self.premium_queries.append(request.raw_path.partition("?")[2])
        if self.scripted[PREMIUM]:
            return self.scripted[PREMIUM].pop(0)
        if "symbol" in request.query:
            body = json.loads(self.fixture_bytes("binance_premium_index_array.json"))
            match = [row for row in body if row["symbol"] == request.query["symbol"]]
            return web.json_response(match[0], headers=self._weight(1))
        return web.Response(body=self.fixture_bytes("binance_premium_index_array.json"),
                            content_type="application/json", headers=self._weight(10))

    async def _listen(self, request: web.Request) -> web.Response:
        self.hits[f"listen {request.method}"] += 1
        assert request.headers.get("X-MBX-APIKEY") == KEY and not request.query_string  # key only, unsigned
        if self.scripted[LISTEN]:
            return self.scripted[LISTEN].pop(0)
        if request.method == "POST":
            self.listen_key = self.listen_key or "listenKeyFromFake" + "x" * 47
            return web.json_response({"listenKey": self.listen_key})
        if self.listen_key is None:
            return _error(400, -1125, "This listenKey does not exist.")
        if request.method == "PUT":
            return web.json_response({"listenKey": self.listen_key})
        self.listen_key = None
        return web.json_response({})


@pytest.fixture
def fake(clock, fixture_bytes) -> FakeBinance:
    return FakeBinance(clock, fixture_bytes)


@pytest.fixture
async def make_api(serve, fake, metrics, clock):
    apis: list[BinanceRestApi] = []

    async def make(credentials: ApiCredentials | None = ApiCredentials(KEY, SECRET)) -> BinanceRestApi:
        base = await serve(fake.app())
        config = ExchangeConfig(venue="binance", rest=RestSection(request_timeout_seconds=0.5))
        endpoints = ResolvedEndpoints(rest_url=base, ws_public_url="ws://127.0.0.1:1/market",
                                      ws_private_url="ws://127.0.0.1:1/private")
        api = BinanceRestApi(NAME, config, endpoints, credentials, metrics, clock=clock)
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


async def test_positions_are_signed_with_the_signature_last(make_api, fake, metrics):
    api = await make_api()

    positions = await api.fetch_positions()

    assert [(p.key, p.side, p.size) for p in positions] == [
        (("ETHUSDT", 1), "long", "1.200"), (("ETHUSDT", 2), "short", "0.400"), (("BNBUSDT", 2), None, "0")]
    [query] = fake.risk_queries
    assert query.startswith("recvWindow=5000&timestamp=") and query.rpartition("&")[2].startswith("signature=")
    assert api.status.last_positions_malformed_rows == 1
    assert metrics.registry.get_sample_value(
        "feedagent_messages_malformed_total", {"exchange": NAME, "source": "rest"}) == 1
    assert metrics.registry.get_sample_value(
        "feedagent_rest_rate_limit_remaining_ratio", {"exchange": NAME}) == pytest.approx(1 - 6 / 2400)


async def test_minus_1021_resyncs_the_clock_once_then_retries(make_api, fake, metrics):
    api = await make_api()
    fake.offset_ms = 10_000  # the server's clock moved 10 s ahead of what we measured at start

    positions = await api.fetch_positions()

    assert len(positions) == 3
    assert fake.hits["time"] == 2 and fake.hits["risk"] == 2
    assert api.status.clock_offset_ms == pytest.approx(10_000)
    assert requests(metrics, f"GET {RISK}", "clock_skew") == 1
    assert requests(metrics, f"GET {RISK}", "ok") == 1
    assert metrics.registry.get_sample_value("feedagent_clock_offset_seconds", {"exchange": NAME}) == pytest.approx(10)


async def test_minus_1021_after_the_retry_is_raised(make_api, fake):
    api = await make_api()
    skew = lambda: _error(400, -1021, "Timestamp for this request is outside of the recvWindow.")  # noqa: E731
    fake.scripted[RISK] += [skew(), skew()]

    with pytest.raises(ClockSkew):
        await api.fetch_positions()
    assert fake.hits["risk"] == 2


async def test_premium_index_one_symbol_many_and_all(make_api, fake):
    api = await make_api()

    one = await api.fetch_mark_prices(["ETHUSDT"])
    two = await api.fetch_mark_prices(["ETHUSDT", "BTCUSDT"])
    every = await api.fetch_mark_prices([])

    assert [p.symbol for p in one] == ["ETHUSDT"]
    assert [p.symbol for p in two] == ["BTCUSDT", "ETHUSDT"]
    assert [p.symbol for p in every] == ["BTCUSDT", "ETHUSDT", "BTCUSDT_241227"]
    assert fake.premium_queries == ["symbol=ETHUSDT", "", ""]


async def test_429_with_retry_after_holds_calls_for_that_long(make_api, fake, clock):
    api = await make_api()
    fake.scripted[PREMIUM].append(_error(429, -1003, "Too many requests.", {"Retry-After": "7"}))

    with pytest.raises(RateLimited) as caught:
        await api.fetch_mark_prices([])
    assert caught.value.retry_after_seconds == 7

    clock.advance(6.9)
    with pytest.raises(RateLimited):
        await api.fetch_positions()
    assert fake.hits["risk"] == 0 and fake.hits["premium"] == 1
    clock.advance(0.2)
    assert len(await api.fetch_mark_prices([])) == 3


async def test_429_without_retry_after_backs_off_and_grows(make_api, fake, clock):
    api = await make_api()
    too_many = lambda: _error(429, -1003, "Too many requests.")  # noqa: E731
    fake.scripted[PREMIUM] += [too_many(), too_many()]

    with pytest.raises(RateLimited) as first:
        await api.fetch_mark_prices([])
    clock.advance(first.value.retry_after_seconds + 0.01)
    with pytest.raises(RateLimited) as second:
        await api.fetch_mark_prices([])

    assert first.value.retry_after_seconds > 0
    assert second.value.retry_after_seconds == 2 * first.value.retry_after_seconds


async def test_429_with_the_minute_weight_spent_waits_for_the_next_minute(make_api, fake):
    api = await make_api()
    fake.scripted[PREMIUM].append(_error(429, -1003, "Too much request weight used.", {"X-MBX-USED-WEIGHT-1M": "2400"}))

    with pytest.raises(RateLimited) as caught:
        await api.fetch_mark_prices([])

    now_ms = fake.now_ms()
    assert caught.value.retry_after_seconds == pytest.approx(max(1.0, (60_000 - now_ms % 60_000) / 1000))


async def test_418_with_retry_after_is_a_ban_for_that_long(make_api, fake, clock):
    api = await make_api()
    fake.scripted[PREMIUM].append(_error(418, -1003, "Way too many requests; IP banned.", {"Retry-After": "300"}))

    with pytest.raises(Banned) as caught:
        await api.fetch_mark_prices([])
    assert caught.value.retry_after_seconds == 300
    assert api.status.backoff_until_unix_s == pytest.approx(clock.wall_s() + 300)

    clock.advance(299)
    with pytest.raises(Banned):
        await api.fetch_positions()
    assert fake.hits["risk"] == 0


async def test_418_without_retry_after_is_at_least_two_minutes_and_grows(make_api, fake, clock):
    api = await make_api()
    banned = lambda: _error(418, -1003, "Way too many requests; IP banned.")  # noqa: E731
    fake.scripted[PREMIUM] += [banned(), banned()]

    with pytest.raises(Banned) as first:
        await api.fetch_mark_prices([])
    clock.advance(first.value.retry_after_seconds + 0.01)
    with pytest.raises(Banned) as second:
        await api.fetch_mark_prices([])

    assert first.value.retry_after_seconds == 120
    assert second.value.retry_after_seconds == 240


async def test_418_honours_banned_until_in_the_message(make_api, fake):
    api = await make_api()
    until_ms = fake.now_ms() + 3_600_000
    fake.scripted[PREMIUM].append(_error(
        418, -1003, f"Way too much request weight used; IP banned until {until_ms}. Please use WebSocket Streams."))

    with pytest.raises(Banned) as caught:
        await api.fetch_mark_prices([])
    assert caught.value.retry_after_seconds == pytest.approx(3600)


@pytest.mark.parametrize("code", [-2015, -1022, -2014])
async def test_key_errors_are_auth_errors(make_api, fake, code):
    api = await make_api()
    fake.scripted[RISK].append(_error(401 if code == -2015 else 400, code, "refused"))

    with pytest.raises(AuthError) as caught:
        await api.fetch_positions()
    assert caught.value.code == code


async def test_wrong_secret_is_refused_by_the_fake_as_a_bad_signature(make_api, fake):
    api = await make_api(credentials=ApiCredentials(KEY, "not-the-secret"))
    with pytest.raises(AuthError) as caught:
        await api.fetch_positions()
    assert caught.value.code == -1022


async def test_without_credentials_positions_fail_but_prices_work(make_api, fake):
    api = await make_api(credentials=None)

    with pytest.raises(AuthError, match="credentials"):
        await api.fetch_positions()
    with pytest.raises(AuthError):
        await api.create_listen_key()
    assert fake.hits["risk"] == 0
    assert len(await api.fetch_mark_prices(["BTCUSDT"])) == 1


async def test_listen_key_lifecycle(make_api, fake, metrics):
    api = await make_api()

    key = await api.create_listen_key()
    assert await api.keepalive_listen_key(key) == key
    await api.close_listen_key(key)
    with pytest.raises(ListenKeyNotFound) as caught:
        await api.keepalive_listen_key(key)

    assert caught.value.code == -1125
    assert requests(metrics, f"PUT {LISTEN}", "listen_key_not_found") == 1
    assert fake.hits == Counter({"time": 1, "listen POST": 1, "listen PUT": 2, "listen DELETE": 1})


async def test_5xx_and_truncated_body(make_api, fake, metrics):
    api = await make_api()
    fake.scripted[PREMIUM].append(web.Response(status=503, text="Service Unavailable."))
    fake.scripted[PREMIUM].append(web.Response(body=b'[{"symbol":"BTCUSDT","markPrice":"6', content_type="application/json"))
    with pytest.raises(ExchangeUnavailable):
        await api.fetch_mark_prices([])
    with pytest.raises(MalformedResponse):
        await api.fetch_mark_prices([])
    assert requests(metrics, f"GET {PREMIUM}", "unavailable") == 1
    assert requests(metrics, f"GET {PREMIUM}", "malformed") == 1


async def test_a_silent_server_times_out_as_unavailable(serve, metrics, clock):
    stop = asyncio.Event()

    async def silent(request):
        await stop.wait()
        return web.json_response({})

    app = web.Application()
    app.router.add_get("/fapi/v1/time", silent)
    app.router.add_get(PREMIUM, silent)
    base = await serve(app)
    config = ExchangeConfig(venue="binance", rest=RestSection(request_timeout_seconds=0.2))
    api = BinanceRestApi(NAME, config, ResolvedEndpoints(base, "ws://x/market", "ws://x/private"), None, metrics,
                         clock=clock)
    await api.start()  # the clock sync times out; start still completes
    try:
        with pytest.raises(ExchangeUnavailable):
            await api.fetch_mark_prices([])
    finally:
        stop.set()
        await api.close()
    assert requests(metrics, f"GET {PREMIUM}", "unavailable") == 1
