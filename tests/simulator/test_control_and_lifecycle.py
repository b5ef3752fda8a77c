"""The HTTP control API, the simulator's lifecycle, and ``run_standalone``."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys

import aiohttp

from agent.simulator import Simulator, SimulatorConfig, run_standalone

from .conftest import BybitClient, eventually

CONTRACT_KEYS = {
    "bybit": {"rest_url", "ws_public_url", "ws_private_url", "api_key", "api_secret"},
    "binance": {"rest_url", "ws_market_url", "ws_private_url", "api_key", "api_secret"},
}


def check_contract(doc: dict) -> None:
    assert set(doc) == {"bybit", "binance", "control_url"}
    for venue, keys in CONTRACT_KEYS.items():
        assert set(doc[venue]) == keys and all(isinstance(v, str) and v for v in doc[venue].values())
    port = doc["control_url"].split(":")[2].split("/")[0]
    assert doc["bybit"]["rest_url"] == f"http://127.0.0.1:{port}/bybit"
    assert doc["bybit"]["ws_public_url"] == f"ws://127.0.0.1:{port}/bybit/v5/public/linear"
    assert doc["bybit"]["ws_private_url"] == f"ws://127.0.0.1:{port}/bybit/v5/private"
    assert doc["binance"]["rest_url"] == f"http://127.0.0.1:{port}/binance"
    assert doc["binance"]["ws_market_url"] == f"ws://127.0.0.1:{port}/binance/market"
    assert doc["binance"]["ws_private_url"] == f"ws://127.0.0.1:{port}/binance/private"
    assert doc["control_url"] == f"http://127.0.0.1:{port}/_sim"


async def test_faults_over_http(sim: Simulator, http: aiohttp.ClientSession, bybit: BybitClient) -> None:
    assert sim.endpoints is not None
    faults = f"{sim.endpoints.control_url}/faults"
    async with http.post(faults, json={"venue": "bybit", "kind": "rest_error", "status": 200, "count": 3}) as r:
        assert r.status == 200
        fault_id = (await r.json())["id"]
    async with http.get(faults) as r:
        (listed,) = (await r.json())["faults"]
    assert (listed["id"], listed["kind"], listed["remaining_count"]) == (fault_id, "rest_error", 3)

    codes = [(await bybit.get("/v5/position/list", "category=linear&settleCoin=USDT"))[2]["retCode"]
             for _ in range(4)]
    assert codes == [10006, 10006, 10006, 0]

    async with http.post(faults, json={"venue": "binance", "kind": "slow_rest", "delay_seconds": 5}) as r:
        second = (await r.json())["id"]
    async with http.delete(f"{faults}/{second}") as r:
        assert (await r.json()) == {"cleared": 1}
    async with http.delete(f"{faults}/{second}") as r:
        assert r.status == 404
    async with http.post(faults, json={"venue": "bybit", "kind": "rest_eror", "status": 500}) as r:
        assert r.status == 400 and "unknown fault kind" in (await r.json())["error"]
    async with http.post(faults, data="not json") as r:
        assert r.status == 400
    async with http.get(f"{faults}/kinds") as r:
        kinds = (await r.json())["kinds"]
    assert {"rest_error", "clock_skew", "reject_auth", "malformed_rest", "slow_rest"} <= set(kinds)
    sim.faults.inject("all", "clock_skew", offset_ms=5)
    async with http.delete(faults) as r:
        assert (await r.json()) == {"cleared": 2} and sim.faults.active() == []


async def test_market_control_and_record_over_http(sim: Simulator, http: aiohttp.ClientSession) -> None:
    assert sim.endpoints is not None
    base = sim.endpoints.control_url
    async with http.post(f"{base}/market/bybit/mode", json={"hedge": True, "symbol": "BTCUSDT"}) as r:
        assert r.status == 200
    steps = [{"action": "open", "symbol": "BTCUSDT", "side": "short", "size": "0.003"},
             {"action": "resize", "symbol": "BTCUSDT", "side": "short", "size": "0.001"},
             {"action": "close", "symbol": "BTCUSDT", "position_idx": 2}]
    for step in steps:
        async with http.post(f"{base}/market/bybit/positions", json=step) as r:
            assert r.status == 200, await r.text()
    async with http.post(f"{base}/market/bybit/positions", json={"action": "close", "symbol": "BTCUSDT",
                                                                 "side": "short"}) as r:
        assert r.status == 400  # nothing open any more
    async with http.post(f"{base}/market/binance/prices", json={"symbol": "ETHUSDT", "mark_price": "2999.999"}) as r:
        assert (await r.json())["mark_price"] == "3000.00"
    async with http.get(f"{base}/record", params={"venue": "bybit"}) as r:
        record = await r.json()

    assert [(c["change"], c["position_idx"], c["side"], c["size"]) for c in record["changes"]] == [
        ("opened", 2, "short", "0.003"), ("updated", 2, "short", "0.001"), ("closed", 2, "short", "0")]
    assert record["next"] == len(sim.record) == 3
    async with http.get(f"{base}/record", params={"since": "3"}) as r:
        assert (await r.json())["changes"] == []
    async with http.post(f"{base}/market/okx/prices", json={}) as r:
        assert r.status == 404


async def test_autopilot_runs_and_pauses_over_http(start_sim, http: aiohttp.ClientSession) -> None:
    sim = await start_sim(position_change_interval_seconds=0.02, price_tick_interval_seconds=0.02)
    assert sim.endpoints is not None
    await eventually(lambda: {c.change for c in sim.record} == {"opened", "updated", "closed"})
    async with http.post(f"{sim.endpoints.control_url}/autopilot", json={"action": "pause"}) as r:
        assert (await r.json()) == {"prices_paused": True, "positions_paused": True}
    frozen = len(sim.record)
    price = sim.market.quote("bybit", "BTCUSDT").mark_price
    # A negative check: five autopilot periods in which nothing may change.
    await asyncio.sleep(0.1)
    assert len(sim.record) == frozen and sim.market.quote("bybit", "BTCUSDT").mark_price == price
    async with http.post(f"{sim.endpoints.control_url}/autopilot", json={"action": "resume"}) as r:
        assert r.status == 200
    await eventually(lambda: len(sim.record) > frozen)


async def test_stop_is_safe_unstarted_and_twice() -> None:
    unstarted = Simulator()
    await unstarted.stop()
    sim = Simulator(SimulatorConfig(seed=1))
    endpoints = await sim.start()
    assert [t.get_name() for t in sim._tasks] == [
        "simulator/price-walk", "simulator/autopilot", "simulator/ws-housekeeping", "simulator/bybit-tickers",
        "simulator/binance-mark-1s", "simulator/binance-mark-3s"]
    await sim.stop()
    await sim.stop()
    assert sim._tasks == []
    async with aiohttp.ClientSession() as session:
        try:
            async with session.get(f"{endpoints.control_url}/faults") as r:
                reached = r.status
        except aiohttp.ClientConnectionError:
            reached = None
    assert reached is None


async def test_given_credentials_are_used_and_to_json_is_one_line() -> None:
    sim = Simulator(SimulatorConfig(bybit_api_key="BK", bybit_api_secret="BS", binance_api_key="NK",
                                    binance_api_secret="NS", price_tick_interval_seconds=0,
                                    position_change_interval_seconds=0))
    endpoints = await sim.start(host="127.0.0.1", port=0)
    try:
        text = endpoints.to_json()
        assert "\n" not in text
        doc = json.loads(text)
        check_contract(doc)
        assert (doc["bybit"]["api_key"], doc["binance"]["api_secret"]) == ("BK", "NS")
    finally:
        await sim.stop()


async def test_run_standalone_in_process_prints_the_contract_and_stops_on_cancel(capsys) -> None:
    task = asyncio.create_task(run_standalone(config=SimulatorConfig(price_tick_interval_seconds=0,
                                                                     position_change_interval_seconds=0)))
    out: list[str] = []

    def printed_a_line() -> bool:
        out.append(capsys.readouterr().out)  # readouterr() drains, so keep what it returned
        return "\n" in "".join(out) or task.done()

    await eventually(printed_a_line)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    lines = "".join(out).splitlines()
    assert len(lines) == 1
    check_contract(json.loads(lines[0]))


async def test_run_standalone_prints_exactly_one_json_line_and_exits_on_sigterm() -> None:
    code = "import asyncio; from agent.simulator import run_standalone; asyncio.run(run_standalone(port=0))"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", code, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), timeout=20)
        doc = json.loads(line)
        check_contract(doc)
        async with aiohttp.ClientSession() as session, \
                session.get(f"{doc['bybit']['rest_url']}/v5/market/time") as r:
            assert (await r.json())["retCode"] == 0
        proc.send_signal(signal.SIGTERM)
        rest, _ = await asyncio.wait_for(proc.communicate(), timeout=20)
        assert proc.returncode == 0 and rest == b""
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
