"""The simulator process: one aiohttp server for both venues and the control API."""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import string
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from typing import Any

from aiohttp import web

from agent.simulator.autopilot import Autopilot
from agent.simulator.binance_rest import BinanceRest
from agent.simulator.binance_ws import BinanceWs
from agent.simulator.bybit_rest import BybitRest
from agent.simulator.bybit_ws import BybitWs
from agent.simulator.config import SimulatorConfig
from agent.simulator.control import ControlApi, control_errors
from agent.simulator.faults import FaultRegistry
from agent.simulator.market import MarketModel, wall_clock_ms
from agent.simulator.positions import ChangeRecord
from agent.simulator.rest_common import Credentials, VenueContext
from agent.simulator.ws_common import POLICY_VIOLATION, WsConnection
from agent.simulator.ws_hub import WsHub

log = logging.getLogger(__name__)

BYBIT_PREFIX = "/bybit"
BINANCE_PREFIX = "/binance"
CONTROL_PREFIX = "/_sim"
_ALPHANUMERIC = string.ascii_letters + string.digits


@dataclass(frozen=True, slots=True)
class BybitEndpoints:
    """Where an agent reaches the simulated Bybit, and the credentials it accepts."""

    rest_url: str
    ws_public_url: str
    ws_private_url: str
    api_key: str
    api_secret: str


@dataclass(frozen=True, slots=True)
class BinanceEndpoints:
    """Where an agent reaches the simulated Binance USDⓈ-M, and the credentials it accepts."""

    rest_url: str
    ws_market_url: str
    ws_private_url: str
    api_key: str
    api_secret: str


@dataclass(frozen=True, slots=True)
class SimulatorEndpoints:
    """The contract document printed by ``feedagent simulate``."""

    bybit: BybitEndpoints
    binance: BinanceEndpoints
    control_url: str

    def to_json(self) -> str:
        """Exactly one JSON line (no trailing newline)."""
        return json.dumps(asdict(self), separators=(",", ":"))


def _random_key(length: int) -> str:
    return "".join(secrets.choice(_ALPHANUMERIC) for _ in range(length))


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


class Simulator:
    """Both venues' REST and WebSocket protocols on loopback, with a market and faults."""

    def __init__(self, config: SimulatorConfig | None = None, *,
                 clock_ms: Callable[[], int] = wall_clock_ms) -> None:
        self.config = config or SimulatorConfig()
        cfg = self.config
        self.seed = cfg.seed if cfg.seed is not None else secrets.randbits(32)
        self.market = MarketModel(cfg, seed=self.seed, clock=clock_ms)
        self.autopilot = Autopilot(self.market, seed=self.seed,
                                   max_positions_per_venue=cfg.autopilot_max_positions_per_venue)
        self.faults = FaultRegistry()
        # Key lengths as the venues issue them: Bybit 18/36, Binance 64/64.
        self.credentials = {
            "bybit": Credentials(cfg.bybit_api_key or _random_key(18), cfg.bybit_api_secret or _random_key(36)),
            "binance": Credentials(cfg.binance_api_key or _random_key(64),
                                   cfg.binance_api_secret or _random_key(64)),
        }
        self.bybit_rest = BybitRest(self._context("bybit", BYBIT_PREFIX, clock_ms))
        self.binance_rest = BinanceRest(self._context("binance", BINANCE_PREFIX, clock_ms))
        self.ws = WsHub(cfg, self.faults)
        self.bybit_ws = BybitWs(self._context("bybit", BYBIT_PREFIX, clock_ms), self.ws, seed=self.seed)
        self.binance_ws = BinanceWs(self._context("binance", BINANCE_PREFIX, clock_ms), self.ws,
                                    self.binance_rest.listen_keys)
        self.market.add_listener(self.ws.on_market_event)
        self.faults.add_listener(self.ws.on_fault)
        self.control = ControlApi(self)
        self.endpoints: SimulatorEndpoints | None = None
        self._runner: web.AppRunner | None = None
        self._tasks: list[asyncio.Task[None]] = []

    def _context(self, venue: str, prefix: str, clock_ms: Callable[[], int]) -> VenueContext:
        return VenueContext(venue, prefix, self.config, self.market, self.faults, self.credentials[venue],
                            wall_ms=clock_ms)

    @property
    def record(self) -> ChangeRecord:
        """Every position lifecycle change the simulator made, oldest first."""
        return self.market.record

    def ws_stats(self) -> dict[str, Any]:
        """WebSocket activity: per venue and stream, connections opened/open/closed (by reason),
        frame counters and live subscriptions; plus a summary of each recent connection."""
        return self.ws.stats()

    def ws_connections(self, venue: str | None = None, stream: str | None = None) -> list[WsConnection]:
        """Recent and live WebSocket connections (with their recorded frames), oldest first."""
        return self.ws.connections(venue, stream)

    def rotate_credentials(self, venue: str, *, api_key: str | None = None,
                           api_secret: str | None = None) -> Credentials:
        """Make ``venue`` accept only a new key pair (a part not given stays; neither given: a new secret).

        The old pair is refused from now on and the venue's private WebSocket connections are
        closed (a revoked key's sessions end), so clients authenticate again.
        """
        creds = self.credentials[venue]
        if api_key is None and api_secret is None:
            api_secret = _random_key(len(creds.api_secret))
        creds.api_key = api_key or creds.api_key
        creds.api_secret = api_secret or creds.api_secret
        if self.endpoints is not None:
            venue_endpoints = replace(getattr(self.endpoints, venue), api_key=creds.api_key,
                                      api_secret=creds.api_secret)
            self.endpoints = replace(self.endpoints, **{venue: venue_endpoints})
        for conn in self.ws.live(venue, "private"):
            conn.request_close(POLICY_VIOLATION, "credentials_rotated", flush=False)
        log.info("simulator credentials rotated", extra={"event": "simulator_credentials_rotated", "venue": venue})
        return creds

    def build_app(self) -> web.Application:
        """The root application: ``/bybit``, ``/binance`` and ``/_sim`` sub-applications.

        Each venue's sub-application carries that venue's fault and rate-limit middleware;
        its WebSocket routes belong there too (the middleware lets upgrades through).
        """
        bybit_app = web.Application(middlewares=[self.bybit_rest.middleware])
        bybit_app.add_routes(self.bybit_rest.routes())
        bybit_app.add_routes(self.bybit_ws.routes())
        binance_app = web.Application(middlewares=[self.binance_rest.middleware])
        binance_app.add_routes(self.binance_rest.routes())
        binance_app.add_routes(self.binance_ws.routes())
        control_app = web.Application(middlewares=[control_errors])
        control_app.add_routes(self.control.routes())
        app = web.Application()
        app.add_subapp(BYBIT_PREFIX, bybit_app)
        app.add_subapp(BINANCE_PREFIX, binance_app)
        app.add_subapp(CONTROL_PREFIX, control_app)
        return app

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> SimulatorEndpoints:
        """Listen on ``host:port`` (0 picks a free port), start the market loops, return the URLs."""
        if self._runner is not None:
            raise RuntimeError("simulator already started")
        runner = web.AppRunner(self.build_app(), access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        self._runner = runner
        try:
            site = web.TCPSite(runner, host, port)
            await site.start()
        except BaseException:
            await self.stop()
            raise
        bound_port = runner.addresses[0][1]
        self.endpoints = self._endpoints(_url_host(host), bound_port)
        if self.config.initial_positions_per_venue:
            self.autopilot.open_initial(self.config.initial_positions_per_venue)
        self._spawn("simulator/price-walk", self.config.price_tick_interval_seconds, self.market.step)
        self._spawn("simulator/autopilot", self.config.position_change_interval_seconds, self.autopilot.step)
        cfg = self.config
        self._spawn("simulator/ws-housekeeping", self.ws.housekeeping_interval_seconds(), self.ws.housekeeping)
        self._spawn("simulator/bybit-tickers", cfg.bybit_ws_ticker_interval_seconds, self.bybit_ws.push_tickers)
        self._spawn("simulator/binance-mark-1s", cfg.binance_ws_mark_price_fast_interval_seconds,
                    self.binance_ws.push_mark_prices_fast)
        self._spawn("simulator/binance-mark-3s", cfg.binance_ws_mark_price_interval_seconds,
                    self.binance_ws.push_mark_prices)
        log.info("simulator listening", extra={"event": "simulator_listening",
                                               "control_url": self.endpoints.control_url})
        return self.endpoints

    def _endpoints(self, host: str, port: int) -> SimulatorEndpoints:
        http, ws = f"http://{host}:{port}", f"ws://{host}:{port}"
        by, bn = self.credentials["bybit"], self.credentials["binance"]
        return SimulatorEndpoints(
            bybit=BybitEndpoints(f"{http}{BYBIT_PREFIX}", f"{ws}{BYBIT_PREFIX}/v5/public/linear",
                                 f"{ws}{BYBIT_PREFIX}/v5/private", by.api_key, by.api_secret),
            binance=BinanceEndpoints(f"{http}{BINANCE_PREFIX}", f"{ws}{BINANCE_PREFIX}/market",
                                     f"{ws}{BINANCE_PREFIX}/private", bn.api_key, bn.api_secret),
            control_url=f"{http}{CONTROL_PREFIX}",
        )

    def _spawn(self, name: str, interval_seconds: float, step: Callable[[], object]) -> None:
        if interval_seconds <= 0:
            return
        self._tasks.append(asyncio.create_task(self._every(interval_seconds, step), name=name))

    @staticmethod
    async def _every(interval_seconds: float, step: Callable[[], object]) -> None:
        """Run ``step`` on a fixed schedule; a failing step is logged, not fatal."""
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while True:
            next_at += interval_seconds
            # After a stall, skip missed beats instead of bursting to catch up.
            next_at = max(next_at, loop.time())
            await asyncio.sleep(next_at - loop.time())
            try:
                step()
            except Exception:
                log.exception("simulator step failed", extra={"event": "simulator_step_failed"})

    async def stop(self, timeout_seconds: float = 5.0) -> None:
        """Close WebSocket connections, cancel the loops (with a timeout), close the server; safe twice
        or unstarted."""
        await self.ws.close_all()
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=timeout_seconds)
            if pending:
                log.warning("simulator tasks did not stop in time",
                            extra={"event": "simulator_stop_timeout", "tasks": [t.get_name() for t in pending]})
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()
