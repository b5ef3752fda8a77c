"""The command line as a user runs it: real subprocesses, real signals, real files."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import aiohttp
import pytest
import yaml

from agent.core.events import decode_event
from tests.conftest import REPO_ROOT, require_tool
from tests.integration.harness import eventually, feedagent_cmd, read_runtime, running_agent, spawn, write_config


def run_cli(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(feedagent_cmd(*args), capture_output=True, text=True, timeout=60, cwd=cwd,
                          env={**os.environ, **(env or {})})


def test_version():
    out = run_cli("version")
    assert out.returncode == 0 and out.stdout.startswith("feedagent ")


def test_validate_ok_and_every_error_with_exit_78(tmp_path):
    assert run_cli("validate", "-c", str(REPO_ROOT / "configs" / "feedagent.yaml")).returncode == 0
    bad = tmp_path / "bad.yaml"
    bad.write_text("exchanges:\n  x:\n    venue: kraken\n    rest: {positions_interval_seconds: -1}\n")
    out = run_cli("validate", "-c", str(bad))
    assert out.returncode == 78
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 2
    assert lines[0].startswith(f"{bad}:3:5: exchanges.x.venue: ")
    assert lines[1].startswith(f"{bad}:4:12: exchanges.x.rest.positions_interval_seconds: ")


def test_run_refuses_an_invalid_config(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("exchanges: {x: {venue: bybit, environment: mainnet}}\nunknown_key: 1\n")
    out = run_cli("run", "-c", str(bad))
    assert out.returncode == 78
    assert f"{bad}:2:1: unknown_key: " in out.stderr


def test_print_config_redacts_secrets(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"exchanges": {"bybit-main": {
        "venue": "bybit", "environment": "mainnet",
        "credentials": {"api_key_env": "T_KEY", "api_secret_env": "T_SECRET"}}}}))
    out = run_cli("print-config", "-c", str(cfg), env={"T_KEY": "AKEY-1234567890", "T_SECRET": "SECRET-0987654321"})
    assert out.returncode == 0
    assert "AKEY-1234567890" not in out.stdout and "SECRET-0987654321" not in out.stdout
    assert "T_SECRET" in out.stdout
    assert yaml.safe_load(out.stdout)["exchanges"]["bybit-main"]["rest"]["positions_interval_seconds"] == 5.0


def test_sigterm_flushes_every_accepted_event(tmp_path):
    cfg = write_config(tmp_path, sinks=[{"type": "stdout"},
                                        {"type": "jsonl", "path": str(tmp_path / "var" / "events.jsonl"),
                                         "fsync": "never"}])
    proc = spawn("run", "-c", str(cfg))
    try:
        runtime = read_runtime(tmp_path / "var")
        assert runtime["pid"] == proc.pid
        events_file = tmp_path / "var" / "events.jsonl"
        deadline = time.monotonic() + 15
        while not (events_file.exists() and events_file.read_bytes().count(b"\n") >= 20):
            assert time.monotonic() < deadline, "no events written"
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        started = time.monotonic()
        stdout, stderr = proc.communicate(timeout=10)
        took = time.monotonic() - started
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, stderr.decode()[-2000:]
    assert took < 5.0
    file_events = [decode_event(line) for line in events_file.read_bytes().splitlines()]
    stdout_events = [decode_event(line) for line in stdout.splitlines()]
    assert file_events == stdout_events, "both sinks hold everything that was accepted"
    for exchange in ("bybit-sim", "binance-sim"):
        seqs = [e.seq for e in file_events if e.exchange == exchange]
        assert seqs == sorted(set(seqs)), "seq strictly increasing"
    assert not (tmp_path / "var" / "agent.json").exists()
    assert all(json.loads(line)["event"] for line in stderr.splitlines()), "logs are JSON lines with an event name"


def test_quick_start_shows_both_venues_within_10_seconds(tmp_path):
    """The README's run command: default config, fresh directory, events of both venues within 10 s."""
    proc = subprocess.Popen(feedagent_cmd("run", "-c", str(REPO_ROOT / "configs" / "feedagent.yaml")), cwd=tmp_path,
                            env={**os.environ, "FEEDAGENT_ADMIN__LISTEN": "127.0.0.1:0"},
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    wanted = {(ex, kind) for ex in ("bybit-sim", "binance-sim") for kind in ("position", "mark_price")}
    seen: set[tuple[str, str]] = set()
    started = time.monotonic()
    try:
        assert proc.stdout is not None
        while seen != wanted and time.monotonic() - started < 10:
            line = proc.stdout.readline()
            if not line:
                break
            event = json.loads(line)
            seen.add((event["exchange"], event["kind"]))
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=10)
    assert seen == wanted, f"after {time.monotonic() - started:.1f}s saw only {sorted(seen)}"
    assert (tmp_path / "var" / "events.jsonl").exists()


async def test_standalone_simulator_and_a_custom_agent(tmp_path):
    sim = subprocess.Popen(feedagent_cmd("simulate", "--port", "0", "--seed", "5"), stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True)
    try:
        assert sim.stdout is not None
        urls = json.loads(sim.stdout.readline())
        assert set(urls) == {"bybit", "binance", "control_url"}
        assert set(urls["bybit"]) == {"rest_url", "ws_public_url", "ws_private_url", "api_key", "api_secret"}
        assert set(urls["binance"]) == {"rest_url", "ws_market_url", "ws_private_url", "api_key", "api_secret"}
        exchanges = {}
        env = dict(os.environ)
        for venue in ("bybit", "binance"):
            v = urls[venue]
            ws_key = "ws_public_url" if venue == "bybit" else "ws_market_url"
            exchanges[f"{venue}-custom"] = {
                "venue": venue, "environment": "custom", "symbols": ["BTCUSDT"],
                "endpoints": {"rest_url": v["rest_url"], ws_key: v[ws_key], "ws_private_url": v["ws_private_url"]},
                "credentials": {"api_key_env": f"SIM_{venue.upper()}_KEY", "api_secret_env": f"SIM_{venue.upper()}_SECRET"},
                "rest": {"positions_interval_seconds": 0.2, "prices_interval_seconds": 0.2}}
            env[f"SIM_{venue.upper()}_KEY"] = v["api_key"]
            env[f"SIM_{venue.upper()}_SECRET"] = v["api_secret"]
        cfg = write_config(tmp_path, exchanges)
        async with running_agent(cfg, environ=env) as (agent, log):
            assert agent.simulator is None, "custom exchanges never start a simulator of their own"
            await eventually(agent.is_ready, what="ready")
            async with aiohttp.ClientSession() as http:
                # drive the standalone simulator through its control API
                resp = await http.post(f"{urls['control_url']}/market/binance/positions",
                                       json={"action": "open", "symbol": "ETHUSDT", "side": "short", "size": "1.5"})
                assert resp.status == 200, await resp.text()
            await eventually(lambda: any(e.symbol == "ETHUSDT" and e.change == "opened"
                                         for e in log.positions("binance-custom")), what="opened via control API")
    finally:
        sim.send_signal(signal.SIGTERM)
        sim.wait(timeout=10)
    assert sim.returncode == 0


@pytest.mark.tool
async def test_promtool_check_metrics_is_clean(tmp_path):
    promtool = require_tool("promtool")
    cfg = write_config(tmp_path)
    async with running_agent(cfg) as (agent, log):
        await eventually(agent.is_ready, what="ready")
        async with aiohttp.ClientSession() as http:
            body = await (await http.get(f"{agent.admin.url}/metrics")).read()
    out = subprocess.run([promtool, "check", "metrics"], input=body, capture_output=True, timeout=30)
    assert out.returncode == 0 and not out.stdout.strip() and not out.stderr.strip(), (out.stdout + out.stderr).decode()
