"""Supervisor: builds and runs the whole agent from a loaded config.

Start order: telemetry (tracing), sinks, admin server, (simulator), exchanges;
stop in reverse, draining sinks so that everything accepted is written, and
flushing traces last. Reload is all-or-nothing: validate, plan, apply per
exchange, and undo what was applied when a step fails (``agent.reload``).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import time
import uuid
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import msgspec
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from prometheus_client import CollectorRegistry

from agent import __version__
from agent.admin.runtime import read_runtime
from agent.admin.server import AdminServer
from agent.config.issues import ReloadError, ReloadUndone
from agent.config.loader import ConfigError, LoadedConfig, load_config
from agent.config.models import ExchangeConfig, FeedAgentConfig
from agent.core.tasks import TaskOwner
from agent.exchanges import default_endpoints
from agent.exchanges.base import ApiCredentials, ResolvedEndpoints
from agent.mode.controller import ExchangeController
from agent.mode.pipeline import ExchangePipeline
from agent.reload import ReloadTransaction
from agent.shadow.reports import ReportWriter
from agent.shadow.store import ShadowStore
from agent.sinks import create_bus
from agent.telemetry.logging import MASKER, configure_logging
from agent.telemetry.loop_lag import LoopLagMonitor
from agent.telemetry.metrics import Metrics
from agent.telemetry.tracing import Tracing, setup_tracing

log = logging.getLogger("agent.supervisor")

# Sections that a reload cannot change in a running agent (they own sockets, files or the simulator).
_RESTART_ONLY = ("agent", "admin", "sinks", "simulator")


class Supervisor:
    """Owns every component of a running agent; ``start``/``stop`` are safe to repeat."""

    def __init__(self, loaded: LoadedConfig, *, registry: CollectorRegistry | None = None,
                 notifier: Any = None) -> None:
        self.loaded = loaded
        self.config = loaded.config
        self.metrics = Metrics(registry)
        self.notifier = notifier
        self.bus = create_bus(list(self.config.sinks), self.metrics, self.config.agent.state_dir)
        self.scheduler = AsyncIOScheduler(timezone="UTC")
        self.admin = AdminServer(host=self.config.admin.host, port=self.config.admin.port, backend=self,
                                 metrics=self.metrics, bus=self.bus, token=loaded.admin_token)
        self.controllers: dict[str, ExchangeController] = {}
        self.simulator: Any = None
        self.store: ShadowStore | None = None
        self.reports: ReportWriter | None = None
        self.loop_lag = LoopLagMonitor(self.metrics)
        self.tracing: Tracing | None = None
        self.started_unix_s: float | None = None
        self.last_reload: dict[str, Any] | None = None
        self._sim_endpoints: Any = None
        self._tasks = TaskOwner("agent")
        self._reload_lock = asyncio.Lock()
        self._started = False
        self._instance_id = str(uuid.uuid4())  # service.instance.id of this run's traces

    @property
    def pipelines(self) -> dict[str, ExchangePipeline]:
        """Every exchange's pipeline, by name."""
        return {name: c.pipeline for name, c in self.controllers.items()}

    # -- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        """Start every component; one exchange failing to start never stops another."""
        if self._started:
            return
        self._started = True
        self.started_unix_s = time.time()
        self.tracing = self._setup_tracing(self.config)
        self._note_config(self.loaded)
        state_dir = self.config.agent.state_dir
        state_dir.mkdir(parents=True, exist_ok=True)
        self.store = await asyncio.to_thread(ShadowStore, state_dir / "shadow.sqlite3")
        self.reports = ReportWriter(self.store, state_dir / "reports", config_sha256=self.loaded.sha256)
        await self.bus.start()
        await self.admin.start()
        self.scheduler.start()
        self.loop_lag.start()
        self._sim_endpoints = await self._start_simulator_if_needed()
        for name, exchange in self.config.exchanges.items():
            self.controllers[name] = self._controller(name, exchange)
        await asyncio.gather(*(c.start() for c in self.controllers.values()))
        self.reports.schedule(self.scheduler, self.config)
        if self.config.agent.reload_on_file_change:
            self._tasks.spawn("config-watch", self._watch_config_file())
        self._write_runtime_file()
        log.info("agent started", extra={"event": "agent_started", "version": __version__,
                                         "exchanges": sorted(self.controllers), "admin_url": self.admin.url})

    async def stop(self) -> None:
        """Stop in reverse order and flush the sinks; safe to call twice."""
        if not self._started:
            return
        self._started = False
        stop_started = time.monotonic()
        timeout = self.config.agent.shutdown_timeout_seconds
        await self._tasks.cancel_all(timeout_seconds=1.0)
        await self._stop_exchanges(budget_seconds=timeout / 2)
        if self.scheduler.running:
            self.scheduler.shutdown(wait=False)
        await self.loop_lag.stop()
        if self.simulator is not None:
            await self.simulator.stop(timeout_seconds=1.0)
        await self.admin.stop()
        # the sinks always drain, with what is left of the budget (a little is kept for traces)
        await self.bus.stop(timeout_seconds=max(0.5, timeout - (time.monotonic() - stop_started) - 0.5))
        for controller in self.controllers.values():  # the sinks confirmed what they wrote: a smaller outbox
            controller.pipeline.checkpoint()
        if self.store is not None:
            await asyncio.to_thread(self.store.close)
        self._remove_runtime_file()
        log.info("agent stopped", extra={"event": "agent_stopped"})
        if self.tracing is not None:  # last, with what is left of the budget: a dead collector costs that, no more
            left = timeout - (time.monotonic() - stop_started) - 0.5
            export_timeout = self.tracing.settings.export_timeout_seconds
            await self.tracing.shutdown(timeout_seconds=max(0.1, min(left, export_timeout)))

    async def _stop_exchanges(self, budget_seconds: float) -> None:
        """Stop every exchange within ``budget_seconds``; pending mode changes give up first, stragglers are left."""
        for controller in self.controllers.values():
            controller.pipeline.abandon_mode_change()
        stops = {asyncio.ensure_future(c.stop()): name for name, c in self.controllers.items()}
        if not stops:
            return
        done, pending = await asyncio.wait(stops, timeout=budget_seconds)
        for task in pending:
            task.cancel()
        if pending:
            log.error("exchanges did not stop in time; draining the sinks anyway", extra={
                "event": "exchange_stop_timeout", "exchanges": sorted(stops[t] for t in pending)})
        for task in done:
            if not task.cancelled() and task.exception() is not None:
                log.error("exchange stop failed", exc_info=task.exception(),
                          extra={"event": "exchange_stop_failed", "exchange": stops[task]})

    def _setup_tracing(self, config: FeedAgentConfig) -> Tracing:
        return setup_tracing(config.telemetry.tracing, service_version=__version__, resource_attributes={
            "service.instance.id": self._instance_id, "process.pid": os.getpid()})

    def _controller(self, name: str, exchange: ExchangeConfig,
                    loaded: LoadedConfig | None = None) -> ExchangeController:
        endpoints, credentials = self._connection(name, exchange, loaded)
        pipeline = ExchangePipeline(name=name, config=exchange, endpoints=endpoints, credentials=credentials,
                                    bus=self.bus, scheduler=self.scheduler, metrics=self.metrics,
                                    state_dir=self.config.agent.state_dir)
        assert self.store is not None
        return ExchangeController(pipeline, state_dir=self.config.agent.state_dir, metrics=self.metrics,
                                  store=self.store, loop_lag_seconds=self.loop_lag.latest_seconds)

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
                    loaded: LoadedConfig | None = None) -> tuple[ResolvedEndpoints, ApiCredentials | None]:
        if exchange.environment == "simulator":
            venue = getattr(self._sim_endpoints, exchange.venue)
            MASKER.add(venue.api_secret)
            ws_public = venue.ws_public_url if exchange.venue == "bybit" else venue.ws_market_url
            return (ResolvedEndpoints(venue.rest_url, ws_public, venue.ws_private_url),
                    ApiCredentials(venue.api_key, venue.api_secret))
        return resolve_endpoints(exchange), (loaded or self.loaded).credentials.get(name)

    def _note_config(self, loaded: LoadedConfig) -> None:
        for creds in loaded.credentials.values():
            if creds is not None:
                MASKER.add(creds.api_key, creds.api_secret)
        MASKER.add(loaded.admin_token)
        self.metrics.config_info.clear()
        self.metrics.config_info.labels(loaded.sha256).set(1)
        self.metrics.config_last_reload_success.set(time.time())

    # -- reload ----------------------------------------------------------------------------------

    async def reload(self, trigger: str = "api") -> dict[str, Any]:
        """Load the config file again and apply it, all or nothing.

        Raises ReloadError (nothing changed) when the file is invalid or cannot be
        applied, ReloadUndone when applying failed half way and was undone.
        """
        async with self._reload_lock:
            with self.notifier.reloading() if self.notifier is not None else nullcontext():
                try:
                    result = await self._reload(trigger)
                except ReloadError as exc:
                    self.metrics.config_last_reload_successful.set(0)
                    self.metrics.config_reloads.labels(trigger, "error").inc()
                    self.last_reload = {"ts_ms": _now_ms(), "trigger": trigger, "ok": False, "errors": exc.lines}
                    log.error("config reload refused; running config unchanged",
                              extra={"event": "config_reload_failed", "trigger": trigger, "errors": exc.lines})
                    raise
        self.metrics.config_last_reload_successful.set(1)
        self.metrics.config_reloads.labels(trigger, "ok").inc()
        self.last_reload = {"ts_ms": _now_ms(), "trigger": trigger, "ok": True, **result}
        log.info("config reloaded", extra={"event": "config_reloaded", "trigger": trigger, **result})
        return result

    async def _reload(self, trigger: str) -> dict[str, Any]:
        try:
            new = await asyncio.to_thread(load_config, self.loaded.path, dict(os.environ))
        except ConfigError as exc:
            raise ReloadError([str(i) for i in exc.issues]) from None
        old_cfg, new_cfg = self.config, new.config
        blocked = [k for k in _RESTART_ONLY if getattr(old_cfg, k) != getattr(new_cfg, k)]
        if blocked:
            raise ReloadError([f"{new.path}: {k}: changed; this section only takes effect on restart" for k in blocked])
        if any(e.environment == "simulator" for e in new_cfg.exchanges.values()) and self._sim_endpoints is None:
            raise ReloadError([f"{new.path}: exchanges: a simulator exchange needs a restart to start the simulator"])
        txn = ReloadTransaction(self.controllers, self.loaded, new, connection=self._connection,
                                build=self._controller)
        txn.plan()  # ReloadError: nothing was changed
        await txn.apply()  # ReloadUndone: what was applied has been undone
        if new_cfg.telemetry.tracing != old_cfg.telemetry.tracing:
            try:
                new_tracing = self._setup_tracing(new_cfg)
            except Exception as exc:  # noqa: BLE001 - the exchanges go back too: all or nothing
                raise ReloadUndone([f"{new.path}: telemetry.tracing: {type(exc).__name__}: {exc}",
                                    *await txn.undo()]) from exc
            old_tracing, self.tracing = self.tracing, new_tracing
            if old_tracing is not None:
                await old_tracing.shutdown()
        self.loaded, self.config = new, new_cfg
        self._note_config(new)
        if new_cfg.telemetry.log != old_cfg.telemetry.log:
            configure_logging(new_cfg.telemetry.log.format, new_cfg.telemetry.log.level)
        if self.reports is not None:
            self.reports.config_sha256 = new.sha256
            self.reports.schedule(self.scheduler, new_cfg)
        return {"sha256": new.sha256, "changes": txn.result()}

    async def _watch_config_file(self) -> None:
        """Reload when the file's content changes (polled: works on every filesystem and with ConfigMap symlinks)."""
        interval = self.config.agent.reload_check_interval_seconds
        last = self.loaded.sha256
        while True:
            await asyncio.sleep(interval)
            try:
                current = await asyncio.to_thread(_sha256, self.loaded.path)
            except OSError:
                continue
            if current != last:
                last = current
                try:
                    await self.reload("file")
                except ReloadError:
                    pass  # reported by reload(); keep watching for the fix

    # -- admin backend -------------------------------------------------------------------------

    def has_exchange(self, name: str) -> bool:
        """Whether an exchange of that name is configured."""
        return name in self.controllers

    async def set_mode(self, exchange: str, mode: str, *, pin: bool | None, reason: str) -> dict[str, Any]:
        """An operator's mode command for one exchange (admin API)."""
        return await self.controllers[exchange].operator_set_mode(mode, pin=pin, reason=reason)

    def latest_report(self) -> Path | None:
        """The newest scheduled report file, if any."""
        return self.reports.latest() if self.reports is not None else None

    def is_ready(self) -> bool:
        """Config loaded and every exchange delivered its first snapshot."""
        return self._started and all(c.pipeline.ready for c in self.controllers.values())

    def status(self) -> dict[str, Any]:
        """The /status document."""
        return {
            "version": __version__,
            "started_unix_s": self.started_unix_s,
            "config": {"path": str(self.loaded.path), "sha256": self.loaded.sha256, "last_reload": self.last_reload},
            "ready": self.is_ready(),
            "event_loop_lag_seconds": self.loop_lag.latest_seconds(),
            "tasks": len(asyncio.all_tasks()),
            "simulator": {"control_url": self._sim_endpoints.control_url} if self._sim_endpoints else None,
            "exchanges": {name: {**c.pipeline.status(), **c.status()} for name, c in self.controllers.items()},
            "sinks": {r.sink.name: r.status() for r in self.bus.runners},
        }

    def positions(self) -> dict[str, Any]:
        """Open positions per exchange."""
        return {name: [msgspec.structs.asdict(o) for o in p.book.positions()] for name, p in self.pipelines.items()}

    def prices(self) -> dict[str, Any]:
        """Latest mark price per symbol per exchange."""
        return {name: {s: msgspec.structs.asdict(o) for s, o in p.book.mark_prices().items()}
                for name, p in self.pipelines.items()}

    def _runtime_file(self) -> Path:
        return self.config.agent.state_dir / "agent.json"

    def _remove_runtime_file(self) -> None:
        """Only our own: a start that failed (admin port taken) must not delete the running agent's file."""
        runtime = read_runtime(self.config.agent.state_dir)
        if runtime is not None and runtime.pid == os.getpid():
            runtime.path.unlink(missing_ok=True)

    def _write_runtime_file(self) -> None:
        """Where the running agent can be reached (``feedagent status`` reads it when the port was 0)."""
        path = self._runtime_file()
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"pid": os.getpid(), "admin_url": self.admin.url, "version": __version__,
                                   "started_unix_s": self.started_unix_s}))
        tmp.replace(path)


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


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _now_ms() -> int:
    return int(time.time() * 1000)
