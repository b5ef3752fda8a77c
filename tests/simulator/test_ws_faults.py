"""WebSocket fault kinds, each observed from the client side."""

from __future__ import annotations

import asyncio
import json
from decimal import Decimal
from typing import Any

import aiohttp
import pytest

from agent.simulator import FaultError

from .conftest import FAST_WS, BinanceClient, BybitClient, bybit_auth_args, eventually, now_ms


async def _bybit_public(sim: Any, ws_connect: Any, *topics: str) -> Any:
    client = await ws_connect(sim.endpoints.bybit.ws_public_url)
    await client.send({"op": "subscribe", "args": list(topics or ["tickers.BTCUSDT"]), "req_id": "s"})
    assert (await client.recv())["success"] is True
    return client


async def _bybit_private(sim: Any, ws_connect: Any, **kwargs: Any) -> Any:
    ep = sim.endpoints.bybit
    client = await ws_connect(ep.ws_private_url, **kwargs)
    await client.send({"op": "auth", "args": bybit_auth_args(ep.api_key, ep.api_secret, now_ms() + 1000)})
    assert (await client.recv())["success"] is True
    await client.send({"op": "subscribe", "args": ["position"]})
    assert (await client.recv())["success"] is True
    return client


async def _binance_private(sim: Any, ws_connect: Any, http: aiohttp.ClientSession) -> Any:
    _, _, body = await BinanceClient(http, sim).request("POST", "/fapi/v1/listenKey")
    return await ws_connect(f"{sim.endpoints.binance.ws_private_url}/ws/{body['listenKey']}")


async def test_ws_drop_closes_one_stream_with_a_code(start_sim, ws_connect) -> None:
    sim = await start_sim(**FAST_WS)
    public = await _bybit_public(sim, ws_connect)
    private = await _bybit_private(sim, ws_connect)

    sim.faults.inject("bybit", "ws_drop", stream="public", close_code=4000)
    closing = await public.wait_closed()
    await private.send({"op": "ping", "req_id": "still-there"})
    pong = await private.recv()

    assert closing.type is aiohttp.WSMsgType.CLOSE and closing.data == 4000
    assert pong["op"] == "pong" and pong["req_id"] == "still-there"
    # Without count or duration the drop acted once and is gone: a new connection stays.
    assert sim.faults.active() == []
    again = await _bybit_public(sim, ws_connect)
    assert (await again.recv())["topic"] == "tickers.BTCUSDT"


async def test_ws_drop_abort_and_count_over_http(start_sim, ws_connect, http) -> None:
    sim = await start_sim(**FAST_WS)
    base = sim.endpoints.binance.ws_market_url
    live = await ws_connect(f"{base}/ws/btcusdt@markPrice@1s")
    await live.recv()

    async with http.post(f"{sim.endpoints.control_url}/faults",
                         json={"venue": "binance", "kind": "ws_drop", "stream": "market", "abort": True,
                               "count": 2}) as r:
        assert r.status == 200
    aborted = await live.wait_closed()
    next_one = await ws_connect(f"{base}/ws/btcusdt@markPrice@1s")
    dropped_at_open = await next_one.wait_closed()
    third = await ws_connect(f"{base}/ws/btcusdt@markPrice@1s")
    event = await third.recv()

    # An abort sends no close frame: the client sees the TCP connection end.
    assert aborted.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR, aiohttp.WSMsgType.CLOSE)
    assert live.ws.close_code in (None, 1006)
    assert dropped_at_open.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR, aiohttp.WSMsgType.CLOSE)
    assert event["e"] == "markPriceUpdate"
    assert sim.ws_stats()["binance"]["market"]["closed"] == {"fault": 2}


async def test_ws_silence_keeps_pongs_and_resumes_with_accumulated_changes(start_sim, ws_connect) -> None:
    sim = await start_sim(**FAST_WS)
    client = await _bybit_public(sim, ws_connect)
    await client.recv_until(lambda m: m.get("type") == "snapshot")

    fault_id = sim.faults.inject("bybit", "ws_silence", stream="public")
    # Data frames queued before the fault may still arrive; wait until the fault has swallowed some.
    await eventually(lambda: sim.ws_stats()["bybit"]["public"]["silenced_frames"] >= 3)
    sim.market.set_mark_price("bybit", "BTCUSDT", "67111.10")
    await eventually(lambda: sim.ws_stats()["bybit"]["public"]["silenced_frames"] >= 6)
    await client.send({"op": "ping", "req_id": "alive"})
    pong = await client.recv_until(lambda m: m.get("op") == "ping")
    sent_before_pong = sim.ws_connections("bybit", "public")[0].counters["data_frames_sent"]
    await eventually(lambda: sim.ws_stats()["bybit"]["public"]["silenced_frames"] >= 9)
    data_frames_during_silence = sim.ws_connections("bybit", "public")[0].counters["data_frames_sent"]
    sim.faults.clear(fault_id)
    resumed = await client.recv_until(lambda m: m.get("type") == "delta")

    assert pong["ret_msg"] == "pong" and pong["req_id"] == "alive"
    assert data_frames_during_silence == sent_before_pong
    # The first delta after the silence carries what changed while it lasted.
    assert resumed["data"]["markPrice"] == "67111.10"


async def test_a_snapshot_lost_to_silence_comes_first_when_data_resumes(start_sim, ws_connect) -> None:
    sim = await start_sim(**FAST_WS)
    fault_id = sim.faults.inject("bybit", "ws_silence", stream="public")
    client = await ws_connect(sim.endpoints.bybit.ws_public_url)

    await client.send({"op": "subscribe", "args": ["tickers.ETHUSDT"], "req_id": "s"})
    ack = await client.recv()
    await eventually(lambda: sim.ws_stats()["bybit"]["public"]["silenced_frames"] >= 3)
    sim.faults.clear(fault_id)
    first = await client.recv()

    assert ack["success"] is True
    assert first["type"] == "snapshot" and first["data"]["markPrice"] == "3480.50"


async def test_ws_silence_of_one_symbol_is_a_silent_topic_on_both_venues(start_sim, ws_connect) -> None:
    sim = await start_sim(**FAST_WS)
    bybit = await _bybit_public(sim, ws_connect, "tickers.BTCUSDT", "tickers.ETHUSDT")
    binance = await ws_connect(f"{sim.endpoints.binance.ws_market_url}/stream?streams="
                               "btcusdt@markPrice@1s/ethusdt@markPrice@1s/!markPrice@arr@1s")
    await bybit.recv_until(lambda m: m.get("topic") == "tickers.ETHUSDT")
    for venue in ("bybit", "binance"):
        sim.faults.inject(venue, "ws_silence", stream="public", symbols=["ETHUSDT"])
    await eventually(lambda: all(sim.ws_stats()[v]["public" if v == "bybit" else "market"]["silenced_frames"] >= 3
                                 for v in ("bybit", "binance")))

    seen_bybit = [(await bybit.recv_until(lambda m: "topic" in m))["topic"] for _ in range(20)]
    frames = [await binance.recv_until(lambda m: "stream" in m) for _ in range(12)]

    assert set(seen_bybit) == {"tickers.BTCUSDT"}  # the ETH topic is subscribed, acked, and silent
    singles = {f["stream"] for f in frames if not isinstance(f["data"], list)}
    rows = {row["s"] for f in frames if isinstance(f["data"], list) for row in f["data"]}
    assert singles == {"btcusdt@markPrice@1s"}
    assert "ETHUSDT" not in rows and "BTCUSDT" in rows  # the all-market array loses the silent symbol's row


async def test_ws_ignore_ping_leaves_json_and_frame_pings_unanswered(start_sim, ws_connect) -> None:
    sim = await start_sim(**FAST_WS)
    client = await ws_connect(sim.endpoints.bybit.ws_public_url, autoping=False)
    sim.faults.inject("bybit", "ws_ignore_ping", count=2)

    await client.send({"op": "ping", "req_id": "ignored"})
    await client.ws.ping(b"frame")
    await client.send({"op": "ping", "req_id": "answered"})
    await client.ws.ping(b"frame-2")
    # Pong frames leave at once, text pongs in order with other text: compare as a set.
    frames = {(m.type, m.data) for m in [await client.recv_msg() for _ in range(2)]}

    answered = json.dumps({"success": True, "ret_msg": "pong", "conn_id": sim.ws_connections()[0].conn_id,
                           "req_id": "answered", "op": "ping"}, separators=(",", ":"))
    assert frames == {(aiohttp.WSMsgType.TEXT, answered), (aiohttp.WSMsgType.PONG, b"frame-2")}
    assert sim.ws_stats()["bybit"]["public"]["pings_ignored"] == 2


async def test_ws_delay_holds_each_frame(start_sim, ws_connect) -> None:
    sim = await start_sim()
    client = await _bybit_private(sim, ws_connect)
    sim.faults.inject("bybit", "ws_delay", stream="private", delay_seconds=0.3, count=1)
    loop = asyncio.get_running_loop()

    started = loop.time()
    await client.send({"op": "ping"})
    await client.recv()
    delayed = loop.time() - started
    started = loop.time()
    await client.send({"op": "ping"})
    await client.recv()
    prompt = loop.time() - started

    assert delayed >= 0.3 and prompt < 0.3


@pytest.mark.parametrize("mode", ["invalid_json", "unknown_shape", "missing_fields"])
async def test_ws_malformed_frames_between_good_ones(start_sim, ws_connect, mode: str) -> None:
    sim = await start_sim(**FAST_WS)
    client = await ws_connect(f"{sim.endpoints.binance.ws_market_url}/ws/btcusdt@markPrice@1s")
    await client.recv()
    params: dict[str, Any] = {"fields": ["p", "i"]} if mode == "missing_fields" else {}

    sim.faults.inject("binance", "ws_malformed", mode=mode, count=1, **params)
    texts = [(await client.recv_msg()).data for _ in range(4)]

    decoded = []
    for text in texts:
        try:
            decoded.append(json.loads(text))
        except ValueError:
            decoded.append(None)
    good = [i for i, d in enumerate(decoded) if isinstance(d, dict) and d.get("e") == "markPriceUpdate"
            and "p" in d]
    bad = [i for i in range(4) if i not in good]
    # One bad frame (a frame already on its way may come first), then the good frames go on.
    assert len(bad) == 1 and bad[0] < 3 and bad[0] + 1 in good
    spoiled = decoded[bad[0]]
    if mode == "invalid_json":
        assert spoiled is None and texts[bad[0] + 1].startswith(texts[bad[0]])
    elif mode == "unknown_shape":
        assert isinstance(spoiled, dict) and spoiled["e"] != "markPriceUpdate"
    else:
        assert spoiled["e"] == "markPriceUpdate" and "p" not in spoiled and "i" not in spoiled and "s" in spoiled


async def test_ws_malformed_missing_fields_on_bybit_position_rows(start_sim, ws_connect) -> None:
    sim = await start_sim()
    client = await _bybit_private(sim, ws_connect)
    sim.faults.inject("bybit", "ws_malformed", stream="private", mode="missing_fields", fields=["size"], count=1)

    sim.market.open_position("bybit", "BTCUSDT", "long", "0.010")
    damaged = await client.recv()
    sim.market.set_size("bybit", "BTCUSDT", "0.020")
    good = await client.recv()

    assert "size" not in damaged["data"][0] and damaged["data"][0]["symbol"] == "BTCUSDT"
    assert good["data"][0]["size"] == "0.020"


async def test_ws_reject_auth_on_both_venues(start_sim, ws_connect, http) -> None:
    sim = await start_sim()
    ep = sim.endpoints.bybit
    sim.faults.inject("all", "ws_reject_auth", count=1)
    client = await ws_connect(ep.ws_private_url)

    await client.send({"op": "auth", "req_id": "1", "args": bybit_auth_args(ep.api_key, ep.api_secret,
                                                                            now_ms() + 1000)})
    refused = await client.recv()
    await client.send({"op": "auth", "req_id": "2", "args": bybit_auth_args(ep.api_key, ep.api_secret,
                                                                            now_ms() + 1000)})
    accepted = await client.recv()
    with pytest.raises(aiohttp.WSServerHandshakeError) as binance_refused:
        await _binance_private(sim, ws_connect, http)
    binance_ok = await _binance_private(sim, ws_connect, http)

    assert (refused["success"], refused["ret_msg"], refused["op"]) == (False, "Params Error", "auth")
    assert accepted["success"] is True
    assert binance_refused.value.status == 400 and not binance_ok.ws.closed


async def test_ws_reject_subscribe_on_both_venues(start_sim, ws_connect) -> None:
    sim = await start_sim()
    sim.faults.inject("bybit", "ws_reject_subscribe", stream="public", message="error:busy", count=1)
    sim.faults.inject("binance", "ws_reject_subscribe", code=2, message="Invalid request: busy", count=1)
    bybit = await ws_connect(sim.endpoints.bybit.ws_public_url)
    binance = await ws_connect(f"{sim.endpoints.binance.ws_market_url}/ws")

    await bybit.send({"op": "subscribe", "args": ["tickers.BTCUSDT"], "req_id": "x"})
    bybit_refused = await bybit.recv()
    await binance.send({"method": "SUBSCRIBE", "params": ["btcusdt@markPrice"], "id": 4})
    binance_refused = await binance.recv()
    await binance.send({"method": "SUBSCRIBE", "params": ["btcusdt@markPrice"], "id": 5})
    binance_ok = await binance.recv()

    assert bybit_refused == {"success": False, "ret_msg": "error:busy", "conn_id": bybit_refused["conn_id"],
                             "req_id": "x", "op": "subscribe"}
    assert binance_refused == {"code": 2, "msg": "Invalid request: busy", "id": 4}
    assert binance_ok == {"result": None, "id": 5}


async def test_ws_drop_event_loses_the_push_but_rest_shows_the_change(start_sim, ws_connect, http) -> None:
    sim = await start_sim()
    bybit_ws = await _bybit_private(sim, ws_connect)
    binance_ws = await _binance_private(sim, ws_connect, http)
    sim.faults.inject("all", "ws_drop_event", count=1)

    sim.market.open_position("bybit", "SOLUSDT", "long", "3.0")
    sim.market.open_position("binance", "SOLUSDT", "long", "3")
    sim.market.set_size("bybit", "SOLUSDT", "4.0")
    sim.market.set_size("binance", "SOLUSDT", "4")
    bybit_first = await bybit_ws.recv()
    binance_first = await binance_ws.recv()
    _, _, rest = await BybitClient(http, sim).get("/v5/position/list", "category=linear&symbol=SOLUSDT")

    assert bybit_first["data"][0]["size"] == "4.0"
    assert binance_first["a"]["P"][0]["pa"] == "4"
    assert rest["result"]["list"][0]["size"] == "4.0"
    assert sim.ws_stats()["bybit"]["private"]["dropped_events"] == 1
    assert sim.ws_stats()["binance"]["private"]["dropped_events"] == 1


async def test_listen_key_expire_fault(start_sim, ws_connect, http) -> None:
    sim = await start_sim()
    client = await _binance_private(sim, ws_connect, http)

    async with http.post(f"{sim.endpoints.control_url}/faults",
                         json={"venue": "binance", "kind": "listen_key_expire", "e_as_string": True}) as r:
        assert r.status == 200
    expired = await client.recv()
    status, _, keepalive = await BinanceClient(http, sim).request("PUT", "/fapi/v1/listenKey")
    sim.market.open_position("binance", "BTCUSDT", "long", "0.010")
    fresh = await _binance_private(sim, ws_connect, http)
    sim.market.close_position("binance", "BTCUSDT")
    await fresh.recv()
    await client.send({"method": "LIST_SUBSCRIPTIONS", "id": 1})
    after = await client.recv()

    assert expired["e"] == "listenKeyExpired" and isinstance(expired["E"], str) and expired["E"].isdigit()
    assert status == 400 and keepalive["code"] == -1125
    assert after["id"] == 1 and sim.faults.active() == []


async def test_ws_price_drift_moves_ws_marks_away_from_rest(start_sim, ws_connect, http) -> None:
    sim = await start_sim(**FAST_WS)
    sim.faults.inject("all", "ws_price_drift", ratio=0.01, symbols=["BTCUSDT"])
    binance = await ws_connect(f"{sim.endpoints.binance.ws_market_url}/ws/btcusdt@markPrice@1s/"
                               "ethusdt@markPrice@1s")
    bybit = await _bybit_public(sim, ws_connect, "tickers.BTCUSDT")

    btc = await binance.recv_until(lambda m: m["s"] == "BTCUSDT")
    eth = await binance.recv_until(lambda m: m["s"] == "ETHUSDT")
    snapshot = await bybit.recv_until(lambda m: m.get("type") == "snapshot")
    _, _, rest = await BinanceClient(http, sim).request("GET", "/fapi/v1/premiumIndex", "symbol=BTCUSDT")

    assert Decimal(btc["p"]) == (Decimal(rest["markPrice"]) * Decimal("1.01")).quantize(Decimal("0.1"))
    assert Decimal(eth["p"]) == sim.market.quote("binance", "ETHUSDT").mark_price
    assert Decimal(snapshot["data"]["markPrice"]) == (Decimal("67250.00") * Decimal("1.01")).quantize(
        Decimal("0.01"))


async def test_clock_skew_moves_binance_event_times(start_sim, ws_connect) -> None:
    sim = await start_sim(**FAST_WS)
    sim.faults.inject("binance", "clock_skew", offset_ms=-120_000)
    client = await ws_connect(f"{sim.endpoints.binance.ws_market_url}/ws/bnbusdt@markPrice@1s")

    event = await client.recv()

    assert -125_000 < event["E"] - now_ms() < -115_000


def test_ws_fault_requests_are_validated(sim) -> None:
    faults = sim.faults
    with pytest.raises(FaultError, match="stream"):
        faults.inject("bybit", "clock_skew", offset_ms=1, stream="public")
    with pytest.raises(FaultError, match="binance"):
        faults.inject("bybit", "listen_key_expire")
    with pytest.raises(FaultError, match="stream"):
        faults.inject("bybit", "ws_silence", stream="orders")
    with pytest.raises(FaultError, match="duration"):
        faults.inject("binance", "listen_key_expire", duration_seconds=1)
    fault_id = faults.inject("all", "ws_silence", stream="market", duration_seconds=5)
    # "market" names each venue's price stream: Bybit calls it public.
    assert {(f.venue, f.stream) for f in faults.active()} == {("bybit", "public"), ("binance", "market")}
    faults.clear(fault_id)
    faults.inject("all", "listen_key_expire")
    assert faults.active() == []


async def test_fault_kinds_lists_the_ws_kinds(sim, http) -> None:
    async with http.get(f"{sim.endpoints.control_url}/faults/kinds") as r:
        kinds = (await r.json())["kinds"]

    ws_kinds = {"ws_drop", "ws_silence", "ws_ignore_ping", "ws_delay", "ws_malformed", "ws_reject_auth",
                "ws_reject_subscribe", "ws_drop_event", "listen_key_expire", "ws_price_drift"}
    assert ws_kinds <= set(kinds)
    assert kinds["listen_key_expire"]["venues"] == ["binance"] and kinds["ws_delay"]["stream_filter"] is True
