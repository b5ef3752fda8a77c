"""HybridSource: positions from the private WebSocket, mark prices from the public one, REST as reconciler.

- On every private (re)connect or key rotation: a full REST position snapshot,
  then WebSocket deltas (a position stream says nothing until something changes,
  so silence never means flat).
- Mark-price subscriptions follow the configured symbols plus every symbol with
  an open position (subscribe on open, unsubscribe on close).
- Every ``hybrid.reconcile_interval_seconds`` a REST snapshot is compared with
  this source's own view; disagreements are counted by kind and, while this
  source is authoritative, corrected (the snapshot is handed on, the book emits
  the correcting events). In shadow mode with a REST primary the view is left
  as the WebSocket made it, so the comparison still sees what the stream missed.
- Gap fill: while the private stream is not live and this source is
  authoritative, REST polls positions every ``rest.positions_interval_seconds``
  and its complete snapshots are handed on; the stream's own snapshot on
  reconnect hands back. The owner hears ``private_stream_down`` at once (the
  view is behind until the first fill) through ``on_trouble``.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable, Sequence
from typing import Any

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.interval import IntervalTrigger

from agent.config.models import ExchangeConfig
from agent.core.observations import MarkPriceBatch, PositionObs, PositionSnapshot
from agent.core.position_book import PositionBook
from agent.core.tasks import TaskOwner
from agent.exchanges import create_ws_venue
from agent.exchanges.base import ApiCredentials, ResolvedEndpoints, VenueRestApi
from agent.sources.reconcile import diff_positions
from agent.telemetry import tracing
from agent.telemetry.metrics import Metrics
from agent.transport.errors import RestError
from agent.transport.ws import ResilientWebSocket
from agent.transport.ws_backoff import ConnectionBudget
from agent.transport.ws_config import WsConfig
from agent.transport.ws_delivery import WsDataQueue

log = logging.getLogger("agent.sources.hybrid")

_SNAPSHOT_RETRY_INITIAL_SECONDS = 0.5
_SNAPSHOT_RETRY_MAX_SECONDS = 30.0


class HybridSource:
    """The WebSocket side of one exchange (public + private streams) with REST snapshots."""

    def __init__(self, *, exchange: str, config: ExchangeConfig, endpoints: ResolvedEndpoints,
                 credentials: ApiCredentials | None, api: VenueRestApi, scheduler: AsyncIOScheduler,
                 metrics: Metrics, symbols: Callable[[], Sequence[str]],
                 on_positions: Callable[[PositionSnapshot], None],
                 on_prices: Callable[[MarkPriceBatch], None],
                 authoritative: Callable[[], bool] = lambda: True,
                 on_trouble: Callable[[str], None] = lambda reason: None) -> None:
        self.exchange = exchange
        self.config = config
        self.api = api
        self._endpoints = endpoints
        self._credentials = credentials
        self._scheduler = scheduler
        self._metrics = metrics
        self._symbols = symbols
        # This source's own position view: what it handed on, never what another source fed the book.
        self.view = PositionBook(exchange, config.venue)
        self._on_positions = on_positions
        self._authoritative = authoritative
        self._on_trouble = on_trouble
        self._private_live = False
        self._on_prices = on_prices
        self._tasks = TaskOwner(f"{exchange}/hybrid")
        self.ready = asyncio.Event()
        self.venue: Any = None
        self.public: ResilientWebSocket | None = None
        self.private: ResilientWebSocket | None = None
        self._public_queue: WsDataQueue | None = None
        self._private_queue: WsDataQueue | None = None
        self._job_id = f"{exchange}/hybrid-reconcile"
        self._resync_wanted = asyncio.Event()
        self.last_reconcile: dict[str, Any] | None = None
        self.reconciles = 0
        self.snapshots_taken = 0
        self._started_mono = time.monotonic()
        self._last_public_mono: dict[str, float] = {}

    # -- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        """Connect both streams (in the background), subscribe, schedule reconciliation."""
        if self.public is not None:
            return
        self.ready.clear()
        self._started_mono = time.monotonic()
        self._last_public_mono.clear()
        cfg = self.config
        self.venue = create_ws_venue(self.exchange, cfg, self._endpoints, self._credentials, self.api,
                                     self._metrics, on_rotation_needed=self._rotate_private)
        ws_config = _ws_config(cfg)
        budget = ConnectionBudget(*self.venue.connection_budget)
        self._public_queue = WsDataQueue(self.venue.public_is_streaming, metrics=self._metrics,
                                         exchange=self.exchange, stream="public")
        self._private_queue = WsDataQueue(lambda topic: False, metrics=self._metrics,
                                          exchange=self.exchange, stream="private")
        self.public = ResilientWebSocket(
            self.venue.public, exchange=self.exchange, stream="public", config=ws_config, metrics=self._metrics,
            budget=budget, on_data=self._public_queue.put, on_connected=self._public_connected)
        self.private = ResilientWebSocket(
            self.venue.private, exchange=self.exchange, stream="private", config=ws_config, metrics=self._metrics,
            budget=budget, on_data=self._private_queue.put, on_connected=self._private_connected,
            on_disconnected=self._note_private_lost, on_notice=self.venue.on_notice)
        self._private_lost_mono = time.monotonic()
        await self.venue.start()
        # Consumers apply what they parse downstream; a crash there restarts them (counted), never ends the stream.
        restarts = self._metrics.task_restarts
        self._tasks.spawn_supervised("public-consumer", self._consume_public,
                                     on_restart=restarts.labels(self.exchange, "hybrid/public-consumer").inc)
        self._tasks.spawn_supervised("private-consumer", self._consume_private,
                                     on_restart=restarts.labels(self.exchange, "hybrid/private-consumer").inc)
        self._tasks.spawn("resync", self._resync_loop())
        self._tasks.spawn("gap-fill", self._gap_fill_loop())
        await self.public.subscribe(self._wanted_public_topics())
        await self.private.subscribe(self.venue.private_topics())
        await self.public.start()
        await self.private.start()
        self._scheduler.add_job(self._fire_reconcile, IntervalTrigger(seconds=cfg.hybrid.reconcile_interval_seconds),
                                id=self._job_id, name=self._job_id, coalesce=True, max_instances=1,
                                replace_existing=True, misfire_grace_time=None)

    def use_credentials(self, credentials: ApiCredentials | None) -> None:
        """Authenticate with ``credentials`` from the next ``start`` on (the owner restarts a running source)."""
        self._credentials = credentials

    async def stop(self) -> None:
        """Close both streams, stop the key owner and every task; safe to call twice."""
        try:
            self._scheduler.remove_job(self._job_id)
        except Exception:  # noqa: BLE001 - not scheduled, or the scheduler is already down
            pass
        for ws in (self.public, self.private):
            if ws is not None:
                await ws.stop()
        if self.venue is not None:
            await self.venue.stop()
        await self._tasks.cancel_all(timeout_seconds=2.0)
        self.public = self.private = None
        self.venue = None
        self.ready.clear()
        self._private_live = False
        self.view = PositionBook(self.exchange, self.config.venue)

    # -- subscriptions ---------------------------------------------------------------------------

    def _wanted_public_topics(self) -> list[str]:
        return sorted(self.venue.mark_price_topic(s) for s in self._symbols())

    def follow_symbols_changed(self) -> None:
        """The set of followed symbols changed (a position opened or closed): adjust subscriptions."""
        if self.public is not None and not self._tasks.running("follow"):
            self._tasks.spawn("follow", self._sync_public_topics())

    async def _sync_public_topics(self) -> None:
        assert self.public is not None
        wanted = set(self._wanted_public_topics())
        current = set(self.public.topics())
        if wanted - current:
            now = time.monotonic()  # a topic followed (again) is as fresh as its subscription, not its old data
            for topic in wanted - current:
                self._last_public_mono[topic] = now
            await self.public.subscribe(sorted(wanted - current))
        if current - wanted:
            for topic in current - wanted:
                self._last_public_mono.pop(topic, None)
            await self.public.unsubscribe(sorted(current - wanted))
            for topic in current - wanted:
                self.venue.forget_public_topic(topic)

    # -- streams -> observations -----------------------------------------------------------------

    async def _public_connected(self, generation: int) -> None:
        self.venue.public_reconnected()

    async def _private_connected(self, generation: int) -> None:
        # Whatever happened while the stream was down is only in REST: snapshot first, deltas after.
        self.snapshots_taken += 1
        reason = "connect" if generation <= 1 else "reconnect"
        if await self._snapshot(reason) is None:
            self._resync_wanted.set()

    def _rotate_private(self) -> None:
        """The key owner replaced the listenKey: rotate the private stream make-before-break."""
        if self.private is not None:
            self.private.request_rotation()

    async def _consume_public(self) -> None:
        assert self._public_queue is not None
        while True:
            message = await self._public_queue.get()
            self._last_public_mono[message.topic] = time.monotonic()
            try:
                prices = self.venue.parse_public(message.topic, message.payload)
            except Exception:  # noqa: BLE001 - a bad frame is counted, never fatal to the stream
                self._metrics.messages_malformed.labels(self.exchange, "ws").inc()
                continue
            if prices:
                self._on_prices(MarkPriceBatch(prices=tuple(prices), source="ws",
                                               ts_received_ms=message.ts_received_ms))

    async def _consume_private(self) -> None:
        assert self._private_queue is not None
        overflowed = 0
        while True:
            message = await self._private_queue.get()
            if self._private_queue.overflowed != overflowed:
                overflowed = self._private_queue.overflowed
                self._resync_wanted.set()  # an event was dropped: only a snapshot restores a complete view
            try:
                rows = self.venue.parse_private(message.topic, message.payload)
            except Exception:  # noqa: BLE001
                self._metrics.messages_malformed.labels(self.exchange, "ws").inc()
                continue
            if rows:
                self._hand_on(PositionSnapshot(positions=tuple(rows), source="ws",
                                               ts_received_ms=message.ts_received_ms, complete=False))

    # -- REST snapshots and reconciliation -------------------------------------------------------

    def _hand_on(self, snapshot: PositionSnapshot) -> None:
        self.view.apply_positions(snapshot)
        self._on_positions(snapshot)

    async def _snapshot(self, reason: str) -> list[PositionObs] | None:
        """Take a full REST snapshot and hand it on; None when REST failed.

        Any snapshot but a gap fill means the private stream is live again (its deltas
        follow the snapshot) and a complete one makes the source ready.
        """
        with tracing.start_span("feedagent.hybrid.snapshot", attributes={
                "feedagent.exchange": self.exchange, "feedagent.venue": self.config.venue,
                "feedagent.snapshot.reason": reason}) as span:
            asked_ms = _now_ms()
            try:
                rows = await self.api.fetch_positions()
            except RestError as exc:
                tracing.set_error(span, exc.outcome)
                log.warning("position snapshot failed", extra={"event": "snapshot_failed", "exchange": self.exchange,
                                                               "reason": reason, "error": str(exc)})
                return None
            complete = self.api.status.last_positions_malformed_rows == 0
            span.set_attribute("feedagent.snapshot.positions", len(rows))
            self.venue.seed_private(rows, complete=complete)
            self._metrics.position_snapshots.labels(self.exchange, reason).inc()
            self._hand_on(PositionSnapshot(positions=tuple(rows), source="rest", ts_received_ms=_now_ms(),
                                           complete=complete, as_of_ms=asked_ms))
            if reason != "gap_fill":
                self._private_live = True
                if complete:
                    self.ready.set()
            return rows

    async def _gap_fill_loop(self) -> None:
        """While the private stream is not live and this source is authoritative, REST fills the gap."""
        interval = self.config.rest.positions_interval_seconds
        while True:
            if not self._private_live and self.ready.is_set() and self._authoritative():
                await self._snapshot("gap_fill")
            await asyncio.sleep(interval)

    async def _resync_loop(self) -> None:
        """Retry a wanted snapshot with capped, jittered backoff until it succeeds."""
        delay = _SNAPSHOT_RETRY_INITIAL_SECONDS
        while True:
            await self._resync_wanted.wait()
            if await self._snapshot("resync") is not None:
                self._resync_wanted.clear()
                delay = _SNAPSHOT_RETRY_INITIAL_SECONDS
                continue
            await asyncio.sleep(random.uniform(0, delay))
            delay = min(delay * 2, _SNAPSHOT_RETRY_MAX_SECONDS)

    async def _fire_reconcile(self) -> None:
        if not self._tasks.running("reconcile"):
            self._tasks.spawn("reconcile", self.reconcile())

    async def reconcile(self) -> dict[str, int] | None:
        """Compare a REST snapshot with the book, count the disagreements, correct the book."""
        with tracing.start_span("feedagent.hybrid.reconcile", attributes={
                "feedagent.exchange": self.exchange, "feedagent.venue": self.config.venue}) as span:
            held = {p.key: p for p in self.view.positions()}
            asked_ms = _now_ms()
            try:
                rows = await self.api.fetch_positions()
            except RestError as exc:
                tracing.set_error(span, exc.outcome)
                self._metrics.reconcile_runs.labels(self.exchange, "error").inc()
                self.last_reconcile = {"ts_ms": asked_ms, "error": str(exc)}
                return None
            complete = self.api.status.last_positions_malformed_rows == 0
            disagreements = diff_positions(held, rows, complete=complete)
            for kind, count in disagreements.items():
                if count:
                    self._metrics.reconcile_disagreements.labels(self.exchange, kind).inc(count)
            self._metrics.reconcile_runs.labels(self.exchange, "ok").inc()
            self.reconciles += 1
            self.last_reconcile = {"ts_ms": asked_ms, "disagreements": disagreements}
            span.set_attribute("feedagent.reconcile.disagreements", sum(disagreements.values()))
            if any(disagreements.values()):
                tracing.keep(span, "reconcile_corrected")  # rare and worth a look: exported whatever the ratio
                log.warning("reconciliation corrected the WebSocket view",
                            extra={"event": "reconcile_corrected", "exchange": self.exchange, **disagreements})
            if self._authoritative():
                self.venue.seed_private(rows, complete=complete)
                self._hand_on(PositionSnapshot(positions=tuple(rows), source="rest", ts_received_ms=_now_ms(),
                                               complete=complete, as_of_ms=asked_ms))
            return disagreements

    # -- health ----------------------------------------------------------------------------------

    def price_data_age_seconds(self) -> float:
        """Worst data age over the mark-price topics followed now (from data messages, not pings)."""
        now = time.monotonic()
        topics = self._wanted_public_topics() if self.venue is not None else []
        if not topics:
            return 0.0
        return max(now - self._last_public_mono.get(t, self._started_mono) for t in topics)

    def private_down_seconds(self) -> float:
        """How long the private stream has been without a working connection (0 while connected)."""
        if self.private is None:
            return 0.0
        snap = self.private.snapshot()
        if snap.connected:
            return 0.0
        return time.monotonic() - self._private_lost_mono

    def _note_private_lost(self, reason: str) -> None:
        self._private_lost_mono = time.monotonic()
        if self._private_live:
            self._private_live = False
            self._on_trouble("private_stream_down")

    def counters(self) -> dict[str, int]:
        """Cumulative counts the health checks turn into rates."""
        pub = self.public.snapshot() if self.public else None
        prv = self.private.snapshot() if self.private else None
        # read this one child, not the registry: a registry lookup collects every metric, every second
        auth_child = self._metrics.ws_connects.labels(self.exchange, "private", "auth_rejected")
        auth = next(s.value for f in auth_child.collect() for s in f.samples if s.name.endswith("_total"))
        return {
            "reconnects": (pub.reconnects if pub else 0) + (prv.reconnects if prv else 0)
            + (pub.connect_failures if pub else 0) + (prv.connect_failures if prv else 0),
            "auth_failures": int(auth or 0),
            "reconciles": self.reconciles,
        }

    def heartbeat_rtt_seconds(self) -> float | None:
        """The private stream's last application ping round trip (None on venues without one)."""
        return self.private.snapshot().last_rtt_seconds if self.private else None

    # -- status ----------------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """The /status view of the WebSocket side."""
        return {
            "ready": self.ready.is_set(),
            "public": self.public.snapshot().to_dict() if self.public else None,
            "private": self.private.snapshot().to_dict() if self.private else None,
            "snapshots_taken": self.snapshots_taken,
            "last_reconcile": self.last_reconcile,
            **(self.venue.status() if self.venue is not None else {}),
        }


def _ws_config(cfg: ExchangeConfig) -> WsConfig:
    ws = cfg.ws
    return WsConfig(
        connect_timeout_seconds=ws.connect_timeout_seconds,
        ping_interval_seconds=ws.ping_interval_seconds,
        pong_timeout_seconds=ws.pong_timeout_seconds,
        backoff_initial_seconds=ws.reconnect_initial_delay_seconds,
        backoff_max_seconds=ws.reconnect_max_delay_seconds,
        rotate_after_seconds=ws.rotate_after_seconds,
        hook_timeout_seconds=cfg.rest.request_timeout_seconds * 2,
    )


def _now_ms() -> int:
    return int(time.time() * 1000)
