"""The simulator's WebSocket registry: live connections, limits and heartbeats, stats, fault actions.

Venue modules (``bybit_ws``, ``binance_ws``) open connections through the hub and get three
calls from it: ``housekeeping()`` on every sweep, ``on_position_change(change)`` for each
market lifecycle change of their venue, and ``on_fault(fault)`` for faults that act at once.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from aiohttp import web

from agent.simulator.config import SimulatorConfig
from agent.simulator.faults import Fault, FaultRegistry
from agent.simulator.positions import PositionChange
from agent.simulator.ws_common import GOING_AWAY, POLICY_VIOLATION, TextHandler, WsConnection, serve
from agent.simulator.ws_faults import WS_DROP, close_code_of

log = logging.getLogger(__name__)

# Every stream name per venue, so stats list them even before a connection opens.
STREAMS: dict[str, tuple[str, ...]] = {"bybit": ("public", "private"),
                                       "binance": ("market", "private", "public", "legacy")}
# Counters every stream reports (zero until something happens).
COUNTERS = ("frames_sent", "data_frames_sent", "control_frames_sent", "frames_received", "pings_received",
            "pongs_received", "pings_sent", "pings_ignored", "silenced_frames", "malformed_frames",
            "delayed_frames", "dropped_events", "refused")
# Finished connections kept whole (with their frames) for inspection.
FINISHED_KEPT = 200


class VenueWs(Protocol):
    """What the hub needs from a venue's WebSocket side."""

    venue: str

    def housekeeping(self) -> None: ...

    def on_position_change(self, change: PositionChange) -> None: ...

    def on_fault(self, fault: Fault) -> None: ...


class WsHub:
    """All WebSocket connections of one simulator, both venues."""

    def __init__(self, config: SimulatorConfig, faults: FaultRegistry) -> None:
        self._config = config
        self._faults = faults
        self._numbers = itertools.count(1)
        self._live: dict[int, WsConnection] = {}
        self._finished: deque[WsConnection] = deque(maxlen=FINISHED_KEPT)
        self._totals: dict[tuple[str, str], Counter[str]] = {
            (v, s): Counter() for v, streams in STREAMS.items() for s in streams}
        self._venues: dict[str, VenueWs] = {}
        self._tasks: set[asyncio.Task[Any]] = set()

    def attach(self, venue_ws: VenueWs) -> None:
        """Register a venue's WebSocket side for housekeeping, market events and faults."""
        self._venues[venue_ws.venue] = venue_ws

    # -- connections -------------------------------------------------------------------------

    def open(self, *, venue: str, stream: str, fault_stream: str, request: web.Request,
             ws: web.WebSocketResponse, conn_id: str, server_ms: Callable[[], int]) -> WsConnection:
        """Record a connection whose handshake just completed."""
        totals = self._totals[(venue, stream)]
        conn = WsConnection(number=next(self._numbers), venue=venue, stream=stream, fault_stream=fault_stream,
                            path=request.path_qs, ws=ws, request=request, faults=self._faults, conn_id=conn_id,
                            server_ms=server_ms, totals=totals,
                            record_frames=self._config.ws_frames_recorded_per_connection, spawn=self.spawn)
        totals["opened"] += 1
        self._live[conn.number] = conn
        return conn

    async def run(self, conn: WsConnection, on_text: TextHandler) -> None:
        """Serve ``conn`` until it ends (dropping it at once under ``ws_drop``), then file it."""
        try:
            fault = self._faults.take(conn.venue, WS_DROP.name, stream=conn.fault_stream)
            if fault is not None:
                self._drop(conn, fault)
            await serve(conn, on_text)
        finally:
            self._live.pop(conn.number, None)
            self._finished.append(conn)

    def refused(self, venue: str, stream: str) -> None:
        """Count a handshake the venue refused (bad listenKey, bad parameters)."""
        self._totals[(venue, stream)]["refused"] += 1

    def live(self, venue: str | None = None, stream: str | None = None) -> list[WsConnection]:
        """Open connections, oldest first, optionally of one venue and stream."""
        return [c for c in self._live.values() if not c.closed and (venue is None or c.venue == venue)
                and (stream is None or c.stream == stream)]

    def connections(self, venue: str | None = None, stream: str | None = None) -> list[WsConnection]:
        """Recently finished and live connections, oldest first (for tests and drills)."""
        every = sorted([*self._finished, *self._live.values()], key=lambda c: c.number)
        return [c for c in every if (venue is None or c.venue == venue) and (stream is None or c.stream == stream)]

    def spawn(self, coro: Awaitable[Any], name: str) -> None:
        """Run a short task owned by the hub (cancelled by ``close_all``)."""
        task = asyncio.ensure_future(coro)
        task.set_name(name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- housekeeping ------------------------------------------------------------------------

    def housekeeping_interval_seconds(self) -> float:
        """How often ``housekeeping`` must run for the configured limits to hold to about 10 %."""
        cfg = self._config
        shortest = min(cfg.bybit_ws_private_idle_timeout_seconds, cfg.binance_ws_ping_interval_seconds,
                       cfg.binance_ws_pong_timeout_seconds, cfg.binance_ws_max_connection_age_seconds,
                       cfg.listen_key_validity_seconds, 1.0)
        return max(0.01, min(0.1, shortest / 10))

    def housekeeping(self) -> None:
        """Enforce connection age, idle and pong timeouts, send due pings; then the venues' own checks."""
        now = time.monotonic()
        for conn in self.live():
            if conn.max_age_seconds is not None and now - conn.opened_mono >= conn.max_age_seconds:
                conn.request_close(GOING_AWAY, "age")
            elif conn.idle_timeout_seconds is not None and now - conn.last_heartbeat_mono >= conn.idle_timeout_seconds:
                conn.request_close(GOING_AWAY, "idle")
            elif (conn.pong_timeout_seconds is not None and conn.unanswered_ping_since is not None
                  and now - conn.unanswered_ping_since >= conn.pong_timeout_seconds):
                conn.request_close(POLICY_VIOLATION, "pong_timeout")
            elif conn.ping_interval_seconds is not None and now >= conn.next_ping_mono:
                conn.next_ping_mono = now + conn.ping_interval_seconds
                if conn.unanswered_ping_since is None:
                    conn.unanswered_ping_since = now
                conn.send_ping(str(conn.server_ms()).encode())
        for venue_ws in self._venues.values():
            venue_ws.housekeeping()

    # -- market and faults -------------------------------------------------------------------

    def on_market_event(self, event: object) -> None:
        """Market listener: hand lifecycle changes to the venue's private stream."""
        if isinstance(event, PositionChange) and event.venue in self._venues:
            self._venues[event.venue].on_position_change(event)

    def on_fault(self, fault: Fault) -> None:
        """Fault listener: ``ws_drop`` closes live connections now; venues handle their own kinds."""
        try:
            if fault.kind == WS_DROP.name:
                self._drop_live(fault)
            elif fault.venue in self._venues:
                self._venues[fault.venue].on_fault(fault)
        except Exception:
            log.exception("simulator fault action failed", extra={"event": "simulator_fault_action_failed"})

    def _drop_live(self, fault: Fault) -> None:
        for conn in self.live(fault.venue):
            if fault.stream is not None and conn.fault_stream != fault.stream:
                continue
            if fault.has_lifetime:
                taken = self._faults.take(fault.venue, WS_DROP.name, stream=conn.fault_stream)
                if taken is None:
                    break
                self._drop(conn, taken)
            else:
                self._drop(conn, fault)
        if not fault.has_lifetime:
            # Without count or duration the drop acts once, on the connections open now.
            self._faults.clear(fault.id)

    @staticmethod
    def _drop(conn: WsConnection, fault: Fault) -> None:
        if fault.params.get("abort", False):
            conn.abort("fault")
        else:
            conn.request_close(close_code_of(fault), "fault", flush=False)

    # -- stats and shutdown ------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """Per venue and stream: connections opened/open/closed (by reason), frame counters and the
        topics subscribed on open connections; plus one summary per recent connection."""
        out: dict[str, Any] = {}
        for venue, streams in STREAMS.items():
            out[venue] = {}
            for stream in streams:
                totals = self._totals[(venue, stream)]
                live = self.live(venue, stream)
                entry: dict[str, Any] = {"opened": totals["opened"], "open": len(live),
                                         "closed": {k.split(":", 1)[1]: v for k, v in totals.items()
                                                    if k.startswith("closed:")}}
                entry.update({name: totals[name] for name in COUNTERS})
                entry.update({k: v for k, v in totals.items() if ":" not in k and k not in entry})
                entry["subscriptions"] = sorted({s for c in live for s in c.subscriptions})
                out[venue][stream] = entry
        out["connections"] = [c.describe() for c in self.connections()]
        return out

    async def close_all(self) -> None:
        """Close every connection (1001 going away) and cancel the hub's tasks."""
        conns = self.live()
        if conns:
            await asyncio.gather(*(c.close(GOING_AWAY, "server_stop") for c in conns), return_exceptions=True)
        tasks, self._tasks = set(self._tasks), set()
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=2.0)
