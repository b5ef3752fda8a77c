"""Binance USDⓈ-M WebSocket protocol of the simulator, driven by a plain aiohttp client."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any

import aiohttp
import pytest

from .conftest import FAST_WS, BinanceClient, eventually, now_ms

MARK_FIELDS = {"e", "E", "s", "p", "ap", "i", "P", "r", "T", "st"}


async def _listen_key(sim: Any, http: aiohttp.ClientSession) -> str:
    status, _, body = await BinanceClient(http, sim).request("POST", "/fapi/v1/listenKey")
    assert status == 200
    return str(body["listenKey"])


async def test_raw_stream_delivers_bare_mark_price_events(start_sim, ws_connect) -> None:
    sim = await start_sim(**FAST_WS)
    client = await ws_connect(f"{sim.endpoints.binance.ws_market_url}/ws/btcusdt@markPrice@1s")

    first = await client.recv()
    sim.market.set_mark_price("binance", "BTCUSDT", "67000.10", index_price="66990.00")
    moved = await client.recv_until(lambda m: m["p"] == "67000.10000000")

    assert set(first) == MARK_FIELDS and first["e"] == "markPriceUpdate" and first["s"] == "BTCUSDT"
    assert isinstance(first["E"], int) and isinstance(first["T"], int) and first["T"] > first["E"]
    assert first["p"] == "67248.30000000" and first["r"] == "0.00010000"
    assert (moved["i"], moved["ap"]) == ("66990.00000000", "67000.10000000")


async def test_combined_stream_wraps_and_paces_1s_and_3s_streams(start_sim, ws_connect) -> None:
    sim = await start_sim(**FAST_WS)
    url = f"{sim.endpoints.binance.ws_market_url}/stream?streams=btcusdt@markPrice@1s/ethusdt@markPrice"
    client = await ws_connect(url)

    frames: list[dict[str, Any]] = []
    while sum(f["stream"] == "ethusdt@markPrice" for f in frames) < 3:
        frames.append(await client.recv())

    assert all(set(f) == {"stream", "data"} for f in frames)
    fast = [f for f in frames if f["stream"] == "btcusdt@markPrice@1s"]
    assert {f["data"]["s"] for f in fast} == {"BTCUSDT"}
    # The 1 s stream beats three times as often as the 3 s one (here 0.05 s against 0.15 s).
    assert len(fast) >= 6


async def test_all_market_array_and_live_requests(start_sim, ws_connect) -> None:
    sim = await start_sim(**FAST_WS)
    client = await ws_connect(f"{sim.endpoints.binance.ws_market_url}/ws")

    await client.send({"method": "SUBSCRIBE", "params": ["!markPrice@arr@1s", "solusdt@markPrice@1s"], "id": 1})
    sub_ack = await client.recv()
    array = await client.recv_until(lambda m: isinstance(m, list))
    await client.send({"method": "LIST_SUBSCRIPTIONS", "id": 2})
    listed = await client.recv_until(lambda m: isinstance(m, dict) and m.get("id") == 2)
    await client.send({"method": "UNSUBSCRIBE", "params": ["!markPrice@arr@1s"], "id": 3})
    unsub_ack = await client.recv_until(lambda m: isinstance(m, dict) and m.get("id") == 3)
    await client.send({"method": "SET_PROPERTY", "params": ["combined", True], "id": 4})
    await client.recv_until(lambda m: isinstance(m, dict) and m.get("id") == 4)
    await client.send({"method": "GET_PROPERTY", "params": ["combined"], "id": 5})
    combined = await client.recv_until(lambda m: isinstance(m, dict) and m.get("id") == 5)
    wrapped = await client.recv_until(lambda m: isinstance(m, dict) and "stream" in m)

    assert sub_ack == {"result": None, "id": 1} and unsub_ack == {"result": None, "id": 3}
    assert [e["s"] for e in array] == ["BTCUSDT", "ETHUSDT", "BNBUSDT", "SOLUSDT"]
    assert all(set(e) == MARK_FIELDS for e in array)
    assert listed == {"result": ["!markPrice@arr@1s", "solusdt@markPrice@1s"], "id": 2}
    assert combined == {"result": True, "id": 5}
    assert wrapped["stream"] == "solusdt@markPrice@1s" and wrapped["data"]["s"] == "SOLUSDT"


@pytest.mark.parametrize(("request_text", "expected"), [
    ("{not json", {"code": 3}),
    ('{"method": "SUBSCRIBE", "params": ["btcusdt@markPrice"], "id": -1}', {"code": 2}),
    ('{"params": [], "id": 7}', {"code": 2, "id": 7}),
    ('{"method": "SUBSCRIBBE", "params": [], "id": 8}', {"code": 2, "id": 8}),
    ('{"method": "SUBSCRIBE", "params": [1], "id": 9}', {"code": 2, "id": 9}),
    ('{"method": "SET_PROPERTY", "params": ["merged", true], "id": 10}', {"code": 0, "id": 10}),
    ('{"method": "SET_PROPERTY", "params": ["combined", "yes"], "id": 11}', {"code": 1, "id": 11}),
])
async def test_bad_requests_get_code_and_msg(start_sim, ws_connect, request_text: str,
                                             expected: dict[str, Any]) -> None:
    sim = await start_sim()
    client = await ws_connect(f"{sim.endpoints.binance.ws_market_url}/ws")

    await client.ws.send_str(request_text)
    error = await client.recv()

    assert {k: error[k] for k in expected} == expected
    assert set(error) == {"code", "msg"} | ({"id"} if "id" in expected else set())
    assert isinstance(error["msg"], str) and error["msg"]


async def test_legacy_public_and_uppercase_streams_deliver_nothing(start_sim, ws_connect) -> None:
    sim = await start_sim(**FAST_WS)
    root = sim.endpoints.binance.rest_url.replace("http://", "ws://")
    legacy = await ws_connect(f"{root}/ws/btcusdt@markPrice@1s")
    legacy_combined = await ws_connect(f"{root}/stream?streams=btcusdt@markPrice@1s")
    public = await ws_connect(f"{root}/public/ws/btcusdt@markPrice@1s")
    uppercase = await ws_connect(f"{sim.endpoints.binance.ws_market_url}/ws/BTCUSDT@markPrice@1s")
    routed = await ws_connect(f"{sim.endpoints.binance.ws_market_url}/ws/btcusdt@markPrice@1s")

    for _ in range(4):
        await routed.recv()
    await legacy.send({"method": "SUBSCRIBE", "params": ["ethusdt@markPrice@1s"], "id": 1})
    legacy_ack = await legacy.recv()

    stats = sim.ws_stats()["binance"]
    assert legacy_ack == {"result": None, "id": 1}
    assert stats["legacy"]["open"] == 2 and stats["public"]["open"] == 1 and stats["market"]["open"] == 2
    assert stats["legacy"]["data_frames_sent"] == stats["public"]["data_frames_sent"] == 0
    uppercase_conn = [c for c in sim.ws_connections("binance", "market") if "BTCUSDT" in c.path][0]
    assert uppercase_conn.counters["data_frames_sent"] == 0
    assert not legacy_combined.ws.closed and not public.ws.closed and not uppercase.ws.closed


async def test_stream_limit_per_connection(start_sim, ws_connect) -> None:
    sim = await start_sim(binance_ws_max_streams_per_connection=2)
    base = sim.endpoints.binance.ws_market_url

    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await ws_connect(f"{base}/stream?streams=btcusdt@markPrice/ethusdt@markPrice/bnbusdt@markPrice")
    client = await ws_connect(f"{base}/ws/btcusdt@markPrice")
    await client.send({"method": "SUBSCRIBE", "params": ["ethusdt@markPrice", "bnbusdt@markPrice"], "id": 1})
    error = await client.recv()

    assert refused.value.status == 400
    assert error["code"] == 2 and error["id"] == 1
    assert sim.ws_stats()["binance"]["market"]["subscriptions"] == ["btcusdt@markPrice"]


async def test_server_pings_and_pong_timeout(start_sim, ws_connect) -> None:
    # Pongs count against the 10 messages/s limit too, so ping below that rate.
    sim = await start_sim(binance_ws_ping_interval_seconds=0.08, binance_ws_pong_timeout_seconds=0.25)
    base = sim.endpoints.binance.ws_market_url
    silent = await ws_connect(f"{base}/ws/btcusdt@markPrice", autoping=False)
    answering = await ws_connect(f"{base}/ws/ethusdt@markPrice")
    # aiohttp answers pings itself, while something reads.
    reader = asyncio.create_task(answering.wait_closed(timeout_seconds=10))

    ping = await silent.recv_msg()
    closing = await silent.wait_closed()
    await eventually(lambda: sim.ws_stats()["binance"]["market"]["pongs_received"] >= 5)
    reader.cancel()

    assert ping.type is aiohttp.WSMsgType.PING and int(ping.data) > 1_600_000_000_000
    assert closing.type is aiohttp.WSMsgType.CLOSE and closing.data == 1008
    stats = sim.ws_stats()["binance"]["market"]
    # Five answered pings span more than the pong timeout, yet that connection stays.
    assert stats["closed"] == {"pong_timeout": 1} and stats["open"] == 1 and not answering.ws.closed


async def test_more_than_ten_messages_a_second_disconnects(start_sim, ws_connect) -> None:
    sim = await start_sim()
    client = await ws_connect(f"{sim.endpoints.binance.ws_market_url}/ws")

    for i in range(11):
        await client.send({"method": "LIST_SUBSCRIPTIONS", "id": i})
    answers = []
    msg = await client.recv_msg()
    while msg.type is aiohttp.WSMsgType.TEXT:
        answers.append(msg)
        msg = await client.recv_msg()

    assert len(answers) == 10 and msg.type is aiohttp.WSMsgType.CLOSE and msg.data == 1008
    assert sim.ws_stats()["binance"]["market"]["closed"] == {"rate_limit": 1}


async def test_every_connection_is_cut_at_the_age_limit(start_sim, ws_connect, http) -> None:
    sim = await start_sim(binance_ws_max_connection_age_seconds=0.3)
    key = await _listen_key(sim, http)
    loop = asyncio.get_running_loop()
    started = loop.time()
    market = await ws_connect(f"{sim.endpoints.binance.ws_market_url}/ws/btcusdt@markPrice")
    private = await ws_connect(f"{sim.endpoints.binance.ws_private_url}/ws/{key}")

    cut = [await market.wait_closed(), await private.wait_closed()]

    assert loop.time() - started >= 0.3
    assert [m.data for m in cut] == [1001, 1001]
    stats = sim.ws_stats()["binance"]
    assert stats["market"]["closed"] == stats["private"]["closed"] == {"age": 1}


async def test_user_data_stream_account_update_and_expiry(start_sim, ws_connect, http) -> None:
    sim = await start_sim(listen_key_validity_seconds=0.5, binance_dual_side_position=True)
    key = await _listen_key(sim, http)
    by_path = await ws_connect(f"{sim.endpoints.binance.ws_private_url}/ws/{key}")
    by_query = await ws_connect(f"{sim.endpoints.binance.ws_private_url}/stream?listenKey={key}")

    sim.market.open_position("binance", "ETHUSDT", "long", "1.500")
    sim.market.open_position("binance", "ETHUSDT", "short", "0.200")
    opened = await by_path.recv()
    second = await by_path.recv()
    wrapped = await by_query.recv()
    expired = await by_path.recv_until(lambda m: m.get("e") == "listenKeyExpired", timeout_seconds=3)
    status, _, keepalive = await BinanceClient(http, sim).request("PUT", "/fapi/v1/listenKey")
    sim.market.close_position("binance", "ETHUSDT", side="long")
    # Nothing more arrives on the expired connection: the next frame is the answer to this request.
    await by_path.send({"method": "LIST_SUBSCRIPTIONS", "id": 1})
    after = await by_path.recv()

    assert set(opened) == {"e", "E", "T", "a"} and opened["e"] == "ACCOUNT_UPDATE" and opened["a"]["m"] == "ORDER"
    (row,) = opened["a"]["P"]
    assert set(row) == {"s", "pa", "ep", "bep", "cr", "up", "mt", "iw", "ps"}
    assert (row["s"], row["pa"], row["ps"], Decimal(row["ep"])) == ("ETHUSDT", "1.500", "LONG", Decimal("3480.27"))
    assert [(r["pa"], r["ps"]) for r in second["a"]["P"]] == [("-0.200", "SHORT")]
    assert wrapped["stream"] == key and wrapped["data"]["a"]["P"] == opened["a"]["P"]
    assert expired == {"e": "listenKeyExpired", "E": expired["E"], "listenKey": key}
    assert isinstance(expired["E"], int) and abs(expired["E"] - now_ms()) < 5000
    assert status == 400 and keepalive["code"] == -1125
    assert after == {"result": [key], "id": 1}


async def test_unknown_or_expired_listen_key_is_refused(start_sim, ws_connect, http) -> None:
    sim = await start_sim()
    key = await _listen_key(sim, http)
    base = sim.endpoints.binance.ws_private_url

    with pytest.raises(aiohttp.WSServerHandshakeError) as unknown:
        await ws_connect(f"{base}/ws/{'x' * 64}")
    await BinanceClient(http, sim).request("DELETE", "/fapi/v1/listenKey")
    with pytest.raises(aiohttp.WSServerHandshakeError) as closed:
        await ws_connect(f"{base}/ws?listenKey={key}")

    assert unknown.value.status == closed.value.status == 400
    assert sim.ws_stats()["binance"]["private"]["refused"] == 2


async def test_events_filter_on_the_query_form(start_sim, ws_connect, http) -> None:
    sim = await start_sim()
    key = await _listen_key(sim, http)
    base = sim.endpoints.binance.ws_private_url
    orders_only = await ws_connect(f"{base}/ws?listenKey={key}&events=ORDER_TRADE_UPDATE")
    account = await ws_connect(f"{base}/ws?listenKey={key}&events=ORDER_TRADE_UPDATE/ACCOUNT_UPDATE")

    sim.market.open_position("binance", "BNBUSDT", "long", "1.00")
    update = await account.recv()
    await orders_only.send({"method": "LIST_SUBSCRIPTIONS", "id": 1})

    assert update["e"] == "ACCOUNT_UPDATE"
    assert (await orders_only.recv()) == {"result": [key], "id": 1}
