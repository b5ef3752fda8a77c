"""REST mode end to end: the agent against the simulator over real loopback sockets."""

from __future__ import annotations

import os
import time
from decimal import Decimal

import aiohttp
import pytest

from agent.core.events import PositionEvent
from agent.simulator import Simulator, SimulatorConfig
from tests.integration.harness import eventually, exchange_block, free_port, running_agent, write_config
from tests.integration.lifecycle import agent_facts, per_key
from tests.integration.lifecycle import simulator_facts as lifecycle_simulator_facts

QUIET_SIMULATOR = {"position_change_interval_seconds": 0, "initial_positions_per_venue": 0, "seed": 7}


def lifecycle(events: list[PositionEvent], symbol: str, idx: int) -> list[tuple[str, str, Decimal]]:
    """The lifecycle facts of one position: opened, size changes, closed (price-driven updates left out)."""
    return per_key(agent_facts(events)).get((symbol, idx), [])


def simulator_facts(sim: Simulator, venue: str, symbol: str, idx: int) -> list[tuple[str, str, Decimal]]:
    return per_key(lifecycle_simulator_facts(sim, venue)).get((symbol, idx), [])


@pytest.mark.parametrize("venue", ["bybit", "binance"])
async def test_open_resize_close_matches_the_simulator_record(tmp_path, venue):
    cfg = write_config(tmp_path, {f"{venue}-sim": exchange_block(venue)}, simulator=QUIET_SIMULATOR)
    async with running_agent(cfg) as (agent, log):
        sim = agent.simulator
        name = f"{venue}-sim"
        await eventually(lambda: agent.pipelines[name].ready, what="first snapshot")

        sim.market.open_position(venue, "BTCUSDT", "long", "0.5")
        await eventually(lambda: any(e.change == "opened" for e in log.positions(name)), what="opened")
        sim.market.set_size(venue, "BTCUSDT", "0.8")
        await eventually(lambda: any(e.size == "0.8" or Decimal(e.size) == Decimal("0.8") for e in log.positions(name)),
                         what="resize")
        sim.market.close_position(venue, "BTCUSDT")
        await eventually(lambda: any(e.change == "closed" for e in log.positions(name)), what="closed")

        got = lifecycle(log.positions(name), "BTCUSDT", 0)
        assert got == simulator_facts(sim, venue, "BTCUSDT", 0)
        assert [f[0] for f in got] == ["opened", "updated", "closed"]
        closed = [e for e in log.positions(name) if e.change == "closed"][0]
        assert (closed.side, closed.size, closed.source) == ("long", "0", "rest")
        seqs = [e.seq for e in log.positions(name)]
        assert seqs == sorted(set(seqs)), "seq strictly increasing"
        assert log.of_kind("mark_price", name), "mark prices flow alongside positions"


async def test_hedge_mode_on_both_venues(tmp_path):
    cfg = write_config(tmp_path, simulator=QUIET_SIMULATOR)
    async with running_agent(cfg) as (agent, log):
        sim = agent.simulator
        await eventually(agent.is_ready, what="ready")
        sim.market.set_hedge_mode("bybit", True, symbol="ETHUSDT")
        sim.market.set_hedge_mode("binance", True)
        for venue in ("bybit", "binance"):
            sim.market.open_position(venue, "ETHUSDT", "long", "2")
            sim.market.open_position(venue, "ETHUSDT", "short", "3")
        await eventually(lambda: len([e for e in log.positions() if e.change == "opened"]) == 4, what="4 opens")
        for venue in ("bybit", "binance"):
            sim.market.close_position(venue, "ETHUSDT", side="long")
        await eventually(lambda: len([e for e in log.positions() if e.change == "closed"]) == 2, what="2 closes")

        for venue in ("bybit", "binance"):
            name = f"{venue}-sim"
            assert lifecycle(log.positions(name), "ETHUSDT", 1) == simulator_facts(sim, venue, "ETHUSDT", 1)
            assert lifecycle(log.positions(name), "ETHUSDT", 2) == simulator_facts(sim, venue, "ETHUSDT", 2)
            open_now = {(p.symbol, p.position_idx, p.side) for p in agent.pipelines[name].book.positions()}
            assert open_now == {("ETHUSDT", 2, "short")}, "closing one side never touches the other"


async def test_admin_endpoints_after_first_snapshot(tmp_path):
    cfg = write_config(tmp_path)
    async with running_agent(cfg) as (agent, log):
        async with aiohttp.ClientSession() as http:
            assert (await http.get(f"{agent.admin.url}/-/healthy")).status == 200
            await eventually(agent.is_ready, what="ready")
            assert (await http.get(f"{agent.admin.url}/-/ready")).status == 200
            status = await (await http.get(f"{agent.admin.url}/status")).json()
            for name in ("bybit-sim", "binance-sim"):
                entry = status["exchanges"][name]
                assert entry["ready"] is True and entry["effective_mode"] == "rest"
                assert entry["polls"]["positions"]["outcomes"]["ok"] >= 1
                assert entry["polls"]["positions"]["last_success_unix_s"] is not None
            positions = await (await http.get(f"{agent.admin.url}/v1/positions")).json()
            assert set(positions) == {"bybit-sim", "binance-sim"}
            prices = await (await http.get(f"{agent.admin.url}/v1/prices")).json()
            assert set(prices["bybit-sim"]) >= {"BTCUSDT", "ETHUSDT"}
            metrics = await (await http.get(f"{agent.admin.url}/metrics")).text()
        for name in ("bybit-sim", "binance-sim"):
            assert f'feedagent_polls_total{{exchange="{name}",kind="positions",outcome="ok"}}' in metrics
            assert f'feedagent_last_successful_poll_timestamp_seconds{{exchange="{name}",kind="prices"}}' in metrics
            assert f'feedagent_exchange_ready{{exchange="{name}"}} 1.0' in metrics


async def test_live_event_stream_endpoint(tmp_path):
    cfg = write_config(tmp_path, simulator=QUIET_SIMULATOR)
    async with running_agent(cfg) as (agent, log):
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{agent.admin.url}/v1/events?exchange=bybit-sim") as resp:
                agent.simulator.market.open_position("bybit", "SOLUSDT", "short", "10")
                seen = []
                async for line in resp.content:
                    seen.append(line)
                    if b'"change":"opened"' in line:
                        break
        assert all(b'"exchange":"bybit-sim"' in line for line in seen)


async def test_unreachable_exchange_never_stops_another(tmp_path):
    dead = free_port()
    exchanges = {
        "bybit-sim": exchange_block("bybit"),
        "binance-dead": {
            "venue": "binance", "environment": "custom", "symbols": ["BTCUSDT"],
            "endpoints": {"rest_url": f"http://127.0.0.1:{dead}", "ws_market_url": f"ws://127.0.0.1:{dead}/market",
                          "ws_private_url": f"ws://127.0.0.1:{dead}/private"},
            "credentials": {"api_key_env": "T_DEAD_KEY", "api_secret_env": "T_DEAD_SECRET"},
            "rest": {"positions_interval_seconds": 0.1, "prices_interval_seconds": 0.1,
                     "request_timeout_seconds": 0.5},
        },
    }
    cfg = write_config(tmp_path, exchanges)
    env = {**os.environ, "T_DEAD_KEY": "k" * 16, "T_DEAD_SECRET": "s" * 32}
    async with running_agent(cfg, environ=env) as (agent, log):
        await eventually(lambda: agent.pipelines["bybit-sim"].ready, what="bybit ready")
        await eventually(lambda: len(log.of_kind("mark_price", "bybit-sim")) >= 10, what="bybit keeps flowing")
        dead_status = agent.status()["exchanges"]["binance-dead"]
        assert dead_status["ready"] is False
        assert dead_status["polls"]["positions"]["outcomes"].get("unavailable", 0) >= 1
        assert "ExchangeUnavailable" in dead_status["polls"]["positions"]["last_error"]
        assert agent.is_ready() is False, "readiness waits for every exchange"


async def test_custom_environment_and_a_bad_key_stay_isolated(tmp_path):
    sim = Simulator(SimulatorConfig(seed=3, initial_positions_per_venue=1, position_change_interval_seconds=0))
    eps = await sim.start()
    try:
        def custom(venue: str, key_var: str, secret_var: str) -> dict:
            v = getattr(eps, venue)
            ws_key = "ws_public_url" if venue == "bybit" else "ws_market_url"
            ws_url = v.ws_public_url if venue == "bybit" else v.ws_market_url
            return {"venue": venue, "environment": "custom", "symbols": ["BTCUSDT"],
                    "endpoints": {"rest_url": v.rest_url, ws_key: ws_url, "ws_private_url": v.ws_private_url},
                    "credentials": {"api_key_env": key_var, "api_secret_env": secret_var},
                    "rest": {"positions_interval_seconds": 0.1, "prices_interval_seconds": 0.1}}
        exchanges = {"bybit-good": custom("bybit", "T_BY_KEY", "T_BY_SECRET"),
                     "binance-badkey": custom("binance", "T_BN_KEY", "T_BN_SECRET")}
        cfg = write_config(tmp_path, exchanges)
        env = {**os.environ, "T_BY_KEY": eps.bybit.api_key, "T_BY_SECRET": eps.bybit.api_secret,
               "T_BN_KEY": eps.binance.api_key, "T_BN_SECRET": "wrong-" + eps.binance.api_secret[6:]}
        async with running_agent(cfg, environ=env) as (agent, log):
            await eventually(lambda: log.positions("bybit-good"), what="bybit position from the custom venue")
            await eventually(lambda: agent.pipelines["binance-badkey"].rest.status["positions"].outcomes["auth_error"],
                             what="auth error recorded")
            # public mark prices still work without a valid signature
            await eventually(lambda: log.of_kind("mark_price", "binance-badkey"), what="binance public prices")
            assert not log.positions("binance-badkey")
            status = agent.status()
            assert eps.binance.api_secret not in str(status)
    finally:
        await sim.stop()


async def test_rate_limit_backs_off_then_recovers_without_duplicates(tmp_path):
    cfg = write_config(tmp_path, simulator=QUIET_SIMULATOR)
    async with running_agent(cfg) as (agent, log):
        sim = agent.simulator
        await eventually(agent.is_ready, what="ready")
        sim.market.open_position("bybit", "BTCUSDT", "long", "1")
        await eventually(lambda: log.positions("bybit-sim"), what="opened")
        sim.faults.inject("bybit", "rest_error", status=200, code=10006, count=3, endpoint="/v5/position/list")
        sim.faults.inject("binance", "rest_error", status=429, count=2, retry_after_seconds=1,
                          endpoint="/fapi/v3/positionRisk")
        polls = {n: agent.pipelines[n].rest.status["positions"].outcomes for n in ("bybit-sim", "binance-sim")}
        await eventually(lambda: polls["bybit-sim"]["rate_limited"] >= 1 and polls["binance-sim"]["rate_limited"] >= 1,
                         what="rate limits seen")
        ok_before = {n: polls[n]["ok"] for n in polls}
        await eventually(lambda: all(polls[n]["ok"] > ok_before[n] for n in polls), timeout_seconds=15,
                         what="polling recovers after the back-off")
        sim.market.close_position("bybit", "BTCUSDT")
        await eventually(lambda: any(e.change == "closed" for e in log.positions("bybit-sim")), what="closed")
        assert lifecycle(log.positions("bybit-sim"), "BTCUSDT", 0) == simulator_facts(sim, "bybit", "BTCUSDT", 0)


async def test_ban_is_honoured_and_shown(tmp_path):
    cfg = write_config(tmp_path, simulator=QUIET_SIMULATOR)
    async with running_agent(cfg) as (agent, log):
        await eventually(agent.is_ready, what="ready")
        agent.simulator.faults.inject("binance", "rest_error", status=418, count=1, retry_after_seconds=300)
        pipe = agent.pipelines["binance-sim"]
        await eventually(lambda: pipe.rest.status["positions"].outcomes["banned"] + pipe.rest.status["prices"].outcomes["banned"],
                         what="ban seen")
        status = agent.status()["exchanges"]["binance-sim"]["rest"]
        assert status["backoff_until_unix_s"] > time.time() + 100
        sent_before = agent.metrics.registry.get_sample_value(
            "feedagent_rest_requests_held_total", {"exchange": "binance-sim", "reason": "banned"}) or 0
        await eventually(lambda: (agent.metrics.registry.get_sample_value(
            "feedagent_rest_requests_held_total", {"exchange": "binance-sim", "reason": "banned"}) or 0) > sent_before + 3,
            what="calls held locally during the ban")
        n = len(log.of_kind("mark_price", "bybit-sim"))
        await eventually(lambda: len(log.of_kind("mark_price", "bybit-sim")) > n + 5, what="bybit unaffected")


async def test_malformed_rows_are_counted_and_never_close_a_position(tmp_path):
    cfg = write_config(tmp_path, simulator=QUIET_SIMULATOR)
    async with running_agent(cfg) as (agent, log):
        sim = agent.simulator
        await eventually(agent.is_ready, what="ready")
        sim.market.open_position("bybit", "BTCUSDT", "long", "1")
        await eventually(lambda: log.positions("bybit-sim"), what="opened")
        sim.faults.inject("bybit", "malformed_rest", mode="missing_fields", fields=["symbol"], all_rows=True, count=5,
                          endpoint="/v5/position/list")
        sim.faults.inject("binance", "malformed_rest", mode="invalid_json", count=5)

        def malformed() -> float:
            return agent.metrics.registry.get_sample_value(
                "feedagent_messages_malformed_total", {"exchange": "bybit-sim", "source": "rest"}) or 0
        await eventually(lambda: malformed() >= 1, what="malformed rows counted")
        await eventually(lambda: agent.pipelines["binance-sim"].rest.status["positions"].outcomes["malformed"]
                         + agent.pipelines["binance-sim"].rest.status["prices"].outcomes["malformed"] >= 1,
                         what="malformed body counted")
        assert not any(e.change == "closed" for e in log.positions("bybit-sim")), "a skipped row is not a close"
        sim.market.close_position("bybit", "BTCUSDT")
        await eventually(lambda: any(e.change == "closed" for e in log.positions("bybit-sim")), what="real close")
        assert [f[0] for f in lifecycle(log.positions("bybit-sim"), "BTCUSDT", 0)] == ["opened", "closed"]
