"""Config reload as a transaction: all of it applies, or none of it stays applied; operator pins survive it."""

from __future__ import annotations

import asyncio
import os
import subprocess

import aiohttp
import yaml

from tests.integration.harness import agent_on_simulator, eventually, feedagent_cmd

TOKEN = "test-admin-token-0123456789"
# The mode-change ready timeout is connect_timeout x 2 + request_timeout: 2 s here.
QUICK_READY = {"ws": {"connect_timeout_seconds": 0.5}, "rest": {"request_timeout_seconds": 1}}


def _set_modes(path, modes: dict[str, str]) -> None:
    doc = yaml.safe_load(path.read_text())
    for exchange, mode in modes.items():
        doc["exchanges"][exchange]["mode"] = mode
    path.write_text(yaml.safe_dump(doc, sort_keys=False))


def _export_credentials(agent, monkeypatch) -> None:
    """The harness hands the agent its keys directly; a reload reads them from the environment."""
    for name, venue in (("bybit-x", "BYBIT"), ("binance-x", "BINANCE")):
        creds = agent.pipelines[name].credentials
        monkeypatch.setenv(f"T_{venue}_KEY", creds.api_key)
        monkeypatch.setenv(f"T_{venue}_SECRET", creds.api_secret)


async def _reload(http, agent):
    async with http.post(f"{agent.admin.url}/-/reload", headers={"Authorization": f"Bearer {TOKEN}"}) as resp:
        return resp.status, await resp.json()


def _metric(agent, name, labels=None):
    return agent.metrics.registry.get_sample_value(name, labels or {})


async def test_a_reload_refused_half_way_is_undone(tmp_path, monkeypatch):
    monkeypatch.setenv("FEEDAGENT_ADMIN_TOKEN", TOKEN)
    modes = {"bybit": "rest", "binance": "rest"}
    async with agent_on_simulator(tmp_path, modes=modes, overrides={"bybit": QUICK_READY, "binance": QUICK_READY}) as (
            agent, log, sim):
        await eventually(agent.is_ready, what="ready")
        _export_credentials(agent, monkeypatch)
        path, sha = agent.loaded.path, agent.loaded.sha256
        # binance-x is applied first and can go hybrid; bybit-x cannot: its private stream is refused
        sim.faults.inject("bybit", "ws_drop", stream="private", duration_seconds=60)
        _set_modes(path, {"binance-x": "hybrid", "bybit-x": "hybrid"})

        async with aiohttp.ClientSession() as http:
            status, body = await _reload(http, agent)
            assert status == 409, body
            assert body["ok"] is False and any("bybit-x" in line for line in body["errors"]), body

            for name in ("binance-x", "bybit-x"):
                assert agent.pipelines[name].mode == "rest"
                assert agent.pipelines[name].running_sources == {"rest"}
                assert agent.status()["exchanges"][name]["configured_mode"] == "rest"
            transitions = [(e.from_, e.to) for e in log.of_kind("mode", "binance-x")]
            assert transitions == [("rest", "hybrid"), ("hybrid", "rest")], "applied, then undone"
            assert not log.of_kind("mode", "bybit-x")
            assert agent.loaded.sha256 == sha
            assert _metric(agent, "feedagent_config_last_reload_successful") == 0
            assert _metric(agent, "feedagent_config_info", {"sha256": sha}) == 1
            last = agent.status()["config"]["last_reload"]
            assert last["ok"] is False and last["errors"] == body["errors"]

            # the command line shows the refusal and fails
            out = await asyncio.to_thread(subprocess.run, feedagent_cmd("reload", "--admin-url", agent.admin.url),
                                          capture_output=True, text=True, timeout=60,
                                          env={**os.environ, "FEEDAGENT_ADMIN_TOKEN": TOKEN})
            assert out.returncode != 0
            assert "409" in out.stderr and "bybit-x" in out.stderr
            assert agent.pipelines["binance-x"].mode == "rest"

            # once the WebSocket is back the same file applies in full
            sim.faults.clear()
            status, body = await _reload(http, agent)
            assert status == 200, body
            assert body["changes"] == {"binance-x": "mode rest -> hybrid", "bybit-x": "mode rest -> hybrid"}
            assert {agent.pipelines[n].mode for n in ("binance-x", "bybit-x")} == {"hybrid"}
            assert _metric(agent, "feedagent_config_last_reload_successful") == 1
            assert agent.loaded.sha256 != sha


async def test_a_pin_survives_a_reload_and_a_restart(tmp_path, monkeypatch):
    monkeypatch.setenv("FEEDAGENT_ADMIN_TOKEN", TOKEN)
    async with agent_on_simulator(tmp_path, modes={"bybit": "rest", "binance": "rest"}) as (agent, log, sim):
        await eventually(agent.is_ready, what="ready")
        _export_credentials(agent, monkeypatch)
        async with aiohttp.ClientSession() as http:
            async with http.post(f"{agent.admin.url}/v1/exchanges/bybit-x/mode", json={"mode": "rest", "pin": True},
                                 headers={"Authorization": f"Bearer {TOKEN}"}) as resp:
                assert resp.status == 200 and (await resp.json())["pinned"] == "rest"
            _set_modes(agent.loaded.path, {"bybit-x": "hybrid", "binance-x": "hybrid"})
            status, body = await _reload(http, agent)

        assert status == 200, body
        assert body["changes"] == {"binance-x": "mode rest -> hybrid", "bybit-x": "pinned: stays rest"}
        assert agent.pipelines["bybit-x"].mode == "rest" and agent.pipelines["binance-x"].mode == "hybrid"
        bybit = agent.status()["exchanges"]["bybit-x"]
        assert bybit["configured_mode"] == "hybrid" and bybit["breaker"]["pinned_mode"] == "rest"
        assert not log.of_kind("mode", "bybit-x")
        assert _metric(agent, "feedagent_config_last_reload_successful") == 1

    # same state_dir, the config asks for hybrid: the pin from before the restart wins, and status says so
    async with agent_on_simulator(tmp_path, modes={"bybit": "hybrid"}) as (agent, log, sim):
        await eventually(agent.is_ready, what="ready")
        assert agent.pipelines["bybit-x"].mode == "rest"
        assert agent.status()["exchanges"]["bybit-x"]["breaker"]["pinned_at_start"] == "rest"
        out = await asyncio.to_thread(subprocess.run, feedagent_cmd("status", "--admin-url", agent.admin.url),
                                      capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        assert "pinned to rest before the last restart" in out.stdout, out.stdout
        await agent.set_mode("bybit-x", "hybrid", pin=False, reason="test")
        assert agent.status()["exchanges"]["bybit-x"]["breaker"]["pinned_at_start"] is None
