"""Helpers to run a real agent (in-process or as a subprocess) against the simulator."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import yaml
from prometheus_client import CollectorRegistry

from agent.config.loader import load_config
from agent.core.events import Event, PositionEvent, event_kind
from agent.supervisor import Supervisor


async def eventually(predicate: Callable[[], Any], timeout_seconds: float = 10.0, interval_seconds: float = 0.02,
                     what: str = "condition") -> Any:
    """Poll ``predicate`` until it returns something truthy; fail after the deadline."""
    deadline = time.monotonic() + timeout_seconds
    while True:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_seconds}s waiting for {what}")
        await asyncio.sleep(interval_seconds)


def exchange_block(venue: str, **overrides: Any) -> dict[str, Any]:
    """A fast-polling simulator exchange for tests."""
    block: dict[str, Any] = {
        "venue": venue,
        "environment": "simulator",
        "symbols": ["BTCUSDT", "ETHUSDT"],
        "mode": "rest",
        "min_emit_interval_ms": 0,
        "rest": {"positions_interval_seconds": 0.1, "prices_interval_seconds": 0.1},
    }
    block.update(overrides)
    return block


def write_config(tmp_path: Path, exchanges: dict[str, Any] | None = None, **top: Any) -> Path:
    """Write a config file for a test agent: admin on an ephemeral port, state and events under tmp_path."""
    doc: dict[str, Any] = {
        "agent": {"state_dir": str(tmp_path / "var"), "shutdown_timeout_seconds": 5},
        "admin": {"listen": "127.0.0.1:0"},
        "telemetry": {"log": {"format": "json", "level": "warning"}},
        "sinks": [{"type": "jsonl", "path": str(tmp_path / "var" / "events.jsonl"), "fsync": "never"}],
        "exchanges": exchanges or {"bybit-sim": exchange_block("bybit"), "binance-sim": exchange_block("binance")},
    }
    doc.update(top)
    path = tmp_path / "feedagent.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


class EventLog:
    """Collects every event a running agent publishes, in order."""

    def __init__(self, supervisor: Supervisor) -> None:
        self.events: list[Event] = []
        self._queue = supervisor.bus.subscribe(capacity=1_000_000)
        self._task = asyncio.create_task(self._drain(), name="test/event-log")

    async def _drain(self) -> None:
        while True:
            self.events.append(await self._queue.get())

    def positions(self, exchange: str | None = None) -> list[PositionEvent]:
        return [e for e in self.events if isinstance(e, PositionEvent) and (exchange is None or e.exchange == exchange)]

    def of_kind(self, kind: str, exchange: str | None = None) -> list[Event]:
        return [e for e in self.events if event_kind(e) == kind and (exchange is None or getattr(e, "exchange", None) == exchange)]

    async def close(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


@contextlib.asynccontextmanager
async def running_agent(config_path: Path, environ: dict[str, str] | None = None) -> AsyncIterator[tuple[Supervisor, EventLog]]:
    """Start a Supervisor in-process with its own metrics registry; stop it afterwards."""
    loaded = load_config(config_path, environ=environ if environ is not None else dict(os.environ))
    supervisor = Supervisor(loaded, registry=CollectorRegistry())
    log = None
    try:
        await supervisor.start()
        log = EventLog(supervisor)
        yield supervisor, log
    finally:
        if log is not None:
            await log.close()
        await supervisor.stop()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def feedagent_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "agent", *args]


def read_runtime(state_dir: Path, timeout_seconds: float = 15.0) -> dict[str, Any]:
    """Wait for a subprocess agent's state_dir/agent.json and return it."""
    path = state_dir / "agent.json"
    deadline = time.monotonic() + timeout_seconds
    while not path.exists():
        if time.monotonic() > deadline:
            raise AssertionError(f"{path} did not appear")
        time.sleep(0.05)
    return json.loads(path.read_text())


def spawn(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    return subprocess.Popen(feedagent_cmd(*args), cwd=cwd, env={**os.environ, **(env or {})},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


FAST_WS = {"ping_interval_seconds": 0.5, "pong_timeout_seconds": 1.0, "stale_after_seconds": 2.5,
           "connect_timeout_seconds": 2.0, "reconnect_initial_delay_seconds": 0.05,
           "reconnect_max_delay_seconds": 0.5}


def custom_exchange(eps: Any, venue: str, *, mode: str = "hybrid", **overrides: Any) -> dict[str, Any]:
    """A `custom` exchange block pointing at a running Simulator's endpoints (credentials via env)."""
    v = getattr(eps, venue)
    ws_key, ws_url = ("ws_public_url", v.ws_public_url) if venue == "bybit" else ("ws_market_url", v.ws_market_url)
    block: dict[str, Any] = {
        "venue": venue, "environment": "custom", "mode": mode, "symbols": ["BTCUSDT", "ETHUSDT"],
        "min_emit_interval_ms": 0,
        "endpoints": {"rest_url": v.rest_url, ws_key: ws_url, "ws_private_url": v.ws_private_url},
        "credentials": {"api_key_env": f"T_{venue.upper()}_KEY", "api_secret_env": f"T_{venue.upper()}_SECRET"},
        "rest": {"positions_interval_seconds": 0.2, "prices_interval_seconds": 0.2, "request_timeout_seconds": 2},
        "ws": dict(FAST_WS),
        "hybrid": {"reconcile_interval_seconds": 1},
        "rollback": {"enabled": False},  # transport tests: survive faults in place (rollback tests turn it on)
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(block.get(key), dict):
            block[key] = {**block[key], **value}
        else:
            block[key] = value
    return block


def credentials_env(eps: Any) -> dict[str, str]:
    env = dict(os.environ)
    for venue in ("bybit", "binance"):
        v = getattr(eps, venue)
        env[f"T_{venue.upper()}_KEY"] = v.api_key
        env[f"T_{venue.upper()}_SECRET"] = v.api_secret
    return env


@contextlib.asynccontextmanager
async def agent_on_simulator(tmp_path: Path, sim_config: Any = None, *, modes: dict[str, str] | None = None,
                             overrides: dict[str, dict[str, Any]] | None = None,
                             ) -> AsyncIterator[tuple[Supervisor, EventLog, Any]]:
    """A Simulator of the test's own (full control of its knobs) and an agent with custom exchanges on it."""
    from agent.simulator import Simulator, SimulatorConfig

    sim = Simulator(sim_config or SimulatorConfig(seed=11, position_change_interval_seconds=0))
    eps = await sim.start()
    try:
        modes = modes or {"bybit": "hybrid", "binance": "hybrid"}
        exchanges = {f"{venue}-x": custom_exchange(eps, venue, mode=mode, **(overrides or {}).get(venue, {}))
                     for venue, mode in modes.items()}
        cfg = write_config(tmp_path, exchanges)
        async with running_agent(cfg, environ=credentials_env(eps)) as (agent, log):
            yield agent, log, sim
    finally:
        await sim.stop()
