"""Bybit REST of the simulator over real loopback sockets (a minimal hand-written client)."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import aiohttp

from agent.simulator import Simulator, synthetic_symbols

from .conftest import BybitClient, now_ms

POSITIONS = "/v5/position/list"


async def test_server_time_and_envelope(sim: Simulator, bybit: BybitClient) -> None:
    before = now_ms()
    status, _, body = await bybit.get("/v5/market/time", signed=False)
    assert status == 200 and body["retCode"] == 0 and body["retExtInfo"] == {}
    assert before <= body["time"] <= now_ms()
    assert int(body["result"]["timeSecond"]) == body["time"] // 1000
    assert int(body["result"]["timeNano"]) // 1_000_000 == body["time"]


async def test_tickers_all_and_one(sim: Simulator, bybit: BybitClient) -> None:
    sim.market.set_mark_price("bybit", "ETHUSDT", "3333.33", index_price="3334.00")
    _, _, body = await bybit.get("/v5/market/tickers", "category=linear", signed=False)
    assert [r["symbol"] for r in body["result"]["list"]] == ["BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT"]
    _, _, body = await bybit.get("/v5/market/tickers", "category=linear&symbol=ETHUSDT", signed=False)
    (row,) = body["result"]["list"]
    assert (row["markPrice"], row["indexPrice"], row["fundingRate"]) == ("3333.33", "3334.00", "0.0001")
    assert all(isinstance(v, str) for v in row.values())
    _, _, body = await bybit.get("/v5/market/tickers", "category=linear&symbol=DOGEUSDT", signed=False)
    assert body["retCode"] == 10001


async def test_position_list_requires_category_and_symbol_or_settle_coin(bybit: BybitClient) -> None:
    for query in ("", "category=linear", "category=linear&symbol=BTCUSDT&limit=201", "category=spot"):
        status, headers, body = await bybit.get(POSITIONS, query)
        assert status == 200 and body["retCode"] == 10001, query
        assert "X-Bapi-Limit" in headers


async def test_position_list_by_symbol_returns_flat_rows(sim: Simulator, bybit: BybitClient) -> None:
    sim.market.set_hedge_mode("bybit", True, symbol="ETHUSDT")
    sim.market.open_position("bybit", "ETHUSDT", "short", "1.50")

    _, _, one_way = await bybit.get(POSITIONS, "category=linear&symbol=BTCUSDT")
    _, _, hedge = await bybit.get(POSITIONS, "category=linear&symbol=ETHUSDT")

    (flat,) = one_way["result"]["list"]
    assert (flat["positionIdx"], flat["side"], flat["size"], flat["liqPrice"]) == (0, "", "0", "")
    rows = hedge["result"]["list"]
    assert [(r["positionIdx"], r["side"], r["size"]) for r in rows] == [(1, "", "0"), (2, "Sell", "1.50")]
    assert hedge["result"]["nextPageCursor"] == ""


async def test_settle_coin_lists_open_positions_with_pagination(start_sim) -> None:
    sim = await start_sim(bybit_symbols=synthetic_symbols(25))
    for i in range(25):
        sim.market.open_position("bybit", f"SIM{i:03d}USDT", "long" if i % 2 else "short", str(i + 1))
    sim.market.close_position("bybit", "SIM003USDT")
    async with aiohttp.ClientSession() as session:
        client = BybitClient(session, sim)
        seen, cursor, pages = [], "", 0
        while True:
            query = "category=linear&limit=10&settleCoin=USDT" + (f"&cursor={cursor}" if cursor else "")
            _, _, body = await client.get(POSITIONS, query)
            assert body["retCode"] == 0, body
            seen += [r["symbol"] for r in body["result"]["list"]]
            cursor, pages = body["result"]["nextPageCursor"], pages + 1
            if not cursor:
                break
        _, _, default_page = await client.get(POSITIONS, "category=linear&settleCoin=USDT")
    assert pages == 3 and len(seen) == 24 and "SIM003USDT" not in seen and len(set(seen)) == 24
    assert len(default_page["result"]["list"]) == 20 and default_page["result"]["nextPageCursor"]


async def test_open_row_values_follow_the_market(sim: Simulator, bybit: BybitClient) -> None:
    sim.market.set_mark_price("bybit", "BTCUSDT", "60000.00")
    sim.market.open_position("bybit", "BTCUSDT", "long", "0.500", leverage="5")
    sim.market.set_mark_price("bybit", "BTCUSDT", "61000.00")

    _, _, body = await bybit.get(POSITIONS, "category=linear&settleCoin=USDT")

    (row,) = body["result"]["list"]
    assert (row["side"], row["size"], row["avgPrice"], row["markPrice"]) == ("Buy", "0.500", "60000.00", "61000.00")
    assert Decimal(row["unrealisedPnl"]) == Decimal("500")
    assert row["leverage"] == "5" and Decimal(row["liqPrice"]) < Decimal("60000")
    assert isinstance(row["seq"], int) and row["updatedTime"].isdigit()


async def test_auth_errors_use_bybit_codes_and_statuses(bybit: BybitClient) -> None:
    query = "category=linear&settleCoin=USDT"
    status, _, body = await bybit.get(POSITIONS, query, key="not-the-key")
    assert (status, body["retCode"]) == (401, 10003)
    status, _, body = await bybit.get(POSITIONS, query, secret="not-the-secret")
    assert (status, body["retCode"]) == (200, 10004)
    status, _, body = await bybit.get(POSITIONS, query, ts_ms=now_ms() - 6000)
    assert (status, body["retCode"]) == (200, 10002)
    status, _, body = await bybit.get(POSITIONS, query, signed=False)
    assert (status, body["retCode"]) == (401, 10003)


async def test_per_endpoint_limit_answers_10006_with_reset_header(start_sim) -> None:
    sim = await start_sim(bybit_private_limits_per_second={POSITIONS: 3})
    async with aiohttp.ClientSession() as session:
        client = BybitClient(session, sim)
        answers = [await client.get(POSITIONS, "category=linear&settleCoin=USDT") for _ in range(4)]
        _, other_headers, other = await client.get("/v5/account/info")
    assert [b["retCode"] for _, _, b in answers] == [0, 0, 0, 10006]
    assert [h["X-Bapi-Limit-Status"] for _, h, _ in answers] == ["2", "1", "0", "0"]
    _, headers, body = answers[3]
    assert headers["X-Bapi-Limit"] == "3" and body["retMsg"] == "Too many visits"
    assert body["time"] < int(headers["X-Bapi-Limit-Reset-Timestamp"]) <= body["time"] + 1000
    assert other["retCode"] == 0 and other_headers["X-Bapi-Limit"] == "50"  # limits are per endpoint


async def test_ip_limit_answers_403_and_bans(start_sim) -> None:
    sim = await start_sim(bybit_ip_limit_requests=5, bybit_ip_limit_window_seconds=60, bybit_ip_ban_seconds=600)
    async with aiohttp.ClientSession() as session:
        client = BybitClient(session, sim)
        statuses = [(await client.get("/v5/market/time", signed=False))[0] for _ in range(7)]
        _, _, text = await client.get("/v5/market/time", signed=False)
    assert statuses == [200] * 5 + [403, 403]
    assert text == "access too frequent"


async def test_clock_skew_moves_time_and_the_auth_window(sim: Simulator, bybit: BybitClient) -> None:
    sim.faults.inject("bybit", "clock_skew", offset_ms=60_000)
    _, _, body = await bybit.get("/v5/market/time", signed=False)
    assert body["time"] - now_ms() > 55_000
    _, _, stale = await bybit.get(POSITIONS, "category=linear&settleCoin=USDT")
    _, _, synced = await bybit.get(POSITIONS, "category=linear&settleCoin=USDT", ts_ms=now_ms() + 60_000)
    assert stale["retCode"] == 10002 and synced["retCode"] == 0


async def test_rest_error_faults(sim: Simulator, bybit: BybitClient) -> None:
    sim.faults.inject("bybit", "rest_error", status=200, endpoint=POSITIONS, count=2)
    sim.faults.inject("bybit", "rest_error", status=502, endpoint="/v5/market/tickers", count=1)
    first = await bybit.get(POSITIONS, "category=linear&settleCoin=USDT")
    second = await bybit.get(POSITIONS, "category=linear&settleCoin=USDT")
    third = await bybit.get(POSITIONS, "category=linear&settleCoin=USDT")
    assert [r[2]["retCode"] for r in (first, second, third)] == [10006, 10006, 0]
    assert first[1]["X-Bapi-Limit-Status"] == "0" and "X-Bapi-Limit-Reset-Timestamp" in first[1]
    assert (await bybit.get("/v5/market/tickers", "category=linear", signed=False))[0] == 502
    assert (await bybit.get("/v5/market/tickers", "category=linear", signed=False))[0] == 200
    sim.faults.inject("bybit", "rest_error", status=403, count=1)
    assert (await bybit.get("/v5/market/time", signed=False))[:3:2] == (403, "access too frequent")


async def test_reject_auth_and_slow_rest(sim: Simulator, bybit: BybitClient) -> None:
    sim.faults.inject("bybit", "reject_auth", reason="sign", count=1)
    _, _, body = await bybit.get("/v5/account/info")
    assert body["retCode"] == 10004
    assert (await bybit.get("/v5/account/info"))[2]["retCode"] == 0

    sim.faults.inject("bybit", "slow_rest", delay_seconds=0.3, count=1)
    loop = asyncio.get_running_loop()
    start = loop.time()
    await bybit.get("/v5/market/time", signed=False)
    assert loop.time() - start >= 0.3


async def test_malformed_rest_modes(sim: Simulator, bybit: BybitClient) -> None:
    sim.market.open_position("bybit", "BTCUSDT", "long", "0.001")
    sim.market.open_position("bybit", "ETHUSDT", "short", "0.01")
    query = "category=linear&settleCoin=USDT"

    sim.faults.inject("bybit", "malformed_rest", mode="missing_fields", fields=["markPrice", "size"], count=1)
    rows = (await bybit.get(POSITIONS, query))[2]["result"]["list"]
    assert "markPrice" not in rows[0] and "size" not in rows[0] and "markPrice" in rows[1]

    sim.faults.inject("bybit", "malformed_rest", mode="empty_numbers", fields=["liqPrice"], all_rows=True,
                      count=1)
    rows = (await bybit.get(POSITIONS, query))[2]["result"]["list"]
    assert [r["liqPrice"] for r in rows] == ["", ""] and rows[0]["size"] == "0.001"

    sim.faults.inject("bybit", "malformed_rest", mode="truncated", count=1)
    _, _, text = await bybit.get("/v5/market/time", signed=False)
    assert isinstance(text, str) and text.startswith('{"retCode":0')  # cut short: not JSON

    sim.faults.inject("bybit", "malformed_rest", mode="invalid_json", count=1)
    status, _, text = await bybit.get("/v5/market/time", signed=False)
    assert status == 200 and isinstance(text, str) and text.startswith("<html>")
