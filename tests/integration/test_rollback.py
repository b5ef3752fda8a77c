"""Automatic rollback to REST under the simulator's faults, and operator mode control.

Each fault must move the sick exchange to rest within its detection time plus one poll, lose and
duplicate no lifecycle event (checked against the simulator's record), and leave the other
exchange streaming over WebSocket untouched.
"""

from __future__ import annotations

import os
import time

import aiohttp
import pytest
import yaml

from agent.core.events import MarkPriceEvent, ModeEvent
from agent.mode.controller import WS_CHECKS
from tests.integration.harness import agent_on_simulator, eventually
from tests.integration.lifecycle import assert_same_lifecycle

TOKEN = "test-admin-token-0123456789"

# Detection: a check fails after `consecutive` readings, one per second here.
FAST_HEALTH = {
    "check_interval_seconds": 0.25, "window_seconds": 5,
    "ws_data_age_seconds": {"threshold": 1.5, "consecutive": 2},
    "ws_private_down_seconds": {"threshold": 1.0, "consecutive": 2},
    "ws_reconnects_per_window": {"threshold": 6, "consecutive": 1},
    "ws_auth_failures_per_window": {"threshold": 2, "consecutive": 1},
}
ROLLBACK = {"rollback": {"enabled": True}, "health": FAST_HEALTH,
            "rest": {"positions_interval_seconds": 0.25, "prices_interval_seconds": 0.25}}

FAULTS = {  # each a list of simulator injections (kind, params)
    "silent_public": [("ws_silence", {"stream": "public", "duration_seconds": 30})],
    "dead_private": [("ws_drop", {"stream": "private", "duration_seconds": 30})],
    # auth is refused from now on; dropping the live connection makes every reconnect re-authenticate
    "auth_failure_storm": [("ws_reject_auth", {"duration_seconds": 30}), ("ws_drop", {"stream": "private"})],
    "reconnect_storm": [("ws_drop", {"stream": "public", "duration_seconds": 30})],
}


def first_rest_mark_after(log, exchange: str, t_ms: int) -> MarkPriceEvent | None:
    return next((e for e in log.of_kind("mark_price", exchange) if e.source == "rest" and e.ts_received_ms >= t_ms),
                None)


@pytest.mark.parametrize("fault", sorted(FAULTS))
async def test_fault_rolls_back_to_rest_without_losing_events(tmp_path, fault):
    async with agent_on_simulator(tmp_path, overrides={"bybit": ROLLBACK, "binance": ROLLBACK}) as (agent, log, sim):
        await eventually(agent.is_ready, what="ready")
        sim.market.open_position("bybit", "BTCUSDT", "long", "0.5")
        await eventually(lambda: any(e.change == "opened" for e in log.positions("bybit-x")), what="open over ws")
        injected_ms = int(time.time() * 1000)
        for kind, params in FAULTS[fault]:
            sim.faults.inject("bybit", kind, **params)
        sim.market.set_size("bybit", "BTCUSDT", "0.7")  # a lifecycle change right as the fault starts

        await eventually(lambda: agent.pipelines["bybit-x"].mode == "rest", timeout_seconds=15,
                         what=f"rollback to rest after {fault}")
        first_rest = await eventually(lambda: first_rest_mark_after(log, "bybit-x", injected_ms), what="rest events")
        failover_seconds = (first_rest.ts_received_ms - injected_ms) / 1000
        mode_events = [e for e in log.of_kind("mode", "bybit-x") if isinstance(e, ModeEvent)]
        assert len(mode_events) == 1 and mode_events[0].automatic and mode_events[0].to == "rest"
        # a WebSocket health check (the fault's own, or reconciliation finding the change the WS missed)
        assert mode_events[0].reason in WS_CHECKS
        await eventually(lambda: agent.controllers["bybit-x"].breaker.state_name == "open", what="breaker open")
        # the detection budget: consecutive readings x interval, plus connect/backoff slack, plus one poll
        assert failover_seconds < 8.0, failover_seconds

        sim.market.close_position("bybit", "BTCUSDT")
        await eventually(lambda: any(e.change == "closed" for e in log.positions("bybit-x")), what="close via rest")
        assert_same_lifecycle(log.positions("bybit-x"), sim, "bybit")

        # the other exchange never noticed
        assert agent.pipelines["binance-x"].mode == "hybrid"
        assert not log.of_kind("mode", "binance-x")
        n = len([e for e in log.of_kind("mark_price", "binance-x") if e.source == "ws"])
        await eventually(lambda: len([e for e in log.of_kind("mark_price", "binance-x") if e.source == "ws"]) > n,
                         what="binance still streams over ws")
        assert agent.metrics.registry.get_sample_value(
            "feedagent_mode_transitions_total",
            {"exchange": "bybit-x", "from": "hybrid", "to": "rest", "reason": mode_events[0].reason}) == 1


async def test_rollback_is_sticky_and_survives_a_restart(tmp_path):
    async with agent_on_simulator(tmp_path, modes={"bybit": "hybrid"}, overrides={"bybit": ROLLBACK}) as (agent, log, sim):
        await eventually(agent.is_ready, what="ready")
        sim.faults.inject("bybit", "ws_drop", stream="private", duration_seconds=2)
        await eventually(lambda: agent.pipelines["bybit-x"].mode == "rest", timeout_seconds=15, what="rollback")
        trips = agent.controllers["bybit-x"].breaker.state.trips
        t = time.monotonic()
        await eventually(lambda: time.monotonic() - t > 4, what="the fault is long over")
        assert agent.pipelines["bybit-x"].mode == "rest", "no automatic recovery by default"
    # same state_dir, same config: the agent starts where the breaker left it
    async with agent_on_simulator(tmp_path, modes={"bybit": "hybrid"}, overrides={"bybit": ROLLBACK}) as (agent, log, sim):
        assert agent.controllers["bybit-x"].breaker.state.trips == trips
        assert agent.controllers["bybit-x"].breaker.state.open_since_ms is not None


async def _post(http, url, body, token=TOKEN):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with http.post(url, json=body, headers=headers) as resp:
        return resp.status, await resp.json()


async def test_operator_mode_changes_need_the_token_and_pins_win(tmp_path, monkeypatch):
    monkeypatch.setenv("FEEDAGENT_ADMIN_TOKEN", TOKEN)
    async with agent_on_simulator(tmp_path, modes={"bybit": "rest"}, overrides={"bybit": ROLLBACK}) as (agent, log, sim):
        await eventually(agent.is_ready, what="ready")
        url = f"{agent.admin.url}/v1/exchanges/bybit-x/mode"
        async with aiohttp.ClientSession() as http:
            assert (await _post(http, url, {"mode": "hybrid"}, token=None))[0] == 401
            assert (await _post(http, url, {"mode": "hybrid"}, token="wrong"))[0] == 403
            assert (await _post(http, f"{agent.admin.url}/v1/exchanges/nope/mode", {"mode": "rest"}))[0] == 404
            assert (await _post(http, url, {"mode": "turbo"}))[0] == 400
            status, body = await _post(http, url, {"mode": "hybrid", "pin": True, "reason": "drill"})
            assert status == 200 and body["mode"] == "hybrid" and body["pinned"] == "hybrid"
            sim.faults.inject("bybit", "ws_drop", stream="private", duration_seconds=3)
            t = time.monotonic()
            await eventually(lambda: time.monotonic() - t > 4, what="a fault long past detection")
            assert agent.pipelines["bybit-x"].mode == "hybrid", "automation never overrides a pin"
            status, body = await _post(http, url, {"mode": "hybrid", "pin": False})
            assert body["pinned"] is None
        assert TOKEN not in str(agent.status())


async def test_state_changing_calls_refused_without_a_configured_token(tmp_path, monkeypatch):
    monkeypatch.delenv("FEEDAGENT_ADMIN_TOKEN", raising=False)
    async with agent_on_simulator(tmp_path, modes={"bybit": "rest"}) as (agent, log, sim):
        async with aiohttp.ClientSession() as http:
            status, body = await _post(http, f"{agent.admin.url}/v1/exchanges/bybit-x/mode", {"mode": "hybrid"})
            assert status == 403 and "no admin token" in body["error"]
            status, _ = await _post(http, f"{agent.admin.url}/-/reload", {})
            assert status == 403


def _rewrite_mode(path, exchange: str, mode: str) -> None:
    doc = yaml.safe_load(path.read_text())
    doc["exchanges"][exchange]["mode"] = mode
    path.write_text(yaml.safe_dump(doc, sort_keys=False))


async def _flip_and_check(agent, log, sim, flip, modes):
    """Walk through ``modes`` with ``flip`` under a live event flow; no gap, no duplicate."""
    for i, mode in enumerate(modes):
        sim.market.open_position("bybit", "SOLUSDT", "long", str(i + 1))
        await flip(mode)
        assert agent.pipelines["bybit-x"].mode == mode
        await eventually(lambda: any(e.symbol == "SOLUSDT" and e.change == "opened" and e.size.startswith(str(i + 1))
                                     for e in log.positions("bybit-x")), what=f"open seen in {mode}")
        sim.market.close_position("bybit", "SOLUSDT")
        await eventually(lambda: len([e for e in log.positions("bybit-x") if e.change == "closed"]) == i + 1,
                         what=f"close seen after {mode}")
    assert_same_lifecycle(log.positions("bybit-x"), sim, "bybit")
    marks = [e.ts_received_ms for e in log.of_kind("mark_price", "bybit-x") if e.symbol == "BTCUSDT"]
    assert max(b - a for a, b in zip(marks, marks[1:])) < 2000, "no gap in mark prices across the flips"
    transitions = [(e.from_, e.to) for e in log.of_kind("mode", "bybit-x")]
    assert transitions == list(zip(["rest", *modes[:-1]], modes))


async def test_mode_flips_by_cli_both_directions(tmp_path, monkeypatch):
    monkeypatch.setenv("FEEDAGENT_ADMIN_TOKEN", TOKEN)
    from agent.admin.client import set_mode

    async with agent_on_simulator(tmp_path, modes={"bybit": "rest"}) as (agent, log, sim):
        await eventually(agent.is_ready, what="ready")

        async def flip(mode):
            import asyncio
            await asyncio.to_thread(set_mode, agent.admin.url, TOKEN, "bybit-x", mode, None, "test")
        await _flip_and_check(agent, log, sim, flip, ["shadow", "hybrid", "shadow", "rest"])


async def test_mode_flips_by_config_reload_and_a_broken_file_changes_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("FEEDAGENT_ADMIN_TOKEN", TOKEN)
    async with agent_on_simulator(tmp_path, modes={"bybit": "rest"}) as (agent, log, sim):
        await eventually(agent.is_ready, what="ready")
        path = agent.loaded.path
        os.environ.update({k: v for k, v in _creds_env(agent).items()})

        async def flip(mode):
            _rewrite_mode(path, "bybit-x", mode)
            await agent.reload("test")
        await _flip_and_check(agent, log, sim, flip, ["shadow", "hybrid", "rest"])

        sha = agent.loaded.sha256
        good = path.read_text()
        path.write_text(good.replace("mode: rest", "mode: warp"))
        from agent.config.issues import ReloadError
        with pytest.raises(ReloadError) as err:
            await agent.reload("test")
        assert any(":" in line and "mode" in line for line in err.value.lines)
        assert agent.loaded.sha256 == sha and agent.pipelines["bybit-x"].mode == "rest"
        assert agent.metrics.registry.get_sample_value("feedagent_config_last_reload_successful") == 0
        path.write_text(good)
        await agent.reload("test")
        assert agent.metrics.registry.get_sample_value("feedagent_config_last_reload_successful") == 1


def _creds_env(agent) -> dict[str, str]:
    env = {}
    for name, venue in (("bybit-x", "BYBIT"), ("binance-x", "BINANCE")):
        if name in agent.pipelines:
            creds = agent.pipelines[name].credentials
            env[f"T_{venue}_KEY"], env[f"T_{venue}_SECRET"] = creds.api_key, creds.api_secret
    return env


async def test_auto_recovery_goes_through_shadow_probation_back_to_hybrid(tmp_path):
    recover = {**ROLLBACK,
               "rollback": {"enabled": True, "auto_recover": True, "base_cooldown_seconds": 1,
                            "max_cooldown_seconds": 10, "promote_after_passing_windows": 2},
               "shadow": {"window_seconds": 1.5, "min_samples": 5, "max_mismatch_ratio": 0.3,
                          "max_ws_lag_seconds": 1.0}}
    async with agent_on_simulator(tmp_path, modes={"bybit": "hybrid"}, overrides={"bybit": recover}) as (
            agent, log, sim):
        await eventually(agent.is_ready, what="ready")
        sim.faults.inject("bybit", "ws_drop", stream="private", duration_seconds=1.5)
        await eventually(lambda: len(log.of_kind("mode", "bybit-x")) >= 3, timeout_seconds=30,
                         what="rest, then shadow probation, then hybrid")
        path = [(e.from_, e.to, e.reason) for e in log.of_kind("mode", "bybit-x")][:3]
        assert [p[:2] for p in path] == [("hybrid", "rest"), ("rest", "shadow"), ("shadow", "hybrid")]
        assert path[1][2] == "cooldown_elapsed" and path[2][2] == "shadow_passed"
        assert all(e.automatic for e in log.of_kind("mode", "bybit-x"))
