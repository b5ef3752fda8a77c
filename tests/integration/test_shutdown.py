"""Stopping as a user stops the agent: SIGTERM to `feedagent run`, whatever it is in the middle of."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import time
from decimal import Decimal

import aiohttp

from agent.simulator import Simulator, SimulatorConfig
from tests.integration.harness import credentials_env, custom_exchange, eventually, feedagent_cmd, write_config

TOKEN = "test-admin-token-0123456789"
SHUTDOWN_TIMEOUT_SECONDS = 3.0


async def _collect(http: aiohttp.ClientSession, url: str, into: list[dict]) -> None:
    """Every event of the live stream, until the agent closes it."""
    with contextlib.suppress(aiohttp.ClientError, asyncio.CancelledError):
        async with http.get(f"{url}/v1/events") as resp:
            async for line in resp.content:
                if line.strip():
                    into.append(json.loads(line))


async def _status(http: aiohttp.ClientSession, url: str) -> dict:
    async with http.get(f"{url}/status") as resp:
        return await resp.json()


async def test_sigterm_during_a_pending_mode_change_stops_in_time_and_drains_the_sinks(tmp_path):
    sim = Simulator(SimulatorConfig(seed=3, position_change_interval_seconds=0))
    eps = await sim.start()
    # connect 10 s, request 5 s: the mode change would wait 25 s for a WebSocket that never gets ready
    slow_ready = {"ws": {"connect_timeout_seconds": 10}, "rest": {"request_timeout_seconds": 5}}
    cfg = write_config(tmp_path, {"bybit-x": custom_exchange(eps, "bybit", mode="rest", **slow_ready)},
                       agent={"state_dir": str(tmp_path / "var"), "shutdown_timeout_seconds": SHUTDOWN_TIMEOUT_SECONDS})
    events_file = tmp_path / "var" / "events.jsonl"
    proc = await asyncio.create_subprocess_exec(
        *feedagent_cmd("run", "-c", str(cfg)), env={**credentials_env(eps), "FEEDAGENT_ADMIN_TOKEN": TOKEN},
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    streamed: list[dict] = []
    try:
        runtime = tmp_path / "var" / "agent.json"
        await eventually(runtime.exists, timeout_seconds=20, what="the agent is up")
        url = json.loads(runtime.read_text())["admin_url"]
        async with aiohttp.ClientSession() as http:
            collector = asyncio.create_task(_collect(http, url, streamed))
            sim.market.open_position("bybit", "BTCUSDT", "long", "0.5")
            await eventually(lambda: any(e["kind"] == "position" for e in streamed), what="position over rest")

            sim.faults.inject("bybit", "ws_drop", stream="private", duration_seconds=60)
            change = asyncio.create_task(http.post(f"{url}/v1/exchanges/bybit-x/mode", json={"mode": "hybrid"},
                                                   headers={"Authorization": f"Bearer {TOKEN}"}))

            async def pending() -> bool:
                ex = (await _status(http, url))["exchanges"]["bybit-x"]
                return ex["effective_mode"] == "rest" and "ws" in ex["running_sources"]
            await eventually(pending, what="the mode change is waiting for the WebSocket")
            sim.market.set_size("bybit", "BTCUSDT", "0.8")  # a lifecycle event while it waits
            await eventually(lambda: any(e["kind"] == "position" and Decimal(e["size"]) == Decimal("0.8")
                                         for e in streamed),
                             what="the resize is published")

            proc.send_signal(signal.SIGTERM)
            signalled = time.monotonic()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(proc.wait(), timeout=30)
            took = time.monotonic() - signalled
            assert proc.returncode is not None, "still running 30 s after SIGTERM"
            response = await change
            refusal = await response.json()
            await collector
        stderr = (await proc.stderr.read()).decode() if proc.stderr else ""
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await sim.stop()

    assert proc.returncode == 0, stderr[-2000:]
    assert took < SHUTDOWN_TIMEOUT_SECONDS, f"stopped in {took:.2f}s"
    assert response.status == 409 and "stopping" in refusal["error"], refusal
    raw = events_file.read_bytes()
    assert raw.endswith(b"\n"), "the last line was written whole"
    written = [json.loads(line) for line in raw.splitlines()]
    missing = [e for e in streamed if e not in written]
    assert not missing, f"published but not written: {missing[:3]}"
    assert Decimal([e["size"] for e in written if e["kind"] == "position"][-1]) == Decimal("0.8")
