"""Pure logic of the simulator: signature helpers, rate limiters, the fault registry."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from agent.simulator.auth import (
    AuthFailure,
    binance_sign,
    binance_timestamp_ok,
    bybit_sign,
    bybit_timestamp_ok,
    split_binance_signature,
    verify_binance,
    verify_bybit,
)
from agent.simulator.faults import FaultError, FaultRegistry
from agent.simulator.ratelimit import IpLimiter, RollingWindowLimiter, WeightLimiter

# -- signatures: the venues' documented examples -------------------------------------------------


def test_binance_documented_example() -> None:
    secret = "NhqPtmdSJYdKjVHjA7PZj4Mge3R5YNiP1e3UZjInClVN65XAbvqqM6A7H5fATj0j"
    total = ("symbol=LTCBTC&side=BUY&type=LIMIT&timeInForce=GTC&quantity=1&price=0.1"
             "&recvWindow=5000&timestamp=1499827319559")
    assert binance_sign(secret, total) == "c8db56825ae71d6d79447849e617115f4a920fa2acdcab2b053c4b2838bd6b71"


def test_bybit_documented_string_to_sign() -> None:
    # The docs give the string and a digest but not the secret behind it, so check the string.
    documented = "1658384314791XXXXXXXXXX5000category=option&symbol=BTC-29JUL22-25000-C"
    expected = hmac.new(b"any-secret", documented.encode(), hashlib.sha256).hexdigest()
    assert bybit_sign("any-secret", 1658384314791, "XXXXXXXXXX", 5000,
                      "category=option&symbol=BTC-29JUL22-25000-C") == expected


def test_timestamp_windows_match_the_documented_inequalities() -> None:
    server = 1_000_000
    assert bybit_timestamp_ok(server - 5000, server, 5000)
    assert not bybit_timestamp_ok(server - 5001, server, 5000)
    assert bybit_timestamp_ok(server + 999, server, 5000)
    assert not bybit_timestamp_ok(server + 1000, server, 5000)
    assert binance_timestamp_ok(server - 5000, server, 5000)
    assert not binance_timestamp_ok(server - 5001, server, 5000)
    assert binance_timestamp_ok(server + 999, server, 5000)
    assert not binance_timestamp_ok(server + 1000, server, 5000)


def test_binance_signature_must_be_the_last_parameter() -> None:
    assert split_binance_signature("a=1&timestamp=5&signature=abc", "") == ("a=1&timestamp=5", "abc")
    assert split_binance_signature("a=1", "timestamp=5&signature=abc") == ("a=1timestamp=5", "abc")
    assert split_binance_signature("signature=abc&a=1", "") == ("signature=abc&a=1", "")
    assert split_binance_signature("a=1&timestamp=5", "") is None


def _bybit_headers(key: str, secret: str, ts: int, query: str) -> dict[str, str]:
    return {"X-BAPI-API-KEY": key, "X-BAPI-TIMESTAMP": str(ts), "X-BAPI-RECV-WINDOW": "5000",
            "X-BAPI-SIGN": bybit_sign(secret, ts, key, 5000, query)}


def _code(failure: AuthFailure | None) -> tuple[int, int] | None:
    return None if failure is None else (failure.code, failure.http_status)


def test_verify_bybit_codes() -> None:
    now, q = 1_700_000_000_000, "category=linear&settleCoin=USDT"

    def check(headers: dict[str, str], payload: str = q) -> tuple[int, int] | None:
        return _code(verify_bybit(headers, payload, api_key="K", api_secret="S", server_ms=now))

    assert check(_bybit_headers("K", "S", now, q)) is None
    assert check(_bybit_headers("X", "S", now, q)) == (10003, 401)
    assert check(_bybit_headers("K", "wrong", now, q)) == (10004, 200)
    assert check(_bybit_headers("K", "S", now - 6000, q)) == (10002, 200)
    # The signature covers the exact query: reordering the same parameters breaks it.
    assert check(_bybit_headers("K", "S", now, q), "settleCoin=USDT&category=linear") == (10004, 200)


def test_verify_binance_codes() -> None:
    now = 1_700_000_000_000
    total = f"symbol=BTCUSDT&timestamp={now}"
    query = f"{total}&signature={binance_sign('S', total)}"

    def check(key: str | None, q: str = query, server_ms: int = now) -> tuple[int, int] | None:
        return _code(verify_binance(key, q, "", api_key="K", api_secret="S", server_ms=server_ms))

    assert check("K") is None
    assert check("X") == (-2015, 401)
    assert check(None) == (-2014, 401)
    assert check("K", query.replace("BTCUSDT", "ETHUSDT")) == (-1022, 400)
    assert check("K", "symbol=BTCUSDT") == (-1102, 400)
    assert check("K", server_ms=now + 5001) == (-1021, 400)  # too old
    assert check("K", server_ms=now - 1000) == (-1021, 400)  # too far ahead


# -- rate limiters ---------------------------------------------------------------------------------


def test_rolling_window_counts_and_resets_when_the_oldest_ages_out() -> None:
    limiter = RollingWindowLimiter(2, 1000)
    assert limiter.acquire(0).remaining == 1
    assert limiter.acquire(400).remaining == 0
    refused = limiter.acquire(500)
    assert not refused.allowed and refused.reset_ms == 1000
    assert limiter.acquire(1000).allowed  # the request at 0 left the window


def test_ip_limit_bans_for_the_ban_period() -> None:
    ip = IpLimiter(3, 5000, ban_ms=60_000)
    assert all(ip.allow(t) for t in (0, 1, 2))
    assert not ip.allow(3)
    assert not ip.allow(10_000)  # window passed, ban did not
    assert ip.allow(60_004)


def test_weight_limit_429_then_418_ban_and_minute_reset() -> None:
    weights = WeightLimiter(20, limited_answers_before_ban=1, ban_ms=120_000)
    assert weights.charge(10, 0).outcome == "ok"
    assert weights.charge(10, 1).used_weight == 20
    limited = weights.charge(1, 59_500)
    assert limited.outcome == "limited" and limited.retry_after_s == 1 and limited.used_weight == 21
    banned = weights.charge(1, 59_600)
    assert banned.outcome == "banned" and banned.retry_after_s == 120
    assert weights.charge(1, 61_000).outcome == "banned"  # a new minute does not lift a ban
    assert weights.charge(1, 180_000).outcome == "ok"


# -- fault registry --------------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_counted_fault_is_used_up() -> None:
    faults = FaultRegistry(Clock())
    fid = faults.inject("bybit", "rest_error", status=429, count=2)
    assert faults.take("bybit", "rest_error", "/v5/market/time").id == fid  # type: ignore[union-attr]
    assert faults.take("binance", "rest_error", "/fapi/v1/time") is None
    assert faults.take("bybit", "rest_error", "/v5/market/time") is not None
    assert faults.take("bybit", "rest_error", "/v5/market/time") is None
    assert faults.active() == []


def test_duration_endpoint_filter_and_clear() -> None:
    clock = Clock()
    faults = FaultRegistry(clock)
    fid = faults.inject("binance", "slow_rest", delay_seconds=0.5, endpoint="/fapi/v3/positionRisk",
                        duration_seconds=2)
    assert faults.take("binance", "slow_rest", "/fapi/v1/time") is None
    assert faults.take("binance", "slow_rest", "/fapi/v3/positionRisk") is not None
    assert faults.take("binance", "slow_rest", "/fapi/v3/positionRisk") is not None  # not counted
    clock.t += 2
    assert faults.active() == []
    fid = faults.inject("all", "reject_auth")
    assert {f.venue for f in faults.active()} == {"bybit", "binance"}
    assert faults.clear(fid) == 2
    assert faults.clear("fault-999") == 0


def test_clock_offsets_add_up_per_venue() -> None:
    faults = FaultRegistry(Clock())
    faults.inject("bybit", "clock_skew", offset_ms=1500)
    faults.inject("bybit", "clock_skew", offset_ms=-500)
    assert faults.clock_offset_ms("bybit") == 1000
    assert faults.clock_offset_ms("binance") == 0


@pytest.mark.parametrize("venue, kind, params", [
    ("bybit", "nope", {}),
    ("kraken", "rest_error", {"status": 500}),
    ("bybit", "rest_error", {}),
    ("bybit", "rest_error", {"status": True}),
    ("bybit", "rest_error", {"status": 500, "colour": "red"}),
    ("bybit", "rest_error", {"status": 500, "count": 0}),
    ("bybit", "clock_skew", {"offset_ms": 10, "count": 1}),
    ("bybit", "malformed_rest", {"mode": "garbled"}),
    ("bybit", "slow_rest", {"delay_seconds": 1, "duration_seconds": -1}),
])
def test_bad_fault_requests_are_refused(venue: str, kind: str, params: dict) -> None:
    with pytest.raises(FaultError):
        FaultRegistry().inject(venue, kind, **params)
