"""The venue-neutral REST client against small aiohttp servers on loopback."""

from __future__ import annotations

import asyncio
import socket
import time

import msgspec
import pytest
from aiohttp import web

from agent.exchanges.base import RestApiStatus
from agent.transport.errors import ClockSkew, ExchangeUnavailable, MalformedResponse, RateLimited
from agent.transport.ratelimit import RateLimitReading, RateLimitRule
from agent.transport.rest import RestClient, RestResponse, ServerTimeEndpoint, retry_after_seconds, scrub

EXCHANGE = "test-ex"


class FakeVenue:
    """A canned venue: /time returns server time (local wall + offset), /data does what the test says."""

    def __init__(self, clock, offset_ms: float = 0.0) -> None:
        self.clock = clock
        self.offset_ms = offset_ms
        self.hits: dict[str, int] = {"/time": 0, "/data": 0}
        self.queries: list[str] = []
        self.responses: list[web.Response] = []  # consumed in order by /data; then 200 {"ok":true}
        self.stall = asyncio.Event()

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/time", self._time)
        app.router.add_get("/data", self._data)
        app.router.add_get("/stall", self._stall)
        return app

    async def _time(self, request: web.Request) -> web.Response:
        self.hits["/time"] += 1
        return web.json_response({"serverTime": int(self.clock.wall_s() * 1000 + self.offset_ms)})

    async def _data(self, request: web.Request) -> web.Response:
        self.hits["/data"] += 1
        self.queries.append(request.raw_path.partition("?")[2])
        return self.responses.pop(0) if self.responses else web.json_response({"ok": True})

    async def _stall(self, request: web.Request) -> web.Response:
        await self.stall.wait()
        return web.json_response({})


def decode(response: RestResponse):
    """The test venue's rules: 429 carries X-Wait seconds, 400 means clock skew."""
    if response.status == 429:
        raise RateLimited("slow down", status=429, retry_after_seconds=float(response.headers["X-Wait"]))
    if response.status == 400:
        raise ClockSkew("timestamp outside window", status=400)
    return msgspec.json.decode(response.body)


def read_test_headers(headers, server_now_ms) -> RateLimitReading | None:
    if "X-Left" not in headers:
        return None
    return RateLimitReading(float(headers["X-Left"]), float(headers["X-Reset"]))


def make_client(base_url, metrics, clock, *, timeout_seconds=2.0, rule=None, resync_interval_seconds=300.0):
    return RestClient(exchange=EXCHANGE, base_url=base_url, metrics=metrics, status=RestApiStatus(),
                      timeout_seconds=timeout_seconds,
                      server_time=ServerTimeEndpoint("/time", lambda r: msgspec.json.decode(r.body)["serverTime"]),
                      rate_limit=rule, resync_interval_seconds=resync_interval_seconds, clock=clock,
                      secrets=("APIKEY-not-for-logs",))


def sample(metrics, name, **labels):
    return metrics.registry.get_sample_value(name, {"exchange": EXCHANGE, **labels})


@pytest.fixture
async def venue_client(serve, metrics, clock):
    venue = FakeVenue(clock)
    client = make_client(await serve(venue.app()), metrics, clock)
    await client.start()
    yield venue, client
    venue.stall.set()
    await client.close()


async def test_ok_request_is_counted_with_its_duration(venue_client, metrics):
    venue, client = venue_client

    assert await client.request("GET", "/data", decode=decode, query="a=1") == {"ok": True}

    assert venue.queries == ["a=1"]
    assert sample(metrics, "feedagent_rest_requests_total", endpoint="GET /data", outcome="ok") == 1
    assert sample(metrics, "feedagent_rest_request_duration_seconds_count", endpoint="GET /data") == 1
    assert client.status.last_error is None


async def test_5xx_is_exchange_unavailable(venue_client, metrics):
    venue, client = venue_client
    venue.responses.append(web.Response(status=503, text="Service Unavailable."))

    with pytest.raises(ExchangeUnavailable):
        await client.request("GET", "/data", decode=decode)

    assert sample(metrics, "feedagent_rest_requests_total", endpoint="GET /data", outcome="unavailable") == 1


@pytest.mark.parametrize("body", [b'{"ok": tr', b'{"ok": true', b"\xff\xfe", b"<html>gateway</html>"])
async def test_undecodable_body_is_malformed(venue_client, metrics, body):
    venue, client = venue_client
    venue.responses.append(web.Response(status=200, body=body, content_type="application/json"))

    with pytest.raises(MalformedResponse):
        await client.request("GET", "/data", decode=decode)

    assert sample(metrics, "feedagent_rest_requests_total", endpoint="GET /data", outcome="malformed") == 1


async def test_timeout_is_unavailable_and_never_shows_the_signature(serve, metrics, clock):
    venue = FakeVenue(clock)
    client = make_client(await serve(venue.app()), metrics, clock, timeout_seconds=0.2)
    await client.start()
    try:
        with pytest.raises(ExchangeUnavailable) as caught:
            await client.request("GET", "/stall", decode=decode,
                                 sign=lambda ts: (f"timestamp={ts}&signature=SIG0123456789abcdef",
                                                  {"X-KEY": "APIKEY-not-for-logs"}))
    finally:
        venue.stall.set()
        await client.close()

    for text in (str(caught.value), client.status.last_error, repr(caught.value.__cause__)):
        assert "SIG0123456789abcdef" not in text and "APIKEY-not-for-logs" not in text
    assert sample(metrics, "feedagent_rest_requests_total", endpoint="GET /stall", outcome="unavailable") == 1
    for family in metrics.registry.collect():
        for s in family.samples:
            assert not any("SIG0123" in v or "APIKEY" in v for v in s.labels.values())


async def test_connection_refused_is_unavailable(metrics, clock):
    with socket.socket() as sock:  # a port that was free a moment ago and has no listener now
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    client = make_client(f"http://127.0.0.1:{port}", metrics, clock)
    await client.start()  # the clock sync fails; start still succeeds
    try:
        with pytest.raises(ExchangeUnavailable):
            await client.request("GET", "/data", decode=decode)
    finally:
        await client.close()
    assert client.server_clock.measured is False


async def test_rate_limited_holds_calls_until_the_deadline_without_sending(venue_client, metrics, clock):
    venue, client = venue_client
    venue.responses.append(web.json_response({}, status=429, headers={"X-Wait": "30"}))

    with pytest.raises(RateLimited):
        await client.request("GET", "/data", decode=decode)
    with pytest.raises(RateLimited) as held:
        await client.request("GET", "/data", decode=decode)

    assert venue.hits["/data"] == 1  # the held call sent nothing
    assert held.value.retry_after_seconds == pytest.approx(30)
    assert client.status.backoff_until_unix_s == pytest.approx(clock.wall_s() + 30)
    assert sample(metrics, "feedagent_rest_backoff_until_timestamp_seconds") == pytest.approx(clock.wall_s() + 30)
    assert sample(metrics, "feedagent_rest_requests_held_total", reason="rate_limited") == 1

    clock.advance(29.9)
    with pytest.raises(RateLimited):
        await client.request("GET", "/data", decode=decode)
    assert venue.hits["/data"] == 1

    clock.advance(0.2)
    assert await client.request("GET", "/data", decode=decode) == {"ok": True}
    assert venue.hits["/data"] == 2
    assert client.status.backoff_until_unix_s == 0
    assert sample(metrics, "feedagent_rest_backoff_until_timestamp_seconds") == 0


async def test_backoff_ignores_a_wall_clock_step(venue_client, clock):
    venue, client = venue_client
    venue.responses.append(web.json_response({}, status=429, headers={"X-Wait": "30"}))
    with pytest.raises(RateLimited):
        await client.request("GET", "/data", decode=decode)

    clock.step_wall(3600)  # NTP jumps an hour; the back-off is measured on the monotonic clock

    with pytest.raises(RateLimited):
        await client.request("GET", "/data", decode=decode)
    assert venue.hits["/data"] == 1


async def test_spent_budget_holds_calls_until_it_refills(serve, metrics, clock):
    venue = FakeVenue(clock)
    rule = RateLimitRule(read=read_test_headers, shared=True, max_wait_seconds=1.0)
    client = make_client(await serve(venue.app()), metrics, clock, rule=rule)
    await client.start()
    reset_ms = clock.wall_s() * 1000 + 30_000
    venue.responses.append(web.json_response({"ok": 1}, headers={"X-Left": "0", "X-Reset": str(reset_ms)}))
    try:
        assert await client.request("GET", "/data", decode=decode) == {"ok": 1}
        assert sample(metrics, "feedagent_rest_rate_limit_remaining_ratio") == 0

        with pytest.raises(RateLimited) as held:
            await client.request("GET", "/data", decode=decode)
        assert held.value.retry_after_seconds == pytest.approx(30)
        assert venue.hits["/data"] == 1
        assert sample(metrics, "feedagent_rest_requests_held_total", reason="budget") == 1

        clock.advance(31)
        assert await client.request("GET", "/data", decode=decode) == {"ok": True}
        assert venue.hits["/data"] == 2
    finally:
        await client.close()


async def test_budget_about_to_refill_is_waited_out(serve, metrics, clock):
    venue = FakeVenue(clock)
    rule = RateLimitRule(read=read_test_headers, shared=False, max_wait_seconds=1.0)
    client = make_client(await serve(venue.app()), metrics, clock, rule=rule)
    await client.start()
    venue.responses.append(web.json_response(
        {"ok": 1}, headers={"X-Left": "0", "X-Reset": str(clock.wall_s() * 1000 + 50)}))
    try:
        await client.request("GET", "/data", decode=decode)
        started = time.monotonic()
        assert await client.request("GET", "/data", decode=decode) == {"ok": True}
        assert time.monotonic() - started >= 0.04
        assert venue.hits["/data"] == 2
    finally:
        await client.close()


async def test_clock_offset_uses_server_time_and_feeds_signed_timestamps(serve, metrics, clock):
    venue = FakeVenue(clock, offset_ms=2500)
    client = make_client(await serve(venue.app()), metrics, clock)
    stamps: list[int] = []
    try:
        await client.start()
        await client.request("GET", "/data", decode=decode,
                             sign=lambda ts: (stamps.append(ts) or f"timestamp={ts}", {}))
    finally:
        await client.close()

    assert client.status.clock_offset_ms == pytest.approx(2500)
    assert sample(metrics, "feedagent_clock_offset_seconds") == pytest.approx(2.5)
    assert stamps == [int(clock.wall_s() * 1000 + 2500)]
    assert venue.queries == [f"timestamp={stamps[0]}"]


async def test_clock_skew_resyncs_once_then_retries_with_a_fresh_timestamp(venue_client, metrics):
    venue, client = venue_client
    venue.responses.append(web.json_response({}, status=400))
    venue.offset_ms = 4000  # the server moved since start()

    result = await client.request("GET", "/data", decode=decode, sign=lambda ts: (f"timestamp={ts}", {}))

    assert result == {"ok": True}
    assert venue.hits == {"/time": 2, "/data": 2}
    first, second = (int(q.split("=")[1]) for q in venue.queries)
    assert second - first == 4000
    assert sample(metrics, "feedagent_rest_requests_total", endpoint="GET /data", outcome="clock_skew") == 1
    assert sample(metrics, "feedagent_rest_requests_total", endpoint="GET /data", outcome="ok") == 1


async def test_clock_skew_twice_gives_up_after_one_retry(venue_client):
    venue, client = venue_client
    venue.responses += [web.json_response({}, status=400), web.json_response({}, status=400)]

    with pytest.raises(ClockSkew):
        await client.request("GET", "/data", decode=decode, sign=lambda ts: (f"timestamp={ts}", {}))
    assert venue.hits == {"/time": 2, "/data": 2}


async def test_unsigned_request_is_not_retried_on_clock_skew(venue_client):
    venue, client = venue_client
    venue.responses.append(web.json_response({}, status=400))

    with pytest.raises(ClockSkew):
        await client.request("GET", "/data", decode=decode)
    assert venue.hits == {"/time": 1, "/data": 1}


async def test_signed_request_resyncs_when_the_offset_is_old(serve, metrics, clock):
    venue = FakeVenue(clock)
    client = make_client(await serve(venue.app()), metrics, clock, resync_interval_seconds=60)
    try:
        await client.start()
        await client.request("GET", "/data", decode=decode, sign=lambda ts: ("", {}))
        assert venue.hits["/time"] == 1
        clock.advance(61)
        await client.request("GET", "/data", decode=decode)  # unsigned: no resync needed
        assert venue.hits["/time"] == 1
        await client.request("GET", "/data", decode=decode, sign=lambda ts: ("", {}))
        assert venue.hits["/time"] == 2
    finally:
        await client.close()


async def test_close_is_idempotent_and_safe_before_start(metrics, clock):
    client = make_client("http://127.0.0.1:9", metrics, clock)
    await client.close()
    await client.close()


def test_retry_after_header_and_scrub():
    assert retry_after_seconds({"Retry-After": "12"}) == 12
    assert retry_after_seconds({"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}) is None
    assert retry_after_seconds({"Retry-After": "nan"}) is None
    assert retry_after_seconds({}) is None
    assert scrub("error sign! origin_string[1658384314791KEY5000category=linear]", ["KEY"]) == (
        "error sign! origin_string[1658384314791***5000category=linear]")
    assert len(scrub("x" * 1000, [])) <= 201
