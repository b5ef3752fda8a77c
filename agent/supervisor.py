"""Supervisor: builds and runs the whole agent from a loaded config.

Start order: telemetry, sinks, admin server, (simulator), pipelines; stop in
reverse, draining sinks last so that everything accepted is written.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import msgspec
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from prometheus_client import CollectorRegistry

from agent import __version__
from agent.admin.server import AdminServer
from agent.config.loader import LoadedConfig
from agent.config.models import ExchangeConfig
from agent.exchanges import default_endpoints
from agent.exchanges.base import ApiCredentials, ResolvedEndpoints
from agent.mode.pipeline import ExchangePipeline
from agent.sinks import create_bus
from agent.telemetry.logging import MASKER
from agent.telemetry.metrics import Metrics

log = logging.getLogger("agent.supervisor")


class Supervisor:
    """Owns every component of a running agent; ``start``/``stop`` are safe to repeat."""

    def __init__(self, loaded: LoadedConfig, *, registry: CollectorRegistry | None = None) -> None:
        self.loaded = loaded
        self.config = loaded.config
        self.metrics = Metrics(registry)
        self.bus = create_bus(list(self.config.sinks), self.metrics)
        self.scheduler = AsyncIOScheduler(timezone="UTC")
        self.admin = AdminServer(host=self.config.admin.host, port=self.config.admin.port, backend=self,
                                 metrics=self.metrics, bus=self.bus)
        self.pipelines: dict[str, ExchangePipeline] = {}
        self.simulator: Any = None
        self.started_unix_s: float | None = None
        self._started = False
        self._stopped = asyncio.Event()

    # -- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        """Start every component; one exchange failing to start never stops another."""
        if self._started:
            return
        self._started = True
        self.started_unix_s = time.time()
        for creds in self.loaded.credentials.values():
            if creds is not None:
                MASKER.add(creds.api_key, creds.api_secret)
        state_dir = self.config.agent.state_dir
        state_dir.mkdir(parents=True, exist_ok=True)
        await self.bus.start()
        await self.admin.start()
        self.scheduler.start()
        sim_endpoints = await self._start_simulator_if_needed()
        for name, exchange in self.config.exchanges.items():
            endpoints, credentials = self._connection(name, exchange, sim_endpoints)
            pipeline = ExchangePipeline(name=name, config=exchange, endpoints=endpoints, credentials=credentials,
                                        bus=self.bus, scheduler=self.scheduler, metrics=self.metrics)
            self.pipelines[name] = pipeline
        await asyncio.gather(*(p.start() for p in self.pipelines.values()))
        self._write_runtime_file()
        log.info("agent started", extra={"event": "agent_started", "version": __version__,
                                         "exchanges": sorted(self.pipelines), "admin_url": self.admin.url})

    async def stop(self) -> None:
        """Stop in reverse order and flush the sinks; safe to call twice."""
        if not self._started:
            return
        self._started = False
        timeout = self.config.agent.shutdown_timeout_seconds
        await asyncio.gather(*(p.stop() for p in self.pipelines.values()), return_exceptions=True)
        if self.scheduler.running:
            self.scheduler.shutdown(wait=False)
        if self.simulator is not None:
            await self.simulator.stop()
        await self.admin.stop()
        await self.bus.stop(timeout_seconds=max(0.5, timeout / 2))
        self._runtime_file().unlink(missing_ok=True)
        self._stopped.set()
        log.info("agent stopped", extra={"event": "agent_stopped"})

    async def _start_simulator_if_needed(self) -> Any:
        if not any(e.environment == "simulator" for e in self.config.exchanges.values()):
            return None
        from agent.simulator import Simulator, SimulatorConfig  # only demos and tests pay for it

        sim = self.config.simulator
        self.simulator = Simulator(SimulatorConfig(
            seed=sim.seed, price_tick_interval_seconds=sim.price_tick_interval_seconds,
            position_change_interval_seconds=sim.position_change_interval_seconds,
            initial_positions_per_venue=sim.initial_positions_per_venue))
        endpoints = await self.simulator.start(host="127.0.0.1", port=0)
        log.info("built-in simulator started", extra={"event": "simulator_started",
                                                     "control_url": endpoints.control_url})
        return endpoints

    def _connection(self, name: str, exchange: ExchangeConfig,
                    sim_endpoints: Any) -> tuple[ResolvedEndpoints, ApiCredentials | None]:
        if exchange.environment == "simulator":
            venue = getattr(sim_endpoints, exchange.venue)
            MASKER.add(venue.api_secret)
            ws_public = venue.ws_public_url if exchange.venue == "bybit" else venue.ws_market_url
            return (ResolvedEndpoints(venue.rest_url, ws_public, venue.ws_private_url),
                    ApiCredentials(venue.api_key, venue.api_secret))
        return resolve_endpoints(exchange), self.loaded.credentials.get(name)

    def _runtime_file(self) -> Path:
        return self.config.agent.state_dir / "agent.json"

    def _write_runtime_file(self) -> None:
        """Where the running agent can be reached (``feedagent status`` reads it when the port was 0)."""
        path = self._runtime_file()
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"pid": os.getpid(), "admin_url": self.admin.url, "version": __version__,
                                   "started_unix_s": self.started_unix_s}))
        tmp.replace(path)

    # -- admin backend -------------------------------------------------------------------------

    def is_ready(self) -> bool:
        """Config loaded and every exchange delivered its first snapshot."""
        return self._started and all(p.ready for p in self.pipelines.values())

    def status(self) -> dict[str, Any]:
        """The /status document."""
        return {
            "version": __version__,
            "started_unix_s": self.started_unix_s,
            "config": {"path": str(self.loaded.path), "sha256": self.loaded.sha256},
            "ready": self.is_ready(),
            "exchanges": {name: p.status() for name, p in self.pipelines.items()},
            "sinks": {r.sink.name: {"queue_depth": len(r.queue), "written": r.written,
                                    "dropped": dict(r.queue.dropped)} for r in self.bus.runners},
        }

    def positions(self) -> dict[str, Any]:
        """Open positions per exchange."""
        return {name: [_struct_dict(o) for o in p.book.positions()] for name, p in self.pipelines.items()}

    def prices(self) -> dict[str, Any]:
        """Latest mark price per symbol per exchange."""
        return {name: {s: _struct_dict(o) for s, o in p.book.mark_prices().items()}
                for name, p in self.pipelines.items()}


def resolve_endpoints(exchange: ExchangeConfig) -> ResolvedEndpoints:
    """Environment defaults with the config's ``endpoints`` overrides on top."""
    base = default_endpoints(exchange.venue, exchange.environment)
    eps = exchange.endpoints
    ws_public_override = None
    if eps is not None:
        ws_public_override = eps.ws_public_url if exchange.venue == "bybit" else eps.ws_market_url
    rest = (eps.rest_url if eps and eps.rest_url else None) or (base.rest_url if base else None)
    ws_public = ws_public_override or (base.ws_public_url if base else None)
    ws_private = (eps.ws_private_url if eps and eps.ws_private_url else None) or (base.ws_private_url if base else None)
    if not (rest and ws_public and ws_private):
        raise ValueError(f"no endpoints known for {exchange.venue} {exchange.environment}")
    return ResolvedEndpoints(rest, ws_public, ws_private)


def _struct_dict(obj: Any) -> dict[str, Any]:
    return msgspec.structs.asdict(obj)
