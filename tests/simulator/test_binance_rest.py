"""Binance USDⓈ-M REST of the simulator over real loopback sockets (a minimal hand-written client)."""

from __future__ import annotations

from decimal import Decimal

import aiohttp

from agent.simulator import Simulator

from .conftest import BinanceClient, binance_query, now_ms

WEIGHT = "X-MBX-USED-WEIGHT-1M"


async def test_time_and_premium_index_shapes_and_weights(sim: Simulator, binance: BinanceClient) -> None:
    sim.market.set_mark_price("binance", "BTCUSDT", "65000.1", index_price="64990.0")
    status, headers, body = await binance.request("GET", "/fapi/v1/time")
    assert status == 200 and abs(body["serverTime"] - now_ms()) < 2000 and headers[WEIGHT] == "1"

    _, headers, one = await binance.request("GET", "/fapi/v1/premiumIndex", "symbol=BTCUSDT")
    assert headers[WEIGHT] == "2"
    assert set(one) == {"symbol", "markPrice", "indexPrice", "estimatedSettlePrice", "lastFundingRate",
                        "interestRate", "nextFundingTime", "time"}
    assert (one["markPrice"], one["indexPrice"]) == ("65000.10000000", "64990.00000000")
    assert isinstance(one["nextFundingTime"], int) and one["nextFundingTime"] % (8 * 3600 * 1000) == 0

    _, headers, every = await binance.request("GET", "/fapi/v1/premiumIndex")
    assert headers[WEIGHT] == "12"  # 10 without a symbol
    assert [r["symbol"] for r in every] == ["BTCUSDT", "ETHUSDT", "BNBUSDT", "SOLUSDT"]

    status, headers, body = await binance.request("GET", "/fapi/v1/premiumIndex", "symbol=DOGEUSDT")
    assert (status, body) == (400, {"code": -1121, "msg": "Invalid symbol."}) and WEIGHT in headers


async def test_position_risk_v3_lists_only_open_positions(sim: Simulator, binance: BinanceClient) -> None:
    sim.market.set_mark_price("binance", "ETHUSDT", "3000.00")
    sim.market.open_position("binance", "ETHUSDT", "short", "2.000")
    sim.market.set_mark_price("binance", "ETHUSDT", "2900.00")

    status, headers, rows = await binance.request("GET", "/fapi/v3/positionRisk", signed=True)

    assert status == 200 and headers[WEIGHT] == "5"
    (row,) = rows
    assert (row["symbol"], row["positionSide"], row["positionAmt"]) == ("ETHUSDT", "BOTH", "-2.000")
    assert Decimal(row["unRealizedProfit"]) == Decimal("200") and Decimal(row["notional"]) < 0
    assert "leverage" not in row and "marginType" not in row
    assert isinstance(row["updateTime"], int)


async def test_dual_side_rows_and_v2_lists_every_symbol(sim: Simulator, binance: BinanceClient) -> None:
    sim.market.set_hedge_mode("binance", True)
    sim.market.open_position("binance", "BTCUSDT", "long", "0.010")
    sim.market.open_position("binance", "BTCUSDT", "short", "0.020")

    _, _, v3 = await binance.request("GET", "/fapi/v3/positionRisk", "symbol=BTCUSDT", signed=True)
    _, _, v2 = await binance.request("GET", "/fapi/v2/positionRisk", signed=True)
    _, _, dual = await binance.request("GET", "/fapi/v1/positionSide/dual", signed=True)

    assert [(r["positionSide"], r["positionAmt"]) for r in v3] == [("LONG", "0.010"), ("SHORT", "-0.020")]
    assert len(v2) == 8 and {r["positionSide"] for r in v2} == {"LONG", "SHORT"}
    assert [r["positionAmt"] for r in v2 if r["symbol"] == "ETHUSDT"] == ["0.000", "0.000"]
    assert all(r["isAutoAddMargin"] == "false" and "leverage" in r for r in v2)
    assert dual == {"dualSidePosition": True}


async def test_auth_errors_use_binance_codes_and_statuses(binance: BinanceClient) -> None:
    path = "/fapi/v3/positionRisk"
    assert (await binance.request("GET", path, signed=True, key="nope"))[::2] == (
        401, {"code": -2015, "msg": "Invalid API-key, IP, or permissions for action."})
    status, _, body = await binance.request("GET", path, signed=True, secret="wrong")
    assert (status, body["code"]) == (400, -1022)
    status, _, body = await binance.request("GET", path, signed=True, ts_ms=now_ms() - 6000)
    assert (status, body["code"]) == (400, -1021)
    status, _, body = await binance.request("GET", path, signed=True, ts_ms=now_ms() + 1500)
    assert (status, body["code"]) == (400, -1021)
    status, _, body = await binance.request("GET", path, "recvWindow=5000")
    assert (status, body["code"]) == (400, -1102)
    # A longer recvWindow admits an older timestamp.
    status, _, _ = await binance.request("GET", path, "recvWindow=10000", signed=True, ts_ms=now_ms() - 8000)
    assert status == 200


async def test_signature_must_be_last(sim: Simulator, binance: BinanceClient) -> None:
    assert sim.endpoints is not None
    signed = binance_query(sim.endpoints.binance.api_secret, "symbol=BTCUSDT")
    total, signature = signed.rsplit("&signature=", 1)
    moved = f"signature={signature}&{total}"
    status, _, body = await binance.request("GET", "/fapi/v3/positionRisk", raw_query=moved)
    assert (status, body["code"]) == (400, -1022)
    assert (await binance.request("GET", "/fapi/v3/positionRisk", raw_query=signed))[0] == 200


async def test_listen_key_lifecycle(binance: BinanceClient) -> None:
    path = "/fapi/v1/listenKey"
    _, headers, first = await binance.request("POST", path)
    _, _, second = await binance.request("POST", path)
    assert first == second and len(first["listenKey"]) == 64 and headers[WEIGHT] == "1"
    assert (await binance.request("PUT", path))[::2] == (200, first)
    assert (await binance.request("DELETE", path))[::2] == (200, {})
    assert (await binance.request("PUT", path))[::2] == (400, {"code": -1125, "msg": "This listenKey does not exist."})
    _, _, third = await binance.request("POST", path)
    assert third != first
    assert (await binance.request("POST", path, key=""))[0] == 401


async def test_weight_limit_429_then_418_with_retry_after(start_sim) -> None:
    sim = await start_sim(binance_weight_limit_per_minute=12, binance_ban_seconds=300)
    async with aiohttp.ClientSession() as session:
        client = BinanceClient(session, sim)
        ok = await client.request("GET", "/fapi/v1/premiumIndex")  # weight 10
        ok2 = await client.request("GET", "/fapi/v1/premiumIndex", "symbol=BTCUSDT")  # 11
        limited = await client.request("GET", "/fapi/v1/premiumIndex")  # 21 > 12
        banned = await client.request("GET", "/fapi/v1/time")
        still = await client.request("GET", "/fapi/v1/time")
    assert (ok[0], ok2[0], ok2[1][WEIGHT]) == (200, 200, "11")
    status, headers, body = limited
    assert (status, body["code"]) == (429, -1003) and 1 <= int(headers["Retry-After"]) <= 60
    assert headers[WEIGHT] == "21"
    status, headers, body = banned
    assert (status, body["code"]) == (418, -1003) and int(headers["Retry-After"]) == 300
    assert "banned until" in body["msg"] and still[0] == 418


async def test_injected_errors_and_clock_skew(sim: Simulator, binance: BinanceClient) -> None:
    sim.faults.inject("binance", "rest_error", status=418, retry_after_seconds=42, count=1)
    status, headers, body = await binance.request("GET", "/fapi/v1/time")
    assert (status, body["code"], headers["Retry-After"]) == (418, -1003, "42") and WEIGHT in headers
    sim.faults.inject("binance", "rest_error", status=429, endpoint="/fapi/v3/positionRisk", count=1)
    assert (await binance.request("GET", "/fapi/v1/time"))[0] == 200
    status, headers, _ = await binance.request("GET", "/fapi/v3/positionRisk", signed=True)
    assert status == 429 and "Retry-After" in headers
    sim.faults.inject("binance", "rest_error", status=503, count=1)
    assert (await binance.request("GET", "/fapi/v1/time"))[::2] == (
        503, {"code": -1008, "msg": "Server is currently overloaded with other requests. Please try again in a few "
                                    "minutes."})

    sim.faults.inject("binance", "clock_skew", offset_ms=-30_000)
    _, _, body = await binance.request("GET", "/fapi/v1/time")
    assert now_ms() - body["serverTime"] > 25_000
    status, _, body = await binance.request("GET", "/fapi/v3/positionRisk", signed=True)
    assert (status, body["code"]) == (400, -1021)  # our timestamp is now ahead of the server


async def test_reject_auth_and_malformed(sim: Simulator, binance: BinanceClient) -> None:
    sim.faults.inject("binance", "reject_auth", count=1)
    assert (await binance.request("GET", "/fapi/v3/positionRisk", signed=True))[2]["code"] == -2015
    assert (await binance.request("GET", "/fapi/v3/positionRisk", signed=True))[0] == 200

    sim.faults.inject("binance", "malformed_rest", mode="empty_numbers", endpoint="/fapi/v1/premiumIndex",
                      count=1)
    _, _, rows = await binance.request("GET", "/fapi/v1/premiumIndex")
    assert rows[0]["markPrice"] == "" and rows[0]["lastFundingRate"] == "" and rows[1]["markPrice"] != ""
