"""ExchangePipeline: everything one configured exchange runs, from its sources to the event bus.

The pipeline owns two sources, ``rest`` (REST polling) and ``ws`` (the hybrid
WebSocket source), and the PositionBook. The mode decides which sources run
and which one is authoritative (feeds the book); see ``agent.mode.modes``.
A mode change is make-before-break: the new authoritative source starts and
feeds the book *alongside* the old one until it has delivered a full position
snapshot; only then does the old one stop. The book's ordering guards make the
overlap safe, so no lifecycle event is lost or duplicated.

Every event is numbered by the exchange's SeqAllocator; lifecycle events
(positions, modes, status) are written ahead to the LifecycleStore before they
are published, so a restart diffs against what was last published and sends
again only what no sink confirmed (see agent.core.lifecycle_store).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from apscheduler.schedulers.asyncio import AsyncIOScheduler

from agent.config.models import ExchangeConfig
from agent.core.events import Event, ModeEvent, StatusEvent, coalesce_key
from agent.core.identity import SeqAllocator
from agent.core.lifecycle_store import HeldPosition, LifecycleStore, PersistedLifecycle, account_fingerprint
from agent.core.observations import MarkPriceBatch, PositionSnapshot
from agent.core.position_book import PositionBook
from agent.exchanges import create_rest_api
from agent.exchanges.base import ApiCredentials, ResolvedEndpoints, VenueRestApi
from agent.mode.modes import ModePlan, plan_for
from agent.sinks.bus import EventBus
from agent.sources.rest_poller import RestSource
from agent.telemetry import tracing
from agent.telemetry.metrics import Metrics
from agent.transport.errors import RestError

log = logging.getLogger("agent.pipeline")

# Observations of a source that does not feed the book (shadow mode's candidate) go here.
ShadowObserver = Callable[[str, PositionSnapshot | MarkPriceBatch], None]

# Undelivered lifecycle events kept for redelivery; past this a stalled sink's oldest are forgotten (logged).
_MAX_OUTBOX_EVENTS = 10_000


class ModeChangeError(Exception):
    """A mode change was abandoned; the previous mode is still in force."""


class ExchangePipeline:
    """One exchange: its REST API, its sources, its PositionBook; events go to the bus.

    Failures stay inside: a pipeline that cannot reach its venue keeps retrying
    and reports the error on /status; it never raises to the supervisor.
    """

    def __init__(self, *, name: str, config: ExchangeConfig, endpoints: ResolvedEndpoints,
                 credentials: ApiCredentials | None, bus: EventBus, scheduler: AsyncIOScheduler,
                 metrics: Metrics, api: VenueRestApi | None = None, state_dir: Path | None = None) -> None:
        self.name = name
        self.config = config
        self.endpoints = endpoints
        self.credentials = credentials
        self._bus = bus
        self._metrics = metrics
        self._scheduler = scheduler
        self.ids = SeqAllocator(name, state_dir / "seq" / f"{name}.json" if state_dir else None)
        self.book = PositionBook(name, config.venue, min_emit_interval_ms=config.min_emit_interval_ms, ids=self.ids)
        self.lifecycle = LifecycleStore(
            state_dir / "lifecycle" / f"{name}.json", exchange=name,
            account=account_fingerprint(config.venue, config.category, credentials.api_key if credentials else None),
        ) if state_dir else None
        self._outbox: list[Event] = []
        self.trust: dict[str, dict[str, Any]] = {}  # scope -> {"state", "reason", "since_ms"}
        self.api = api or create_rest_api(name, config, endpoints, credentials, metrics)
        self.rest = RestSource(
            exchange=name, api=self.api, scheduler=scheduler, metrics=metrics,
            positions_interval_seconds=config.rest.positions_interval_seconds,
            prices_interval_seconds=config.rest.prices_interval_seconds,
            clock_sync_interval_seconds=config.rest.server_time_sync_interval_seconds,
            symbols=self.followed_symbols,
            on_positions=lambda s: self._ingest("rest", s), on_prices=lambda b: self._ingest("rest", b),
            on_positions_failed=lambda reason: self._source_trouble("rest", reason))
        self.ws: Any = None  # HybridSource, built on first use
        self.plan: ModePlan | None = None
        self.shadow_observer: ShadowObserver | None = None
        self.last_transition: dict[str, Any] | None = None
        self._feeding: set[str] = set()
        self._running: set[str] = set()
        self._mode_lock = asyncio.Lock()
        self._stopping = asyncio.Event()  # set by stop(): a pending mode change gives up at once
        self._flush_handle: asyncio.TimerHandle | None = None
        self.started_unix_s: float | None = None
        metrics.init_exchange(name)

    # -- state -----------------------------------------------------------------------------------

    @property
    def mode(self) -> str | None:
        """The effective mode (None before start)."""
        return self.plan.mode if self.plan else None

    @property
    def ready(self) -> bool:
        """True once the authoritative source delivered a full snapshot (and prices, when any are followed)."""
        if self.plan is None:
            return False
        source = self._source(self.plan.authority)
        return source is not None and source.ready.is_set() and (
            bool(self.book.mark_prices()) or not self.config.symbols)

    def followed_symbols(self) -> list[str]:
        """Configured symbols plus every symbol with an open position."""
        return sorted(set(self.config.symbols) | self.book.open_symbols())

    # -- lifecycle -------------------------------------------------------------------------------

    @property
    def running_sources(self) -> frozenset[str]:
        """Names of the sources running now (``rest``, ``ws``)."""
        return frozenset(self._running)

    async def start(self, mode: str | None = None) -> None:
        """Start in ``mode`` (default: the configured one); an unreachable venue is retried, not raised."""
        self.started_unix_s = time.time()
        try:
            await self.api.start()
        except RestError as exc:
            log.warning("exchange start degraded", extra={"event": "exchange_start_degraded",
                                                          "exchange": self.name, "error": str(exc)})
        self._restore()
        plan = plan_for(mode or self.config.mode, self.config.shadow.primary)
        async with self._mode_lock:
            for name in plan.sources:
                await self._start_source(name)
            self._feeding = {plan.authority}
            self.plan = plan
        self._metrics.set_mode(self.name, plan.mode)
        log.info("exchange started", extra={"event": "exchange_started", "exchange": self.name,
                                            "venue": self.config.venue, "mode": plan.mode})

    def abandon_mode_change(self) -> None:
        """Make a pending mode change give up now (and refuse new ones): the pipeline is stopping."""
        self._stopping.set()

    async def stop(self) -> None:
        """Give up a pending mode change, stop every source and close the REST session; safe to call twice."""
        self.abandon_mode_change()
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        async with self._mode_lock:
            for name in list(self._running):
                await self._stop_source(name)
        await self.api.close()
        self.checkpoint()

    async def set_mode(self, mode: str, *, reason: str, automatic: bool, primary: str | None = None,
                       ready_timeout_seconds: float | None = None) -> ModeEvent | None:
        """Switch mode make-before-break; returns the mode event, or None when nothing changed.

        Raises ModeChangeError (and keeps the old mode) when the new authoritative
        source is not ready within the timeout, or the pipeline is stopping.
        """
        # One span per transition, always exported; the "mode changed" log record inside it is the trace event.
        with tracing.start_span("feedagent.mode.transition", keep_reason="mode_transition", attributes={
                "feedagent.exchange": self.name, "feedagent.venue": self.config.venue,
                "feedagent.transition.to": mode, "feedagent.transition.reason": reason,
                "feedagent.transition.automatic": automatic}) as span:
            target = plan_for(mode, primary or self.config.shadow.primary)
            async with self._mode_lock:
                current = self.plan
                span.set_attributes({"feedagent.transition.from": current.mode if current else "none",
                                     "feedagent.transition.changed": current != target})
                if current == target:
                    return None
                started = [n for n in target.sources if n not in self._running]
                for name in started:
                    await self._start_source(name)
                self._feeding = self._feeding | {target.authority}
                new_source = self._source(target.authority)
                assert new_source is not None
                timeout = ready_timeout_seconds or self._ready_timeout_seconds(target.authority)
                if not await self._until_ready(new_source, timeout):
                    self._feeding = {current.authority} if current else set()
                    for name in started:
                        await self._stop_source(name)
                    if self._stopping.is_set():
                        why = "abandoned: the exchange is stopping"
                    else:
                        why = f"{target.authority} source not ready within {timeout:.1f}s"
                        self._metrics.mode_transition_failures.labels(self.name, target.mode).inc()
                    raise ModeChangeError(f"{self.name}: {why}; staying in {current.mode if current else 'no mode'}")
                self._feeding = {target.authority}
                for name in [n for n in self._running if n not in target.sources]:
                    await self._stop_source(name)
                self.plan = target
                seq, event_id = self.ids.next()
                event = ModeEvent(id=event_id, seq=seq, exchange=self.name,
                                  from_=current.mode if current else "none", to=target.mode,
                                  reason=reason, automatic=automatic, ts_ms=_now_ms())
            self._record_transition(event, current, target)
            return event

    async def _until_ready(self, source: Any, timeout_seconds: float) -> bool:
        """Wait until ``source`` is ready; False after the timeout or once the pipeline is stopping."""
        waits = [asyncio.ensure_future(source.ready.wait()), asyncio.ensure_future(self._stopping.wait())]
        try:
            await asyncio.wait(waits, timeout=timeout_seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waits:
                waiter.cancel()
        return source.ready.is_set() and not self._stopping.is_set()

    async def set_credentials(self, credentials: ApiCredentials | None) -> None:
        """Use another key pair: REST from its next request, the WebSocket side after reconnecting with it.

        A running WebSocket source is restarted (its private stream authenticates
        with the key); its REST snapshot on reconnect keeps the book whole.
        """
        async with self._mode_lock:
            restart = self.ws is not None and "ws" in self._running and not self._stopping.is_set()
            if restart:
                await self.ws.stop()
            self.credentials = credentials
            self.api.set_credentials(credentials)
            if self.ws is not None:
                self.ws.use_credentials(credentials)
            if restart:
                await self.ws.start()
        log.info("exchange credentials replaced", extra={"event": "credentials_replaced", "exchange": self.name,
                                                          "ws_restarted": restart})

    def _record_transition(self, event: ModeEvent, old: ModePlan | None, new: ModePlan) -> None:
        self._publish(event, source="agent")
        self._metrics.set_mode(self.name, new.mode)
        # operators may write any reason: it goes to the event and the log; the label stays bounded
        label = event.reason if event.automatic or event.reason in ("config_reload", "config_reload_undone") \
            else "operator"
        self._metrics.mode_transitions.labels(self.name, event.from_, event.to, label).inc()
        self.last_transition = {"from": event.from_, "to": event.to, "reason": event.reason,
                                "automatic": event.automatic, "ts_ms": event.ts_ms,
                                "authority": new.authority}
        log.warning("mode changed", extra={"event": "mode_changed", "exchange": self.name, "from": event.from_,
                                           "to": event.to, "reason": event.reason, "automatic": event.automatic})

    def _ready_timeout_seconds(self, source: str) -> float:
        rest = self.config.rest
        if source == "rest":
            return rest.positions_interval_seconds + 2 * rest.request_timeout_seconds
        ws = self.config.ws
        return ws.connect_timeout_seconds * 2 + rest.request_timeout_seconds

    def _source(self, name: str) -> Any:
        return self.rest if name == "rest" else self.ws

    async def _start_source(self, name: str) -> None:
        if name == "ws" and self.ws is None:
            self.ws = self._build_ws_source()
        await self._source(name).start()
        self._running.add(name)

    async def _stop_source(self, name: str) -> None:
        self._running.discard(name)
        self._feeding.discard(name)
        await self._source(name).stop()

    def _build_ws_source(self) -> Any:
        from agent.sources.hybrid import HybridSource

        return HybridSource(
            exchange=self.name, config=self.config, endpoints=self.endpoints, credentials=self.credentials,
            api=self.api, scheduler=self._scheduler, metrics=self._metrics, symbols=self.followed_symbols,
            on_positions=lambda s: self._ingest("ws", s), on_prices=lambda b: self._ingest("ws", b),
            authoritative=lambda: "ws" in self._feeding and self.plan is not None and self.plan.authority == "ws",
            on_trouble=lambda reason: self._source_trouble("ws", reason))

    # -- observations -> events ------------------------------------------------------------------

    def _ingest(self, origin: str, observation: PositionSnapshot | MarkPriceBatch) -> None:
        """Route one observation: into the book when ``origin`` feeds it, else to the shadow observer."""
        if origin not in self._feeding:
            if self.shadow_observer is not None and origin in self._running:
                self.shadow_observer(origin, observation)
            return
        if self.shadow_observer is not None and self.plan is not None and self.plan.mode == "shadow":
            self.shadow_observer(origin, observation)
        if isinstance(observation, PositionSnapshot):
            before = self.book.open_symbols()
            events: list[Event] = list(self.book.apply_positions(observation))
            if observation.source == "rest":  # a REST snapshot says whether the view is whole; a WS delta cannot
                if observation.complete:
                    events.extend(self._trust_event("positions", "ok", "snapshot_complete"))
                else:
                    events.extend(self._trust_event("positions", "degraded", "snapshot_incomplete"))
            self._publish_all(events, source=observation.source)
            self._metrics.open_positions.labels(self.name).set(len(self.book.positions()))
            if self.book.open_symbols() != before and self.ws is not None and "ws" in self._running:
                self.ws.follow_symbols_changed()
        else:
            self._bus.publish_all(self.book.apply_mark_prices(observation, _now_ms()), observation.source)
            self._schedule_flush()
        if self.ready:
            self._metrics.exchange_ready.labels(self.name).set(1)

    def _schedule_flush(self) -> None:
        due_ms = self.book.next_flush_ms()
        if due_ms is None or self._flush_handle is not None:
            return
        delay = max(0.0, (due_ms - _now_ms()) / 1000)
        self._flush_handle = asyncio.get_running_loop().call_later(delay, self._flush)

    def _flush(self) -> None:
        self._flush_handle = None
        for event in self.book.flush_due(_now_ms()):
            self._bus.publish(event, event.source)
        self._schedule_flush()

    # -- identity, trust and the write-ahead lifecycle state ---------------------------------

    def _source_trouble(self, origin: str, reason: str) -> None:
        """A source says its view is behind (a failed poll, the private stream down)."""
        if self.plan is None or origin != self.plan.authority or origin not in self._feeding:
            return  # only the authoritative source's trouble makes the published view untrustworthy
        self._publish_all(self._trust_event("positions", "degraded", reason), source=origin)

    def _trust_event(self, scope: str, state: str, reason: str) -> list[StatusEvent]:
        """A status event when ``scope`` changes state (nothing when it stays)."""
        if scope == "positions":
            # While the view is behind, a price-driven update would present an old size as fresh.
            self.book.positions_trusted = state == "ok"
        current = self.trust.get(scope)
        if (current["state"] if current else "ok") == state:
            return []
        now = _now_ms()
        self.trust[scope] = {"state": state, "reason": reason, "since_ms": now}
        self._metrics.exchange_degraded.labels(self.name, scope).set(0 if state == "ok" else 1)
        level = logging.INFO if state == "ok" else logging.WARNING
        log.log(level, "exchange view trust changed", extra={
            "event": "exchange_trust_changed", "exchange": self.name, "scope": scope, "state": state, "reason": reason})
        seq, event_id = self.ids.next()
        return [StatusEvent(id=event_id, seq=seq, exchange=self.name, scope=scope, state=state,  # type: ignore[arg-type]
                            reason=reason, ts_ms=now)]

    def _publish(self, event: Event, *, source: str) -> None:
        self._publish_all([event], source=source)

    def _publish_all(self, events: Iterable[Event], *, source: str) -> None:
        """Publish in order; lifecycle events are persisted (write-ahead) before any sink sees them."""
        batch = list(events)
        if not batch:
            return
        lifecycle = [e for e in batch if coalesce_key(e) is None]
        if lifecycle and self.lifecycle is not None:
            self._outbox.extend(lifecycle)
            self.checkpoint()
        self._bus.publish_all(batch, source)

    def checkpoint(self) -> None:
        """Persist positions, trust and the lifecycle events no sink has confirmed yet."""
        if self.lifecycle is None:
            return
        delivered = self._bus.delivered_through(self.name)
        outbox = [e for e in self._outbox if e.seq > delivered]
        if len(outbox) > _MAX_OUTBOX_EVENTS:
            log.error("lifecycle outbox full; the oldest unconfirmed events will not be redelivered",
                      extra={"event": "lifecycle_outbox_trimmed", "exchange": self.name,
                             "trimmed": len(outbox) - _MAX_OUTBOX_EVENTS})
            outbox = outbox[-_MAX_OUTBOX_EVENTS:]
        self._outbox = outbox
        self.lifecycle.save(PersistedLifecycle(
            exchange=self.name, account=self.lifecycle.account, saved_ms=_now_ms(),
            positions=[HeldPosition(obs=obs, source=src, ts_received_ms=ts) for obs, src, ts in self.book.held()],
            status={scope: t["state"] for scope, t in self.trust.items()}, outbox=outbox))

    def _restore(self) -> None:
        """Take back what the last run persisted: redeliver its unconfirmed events, hold its positions."""
        if self.lifecycle is None or self.book.held():
            return
        state = self.lifecycle.load()
        if state is None:
            return
        self.book.restore([(h.obs, h.source, h.ts_received_ms) for h in state.positions])
        # Until the first complete snapshot the restored sizes are from before the restart.
        self.book.positions_trusted = False
        self.trust = {scope: {"state": st, "reason": "restored", "since_ms": state.saved_ms}
                      for scope, st in state.status.items()}
        for scope, st in state.status.items():
            self._metrics.exchange_degraded.labels(self.name, scope).set(0 if st == "ok" else 1)
        self._outbox = list(state.outbox)
        if self._outbox:
            self._metrics.lifecycle_redelivered.labels(self.name).inc(len(self._outbox))
            self._bus.publish_all(self._outbox, "restore")
        log.info("lifecycle restored", extra={"event": "lifecycle_restored", "exchange": self.name,
                                              "positions": len(state.positions), "redelivered": len(self._outbox)})

    # -- operating surface -----------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """The /status entry of this exchange."""
        api_status = self.api.status
        entry: dict[str, Any] = {
            "venue": self.config.venue,
            "environment": self.config.environment,
            "configured_mode": self.config.mode,
            "effective_mode": self.mode,
            "authoritative_source": self.plan.authority if self.plan else None,
            "started_unix_s": self.started_unix_s,
            "running_sources": sorted(self._running),
            "last_transition": self.last_transition,
            "ready": self.ready,
            "open_positions": len(self.book.positions()),
            "followed_symbols": self.followed_symbols(),
            "last_event_seq": self.ids.last,
            "trust": self.trust or {"positions": {"state": "ok", "reason": None, "since_ms": None}},
            "polls": {kind: s.as_dict() for kind, s in self.rest.status.items()},
            "rest": {
                "clock_offset_ms": api_status.clock_offset_ms,
                "rate_limit_remaining_ratio": api_status.rate_limit_remaining_ratio,
                "backoff_until_unix_s": api_status.backoff_until_unix_s,
                "last_error": api_status.last_error,
                "last_error_unix_s": api_status.last_error_unix_s,
            },
        }
        if self.ws is not None:
            entry["ws"] = self.ws.status()
        return entry


def _now_ms() -> int:
    return int(time.time() * 1000)
