"""Shadow mode end to end: the agent compares REST and WebSocket on the simulator and judges windows."""

from __future__ import annotations

import json
import os
import subprocess

import aiohttp
import pytest

from agent.config.loader import load_config
from agent.shadow.cli import write_report
from tests.conftest import require_tool
from tests.integration.harness import agent_on_simulator, eventually

# Small windows so that tests see several; a ratio limit the Wilson interval can decide with ~30 samples.
FAST_SHADOW = {"window_seconds": 2.5, "min_samples": 10, "max_mismatch_ratio": 0.2, "max_ws_silence_seconds": 3,
               "max_ws_lag_seconds": 1.0}


def shadow_exchange(**shadow):
    return {"bybit": {"shadow": {**FAST_SHADOW, **shadow}, "hybrid": {"reconcile_interval_seconds": 600},
                      "rest": {"prices_interval_seconds": 0.2, "positions_interval_seconds": 0.2}}}


def windows(agent, exchange="bybit-x"):
    return agent.store.windows(exchange)


async def test_no_fault_passes_and_events_follow_the_primary(tmp_path):
    async with agent_on_simulator(tmp_path, modes={"bybit": "shadow", "binance": "hybrid"},
                                  overrides=shadow_exchange()) as (agent, log, sim):
        await eventually(lambda: len(windows(agent)) >= 3, timeout_seconds=20, what="three windows")
        sim.market.open_position("bybit", "SOLUSDT", "long", "2")
        await eventually(lambda: any(e.change == "opened" for e in log.positions("bybit-x")), what="open")
        verdicts = [w.verdict for w in windows(agent)]
        assert set(verdicts) == {"pass"}, [(w.verdict, w.reason) for w in windows(agent)]
        # REST is the primary: every event on the stream comes from REST; the WebSocket is only compared
        assert {e.source for e in log.of_kind("mark_price", "bybit-x")} == {"rest"}
        assert {e.source for e in log.positions("bybit-x")} == {"rest"}
        samples = agent.metrics.registry.get_sample_value(
            "feedagent_shadow_samples_total", {"exchange": "bybit-x", "kind": "price", "result": "match"})
        assert samples and samples >= 30
        assert agent.metrics.registry.get_sample_value(
            "feedagent_shadow_windows_total", {"exchange": "bybit-x", "verdict": "pass"}) >= 3


async def test_price_drift_fails_and_the_report_names_the_drifting_symbol(tmp_path):
    async with agent_on_simulator(tmp_path, modes={"bybit": "shadow"},
                                  overrides=shadow_exchange()) as (agent, log, sim):
        await eventually(lambda: windows(agent), timeout_seconds=10, what="a first window")
        sim.faults.inject("bybit", "ws_price_drift", ratio=0.002, symbols=["ETHUSDT"])
        mark = windows(agent)[-1].window_end_ms

        def failed():
            return [w for w in windows(agent) if w.window_start_ms >= mark and w.verdict == "fail"]
        await eventually(lambda: len(failed()) >= 2, timeout_seconds=20, what="failing windows")
        worst = failed()[-1].symbols[0]
        assert worst.symbol == "ETHUSDT" and worst.mismatches > 0
        assert "ETHUSDT" not in [s.symbol for s in failed()[-1].symbols if s.mismatches == 0]
        loaded = load_config(agent.loaded.path, environ=dict(os.environ, **_creds(agent)))
        out = tmp_path / "report.json"
        assert write_report(loaded, exchange="bybit-x", since="1h", fmt="json", out=out) == 0
        report = json.loads(out.read_text())
        section = report["exchanges"][0]
        assert section["headline"]["verdict"] == "fail" and section["headline"]["next_action"] == "roll_back"
        assert section["symbols"][0]["symbol"] == "ETHUSDT"


async def test_dropped_close_event_fails_critically(tmp_path):
    async with agent_on_simulator(tmp_path, modes={"bybit": "shadow"},
                                  overrides=shadow_exchange(grace_seconds=0.5)) as (agent, log, sim):
        await eventually(lambda: windows(agent), timeout_seconds=10, what="a first window")
        sim.market.open_position("bybit", "BTCUSDT", "long", "0.5")
        await eventually(lambda: any(e.change == "opened" for e in log.positions("bybit-x")), what="open")
        await eventually(lambda: agent.pipelines["bybit-x"].ws.status()["ready"], what="ws side ready")
        shadow = agent.controllers["bybit-x"].shadow
        await eventually(lambda: any(p.symbol == "BTCUSDT" for p in _ws_positions(shadow)), what="ws saw the open")
        sim.faults.inject("bybit", "ws_drop_event", count=1)
        sim.market.close_position("bybit", "BTCUSDT")

        def critical():
            return [w for w in windows(agent) if w.verdict == "fail" and w.critical.get("missed_close")]
        await eventually(critical, timeout_seconds=20, what="a critical window")
        assert "missed_close" in critical()[0].reason or "critical" in critical()[0].reason.lower()
        examples = agent.store.examples("bybit-x", critical_first=True)
        assert examples[0].kind == "missed_close" and examples[0].symbol == "BTCUSDT"
        # the primary (REST) saw the close; the event stream is right
        assert any(e.change == "closed" for e in log.positions("bybit-x"))


async def test_too_few_samples_is_inconclusive(tmp_path):
    async with agent_on_simulator(tmp_path, modes={"bybit": "shadow"},
                                  overrides=shadow_exchange(min_samples=10_000)) as (agent, log, sim):
        await eventually(lambda: len(windows(agent)) >= 2, timeout_seconds=15, what="two windows")
        assert {w.verdict for w in windows(agent)} == {"inconclusive"}
        assert agent.controllers["bybit-x"].breaker.state.passing_windows == 0, "inconclusive never promotes"


@pytest.mark.tool
async def test_html_report_of_a_real_run_renders_in_chromium(tmp_path):
    chromium = require_tool("chromium")
    async with agent_on_simulator(tmp_path, modes={"bybit": "shadow"},
                                  overrides=shadow_exchange()) as (agent, log, sim):
        await eventually(lambda: len(windows(agent)) >= 2, timeout_seconds=15, what="two windows")
        sim.faults.inject("bybit", "ws_price_drift", ratio=0.003, symbols=["BTCUSDT"])
        n = len(windows(agent))
        await eventually(lambda: len(windows(agent)) >= n + 2, timeout_seconds=15, what="two more windows")
        page = agent.reports.write()
        assert page is not None and page.exists()
        async with aiohttp.ClientSession() as http:
            resp = await http.get(f"{agent.admin.url}/v1/reports/latest?format=html")
            assert resp.status == 200 and "text/html" in resp.headers["Content-Type"]
            latest_json = await (await http.get(f"{agent.admin.url}/v1/reports/latest")).json()
        assert latest_json["exchanges"][0]["exchange"] == "bybit-x"
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'profile'}", "--hide-scrollbars"]
    shot = tmp_path / "real-run.png"
    subprocess.run([chromium, *flags, "--window-size=1280,2200", f"--screenshot={shot}", page.as_uri()],
                   check=True, timeout=120, capture_output=True)
    dom = subprocess.run([chromium, *flags, "--dump-dom", page.as_uri()], check=True, timeout=120,
                         capture_output=True, text=True).stdout
    assert shot.stat().st_size > 20_000
    assert "bybit-x" in dom and "<svg" in dom and "BTCUSDT" in dom
    assert any(word in dom for word in ("ROLL BACK", "HOLD", "PROMOTE"))
    if keep := os.environ.get("FEEDAGENT_SHADOW_SCREENSHOT"):
        shot.replace(keep)


def _ws_positions(shadow):
    comparator = shadow.comparator if shadow else None
    if comparator is None:
        return []
    return [type("P", (), {"symbol": key[0]}) for key, history in comparator._ws_positions.items()
            if history and history[-1].open]


def _creds(agent) -> dict[str, str]:
    sim_eps = agent.pipelines["bybit-x"].credentials
    return {"T_BYBIT_KEY": sim_eps.api_key, "T_BYBIT_SECRET": sim_eps.api_secret,
            "T_BINANCE_KEY": "x" * 16, "T_BINANCE_SECRET": "y" * 32}




async def test_calibration_runs_first_and_is_stored(tmp_path):
    async with agent_on_simulator(tmp_path, modes={"bybit": "shadow"},
                                  overrides=shadow_exchange(calibrate_seconds=1.0)) as (agent, log, sim):
        await eventually(lambda: windows(agent), timeout_seconds=15, what="a window after calibration")
        floor = agent.controllers["bybit-x"].shadow.noise_floor
        assert floor.calibration_samples > 0 and floor.calibration_q99_ratio is not None
        stored = agent.store.calibrations("bybit-x")
        assert stored and stored[-1].noise_floor.calibration_samples == floor.calibration_samples
