"""Bybit v5 WebSocket protocol of the simulator, driven by a plain aiohttp client."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest

from .conftest import FAST_WS, bybit_auth_args, eventually, now_ms

PRIVATE_ACK_KEYS = {"success", "ret_msg", "op", "conn_id"}


async def _private(sim: Any, ws_connect: Any, *, query: str = "") -> Any:
    ep = sim.endpoints.bybit
    client = await ws_connect(ep.ws_private_url + query)
    await client.send({"op": "auth", "args": bybit_auth_args(ep.api_key, ep.api_secret, now_ms() + 1000)})
    assert (await client.recv())["success"] is True
    return client


async def test_public_subscribe_ack_snapshot_then_deltas_of_changed_fields(start_sim, ws_connect, http) -> None:
    sim = await start_sim(**FAST_WS)
    client = await ws_connect(sim.endpoints.bybit.ws_public_url)
    async with http.get(f"{sim.endpoints.bybit.rest_url}/v5/market/tickers?category=linear&symbol=BTCUSDT") as r:
        (rest_row,) = (await r.json())["result"]["list"]

    await client.send({"op": "subscribe", "args": ["tickers.BTCUSDT"], "req_id": "r1"})
    ack = await client.recv()
    snapshot = await client.recv()
    quiet_delta = await client.recv()
    sim.market.set_mark_price("bybit", "BTCUSDT", "67300.50")
    moved = await client.recv_until(lambda m: "markPrice" in m["data"])

    assert set(ack) == {"success", "ret_msg", "conn_id", "req_id", "op"}
    assert (ack["success"], ack["ret_msg"], ack["req_id"], ack["op"]) == (True, "", "r1", "subscribe")
    assert snapshot["topic"] == "tickers.BTCUSDT" and snapshot["type"] == "snapshot"
    assert isinstance(snapshot["data"], dict) and isinstance(snapshot["cs"], int) and isinstance(snapshot["ts"], int)
    # All the fields REST lists (book sizes live), plus tickDirection.
    assert set(snapshot["data"]) == set(rest_row) | {"tickDirection"}
    assert {k: v for k, v in snapshot["data"].items() if k not in ("bid1Size", "ask1Size", "tickDirection")} == {
        k: v for k, v in rest_row.items() if k not in ("bid1Size", "ask1Size")}
    assert snapshot["data"]["markPrice"] == "67250.00"
    # Nothing but the book moved: the delta names the symbol and the changed sizes only.
    assert quiet_delta["type"] == "delta" and "markPrice" not in quiet_delta["data"]
    assert set(quiet_delta["data"]) <= {"symbol", "bid1Size", "ask1Size"}
    assert quiet_delta["cs"] > snapshot["cs"] and quiet_delta["ts"] >= snapshot["ts"]
    assert moved["data"]["markPrice"] == "67300.50" and moved["data"]["symbol"] == "BTCUSDT"
    assert "fundingRate" not in moved["data"]


async def test_public_ack_without_req_id_and_pong_shape(start_sim, ws_connect) -> None:
    sim = await start_sim()
    client = await ws_connect(sim.endpoints.bybit.ws_public_url)

    await client.send({"op": "ping"})
    pong = await client.recv()
    await client.send({"op": "ping", "req_id": "p7"})
    pong_with_id = await client.recv()
    await client.send({"op": "subscribe", "args": ["tickers.ETHUSDT"]})
    ack = await client.recv()

    conn_id = pong["conn_id"]
    assert pong == {"success": True, "ret_msg": "pong", "conn_id": conn_id, "req_id": "", "op": "ping"}
    assert pong_with_id["req_id"] == "p7" and pong_with_id["op"] == "ping"
    assert ack == {"success": True, "ret_msg": "", "conn_id": conn_id, "req_id": "", "op": "subscribe"}


async def test_public_subscribe_failures(start_sim, ws_connect) -> None:
    sim = await start_sim(bybit_ws_public_args_max_chars=40)
    client = await ws_connect(sim.endpoints.bybit.ws_public_url)

    async def subscribe(args: Any, req_id: str) -> dict[str, Any]:
        await client.send({"op": "subscribe", "args": args, "req_id": req_id})
        return await client.recv_until(lambda m: m.get("op") == "subscribe" and m["req_id"] == req_id)

    unknown_symbol = await subscribe(["tickers.DOGEUSDT"], "a")
    unknown_topic = await subscribe(["orderbook.1.BTCUSDT"], "b")
    ok = await subscribe(["tickers.BTCUSDT", "tickers.ETHUSDT"], "c")
    duplicate = await subscribe(["tickers.XRPUSDT", "tickers.BTCUSDT"], "d")
    over_budget = await subscribe(["tickers.SOLUSDT"], "e")

    assert [r["success"] for r in (unknown_symbol, unknown_topic, ok, duplicate, over_budget)] == [
        False, False, True, False, False]
    assert "tickers.DOGEUSDT" in unknown_symbol["ret_msg"] and "orderbook.1.BTCUSDT" in unknown_topic["ret_msg"]
    assert duplicate["ret_msg"] == "error:already subscribed,topic:tickers.BTCUSDT"
    # The refused batch subscribed nothing, XRPUSDT included.
    assert sim.ws_stats()["bybit"]["public"]["subscriptions"] == ["tickers.BTCUSDT", "tickers.ETHUSDT"]


async def test_unsubscribe_stops_the_topic(start_sim, ws_connect) -> None:
    sim = await start_sim(**FAST_WS)
    client = await ws_connect(sim.endpoints.bybit.ws_public_url)
    await client.send({"op": "subscribe", "args": ["tickers.BTCUSDT", "tickers.ETHUSDT"], "req_id": "s"})
    await client.recv_until(lambda m: m.get("topic") == "tickers.ETHUSDT")

    await client.send({"op": "unsubscribe", "args": ["tickers.BTCUSDT"], "req_id": "u"})
    ack = await client.recv_until(lambda m: m.get("op") == "unsubscribe")
    later = [await client.recv() for _ in range(5)]

    assert (ack["success"], ack["req_id"]) == (True, "u")
    assert {m["topic"] for m in later} == {"tickers.ETHUSDT"}


async def test_private_auth_shapes_and_refusals(start_sim, ws_connect) -> None:
    sim = await start_sim()
    ep = sim.endpoints.bybit
    client = await ws_connect(ep.ws_private_url)

    await client.send({"op": "subscribe", "args": ["position"], "req_id": "early"})
    before_auth = await client.recv()
    await client.send({"op": "auth", "args": bybit_auth_args(ep.api_key, ep.api_secret, now_ms() - 10)})
    expired = await client.recv()
    await client.send({"op": "auth", "args": bybit_auth_args(ep.api_key, "0" * 36, now_ms() + 1000)})
    bad_sign = await client.recv()
    await client.send({"op": "auth", "req_id": "a1", "args": bybit_auth_args(ep.api_key, ep.api_secret,
                                                                             now_ms() + 1000)})
    ok = await client.recv()
    await client.send({"op": "subscribe", "args": ["position"]})
    sub = await client.recv()

    conn_id = ok["conn_id"]
    assert before_auth == {"success": False, "ret_msg": "Request not authorized", "op": "subscribe",
                           "conn_id": conn_id, "req_id": "early"}
    assert expired == bad_sign == {"success": False, "ret_msg": "Params Error", "op": "auth", "conn_id": conn_id}
    assert ok == {"success": True, "ret_msg": "", "op": "auth", "conn_id": conn_id, "req_id": "a1"}
    assert sub == {"success": True, "ret_msg": "", "op": "subscribe", "conn_id": conn_id}


async def test_private_position_pushes_use_ws_field_names(start_sim, ws_connect) -> None:
    sim = await start_sim(bybit_hedge_symbols=("ETHUSDT",))
    client = await _private(sim, ws_connect)
    await client.send({"op": "subscribe", "args": ["position.linear"], "req_id": "s"})
    await client.recv()

    sim.market.open_position("bybit", "ETHUSDT", "short", "2.00", leverage="5")
    opened = await client.recv()
    sim.market.set_size("bybit", "ETHUSDT", "1.50", side="short")
    resized = await client.recv()
    sim.market.close_position("bybit", "ETHUSDT", side="short")
    closed = await client.recv()

    assert set(opened) == {"id", "topic", "creationTime", "data"} and opened["topic"] == "position.linear"
    (row,) = opened["data"]
    assert (row["symbol"], row["positionIdx"], row["side"], row["size"], row["category"]) == (
        "ETHUSDT", 2, "Sell", "2.00", "linear")
    assert row["entryPrice"] == "3480.50" and "avgPrice" not in row and row["leverage"] == "5"
    assert resized["data"][0]["size"] == "1.50" and resized["data"][0]["seq"] > row["seq"]
    closed_row = closed["data"][0]
    assert (closed_row["size"], closed_row["side"], closed_row["positionIdx"]) == ("0", "", 2)


async def test_private_pong_and_idle_cut(start_sim, ws_connect) -> None:
    sim = await start_sim(bybit_ws_private_idle_timeout_seconds=0.3)
    idle = await _private(sim, ws_connect)
    pinging = await _private(sim, ws_connect)
    loop = asyncio.get_running_loop()
    started = loop.time()

    pongs = []
    # Keep one connection alive with JSON pings while the other sends none.
    while loop.time() - started < 0.7:
        await pinging.send({"op": "ping", "req_id": f"p{len(pongs)}"})
        pongs.append(await pinging.recv())
        await asyncio.sleep(0.05)
    closing = await idle.wait_closed()

    assert pongs[0]["op"] == "pong" and pongs[0]["req_id"] == "p0" and pongs[0]["conn_id"]
    assert isinstance(pongs[0]["args"][0], str) and abs(int(pongs[0]["args"][0]) - now_ms()) < 5000
    assert closing.type is aiohttp.WSMsgType.CLOSE
    stats = sim.ws_stats()["bybit"]["private"]
    assert stats["closed"] == {"idle": 1} and stats["open"] == 1


async def test_max_active_time_query(start_sim, ws_connect) -> None:
    sim = await start_sim()
    url = sim.endpoints.bybit.ws_private_url

    await ws_connect(url + "?max_active_time=1m")
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await ws_connect(url + "?max_active_time=10s")

    assert sim.ws_connections("bybit", "private")[-1].idle_timeout_seconds == 60
    assert refused.value.status == 400


async def test_clock_skew_moves_timestamps_and_auth_expiry(start_sim, ws_connect) -> None:
    sim = await start_sim(**FAST_WS)
    sim.faults.inject("bybit", "clock_skew", offset_ms=60_000)
    ep = sim.endpoints.bybit
    private = await ws_connect(ep.ws_private_url)
    public = await ws_connect(ep.ws_public_url)

    await private.send({"op": "auth", "args": bybit_auth_args(ep.api_key, ep.api_secret, now_ms() + 1000)})
    behind = await private.recv()
    await private.send({"op": "auth", "args": bybit_auth_args(ep.api_key, ep.api_secret, now_ms() + 65_000)})
    ahead = await private.recv()
    await public.send({"op": "subscribe", "args": ["tickers.BTCUSDT"]})
    snapshot = await public.recv_until(lambda m: m.get("type") == "snapshot")

    assert behind["success"] is False and ahead["success"] is True
    assert snapshot["ts"] - now_ms() > 55_000


async def test_ws_stats_over_http(start_sim, ws_connect, http) -> None:
    sim = await start_sim()
    client = await ws_connect(sim.endpoints.bybit.ws_public_url)
    await client.send({"op": "subscribe", "args": ["tickers.XRPUSDT"]})
    await client.recv()
    await eventually(lambda: sim.ws_stats()["bybit"]["public"]["data_frames_sent"] >= 1)

    async with http.get(f"{sim.endpoints.control_url}/ws") as r:
        stats = await r.json()

    public = stats["bybit"]["public"]
    assert (public["opened"], public["open"], public["subscriptions"]) == (1, 1, ["tickers.XRPUSDT"])
    assert public["control_frames_sent"] == 1 and public["frames_received"] == 1
    (conn,) = [c for c in stats["connections"] if c["venue"] == "bybit"]
    assert conn["path"] == "/bybit/v5/public/linear" and conn["open"] is True
