"""A venue-neutral, resilient WebSocket stream (see DESIGN.md §2, failure-modes rows 1, 2, 5, 12-14, 17, 19).

``ResilientWebSocket`` owns one logical stream: a connection loop that
connects, authenticates, replays the subscription registry and then serves
the link until it ends; a watchdog that measures data age per topic and
retries failed subscriptions; and, when configured, a planned
make-before-break rotation. Every task is named ``{exchange}/{stream}/…``
(``run``, ``watchdog``, ``reader``, ``heartbeat``; ``rotation/…`` while a
replacement link is being prepared) and cancelled with a timeout on ``stop``.

Delivery: ``on_data(topic, payload, ts_received_ms)`` is called from the
reader task, synchronously; it must be cheap (hand the message to a
``WsDataQueue``). During a rotation both links deliver until the old one
closes, so a message may arrive twice: consumers drop messages that are not
newer than the last applied exchange timestamp (Bybit ``ts``/``cs``, Binance
``E``). ``on_connected(generation)`` runs after every link becomes active
(reconnect or rotation), once auth and subscribe acks are done, so the caller
can take a REST snapshot; ``on_disconnected(reason)`` after an active link
ended (not for a failed attempt, a rotation or ``stop``). Both may be
coroutines; they run in the ``run`` task under ``hook_timeout_seconds``.
``on_notice(notice)`` is synchronous, called from the reader.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import random
import time
from collections.abc import Awaitable, Callable, Iterable

import aiohttp
from prometheus_client import CollectorRegistry

from agent.core.tasks import TaskOwner
from agent.telemetry.metrics import Metrics
from agent.transport.ws_backoff import ConnectionBudget, JitterBackoff
from agent.transport.ws_config import SubscriptionStatus, WsConfig, WsSnapshot, WsState
from agent.transport.ws_connector import WsConnector
from agent.transport.ws_link import ConnectFailed, LinkEnded, LinkHooks, WsLink, wall_ms
from agent.transport.ws_spec import Data, ServerNotice, WsProtocol
from agent.transport.ws_subscriptions import SubscriptionRegistry, SubState
from agent.transport.ws_telemetry import WsTelemetry

log = logging.getLogger(__name__)

OnData = Callable[[str, object, int], None]
OnConnected = Callable[[int], "Awaitable[None] | None"]
OnDisconnected = Callable[[str], "Awaitable[None] | None"]
OnNotice = Callable[[ServerNotice], None]


class WsCapacityError(ValueError):
    """The topics would not fit on one connection (``WsProtocol.fits``); shard them across streams."""


class ResilientWebSocket:
    """One stream of one exchange, kept connected, subscribed and live until ``stop``."""

    def __init__(self, protocol: WsProtocol, *, exchange: str, stream: str, config: WsConfig | None = None,
                 session: aiohttp.ClientSession | None = None, metrics: Metrics | None = None,
                 budget: ConnectionBudget | None = None, on_data: OnData | None = None,
                 on_connected: OnConnected | None = None, on_disconnected: OnDisconnected | None = None,
                 on_notice: OnNotice | None = None, clock: Callable[[], float] = time.monotonic,
                 wall_clock_ms: Callable[[], int] = wall_ms, rng: Callable[[], float] = random.random) -> None:
        self.protocol = protocol
        self.exchange = exchange
        self.stream = stream
        self.config = config or WsConfig()
        self._session = session
        self._own_session: aiohttp.ClientSession | None = None
        self.metrics = metrics or Metrics(CollectorRegistry())
        self._telemetry = WsTelemetry(self.metrics, exchange, stream)
        cfg = self.config
        self._backoff = JitterBackoff(cfg.backoff_initial_seconds, cfg.backoff_max_seconds, rng)
        self._on_data, self._on_connected = on_data, on_connected
        self._on_disconnected, self._on_notice = on_disconnected, on_notice
        self._clock, self._wall_ms = clock, wall_clock_ms
        self._tasks = TaskOwner(f"{exchange}/{stream}")
        self._registry = SubscriptionRegistry()
        self._active: WsLink | None = None
        self._rotate_request: asyncio.Future[None] | None = None
        self._rotation_due: float | None = None
        self._rotation_failures = 0
        self._running = False
        self._phase = WsState.STOPPED
        self.generation = 0
        self.reconnects = 0
        self.rotations = 0
        self.connect_failures = 0
        self.last_error: str | None = None
        self.last_disconnect_reason: str | None = None
        tel = self._telemetry
        hooks = LinkHooks(data=self._link_data, notice=self._link_notice, frame=tel.frame,
                          malformed=tel.malformed, request_done=tel.request_done, rtt=tel.rtt)
        self._connector = WsConnector(
            protocol=protocol, config=cfg, owner=self._tasks, registry=self._registry, hooks=hooks, telemetry=tel,
            budget=budget or ConnectionBudget(cfg.connect_budget_max_attempts, cfg.connect_budget_window_seconds,
                                              clock),
            subscribe_backoff=JitterBackoff(cfg.subscribe_retry_initial_seconds, cfg.subscribe_retry_max_seconds, rng),
            clock=clock, wall_ms=wall_clock_ms, log_context={"exchange": exchange, "stream": stream})

    # -- public API ------------------------------------------------------------------------------

    async def start(self) -> None:
        """Start connecting in the background; returns at once. Idempotent."""
        if self._running:
            return
        self._running = True
        if self._session is None:
            self._own_session = aiohttp.ClientSession()
        self._phase = WsState.CONNECTING
        self._tasks.spawn("run", self._run())
        self._tasks.spawn("watchdog", self._watchdog())

    async def stop(self) -> None:
        """Cancel every task and close every link within ``stop_timeout_seconds``. Idempotent, safe before start."""
        was_running, self._running = self._running, False
        timeout = self.config.stop_timeout_seconds
        try:
            async with asyncio.timeout(timeout):
                await self._tasks.cancel_all(timeout)
                await self._connector.close_all("stopped")
        except TimeoutError:
            log.error("stream did not stop in time", extra=self._log_extra("ws_stop_timeout"))
        self._connector.links.clear()
        self._active = None
        if self._own_session is not None:
            session, self._own_session = self._own_session, None
            try:
                async with asyncio.timeout(self.config.close_timeout_seconds):
                    await session.close()
            except TimeoutError:
                log.error("session did not close in time", extra=self._log_extra("ws_session_close_timeout"))
        self._phase = WsState.STOPPED
        self._update_gauges()
        if was_running:
            log.info("stream stopped", extra=self._log_extra("ws_stopped"))

    async def subscribe(self, topics: Iterable[str]) -> None:
        """Add topics to the registry and subscribe them on the live link (replayed after every reconnect).

        Waits for the acks (at most ``subscribe_ack_timeout_seconds``); a
        rejected topic shows as ``failed`` and is retried with backoff.
        Raises ``WsCapacityError`` when the topics would not fit on one connection.
        """
        asked = list(dict.fromkeys(topics))
        wanted = self._registry.topics() + [t for t in asked if t not in self._registry]
        if not self.protocol.fits(wanted):
            raise WsCapacityError(f"{len(wanted)} topics do not fit on one {self.exchange}/{self.stream} connection")
        new = self._registry.add(asked, self._clock())
        await self._connector.apply("subscribe", new)
        self._update_gauges()

    async def unsubscribe(self, topics: Iterable[str]) -> None:
        """Remove topics from the registry and unsubscribe them on the live link; later data is dropped."""
        removed = self._registry.remove(topics)
        await self._connector.apply("unsubscribe", removed)
        self._update_gauges()

    def topics(self) -> list[str]:
        """The subscription registry."""
        return self._registry.topics()

    def request_reconnect(self, reason: str = "requested") -> None:
        """End the active link now; the loop reconnects with backoff (``reason`` should be a bounded label)."""
        if self._active is not None:
            self._active.fail(reason)

    def request_rotation(self) -> None:
        """Replace the active link make-before-break as soon as possible (e.g. a listenKey keepalive failed)."""
        if self._rotate_request is not None and not self._rotate_request.done():
            self._rotate_request.set_result(None)
        else:
            self._rotation_due = self._clock()

    def task_names(self) -> list[str]:
        """Names of this stream's running tasks."""
        return self._tasks.names()

    @property
    def state(self) -> WsState:
        if not self._running:
            return WsState.STOPPED
        link = self._active
        if link is None or link.ended:
            return self._phase
        counts = link.topics.counts()
        if counts[SubState.LIVE] == len(link.topics.states):
            return WsState.HEALTHY
        if counts[SubState.STALE] or counts[SubState.FAILED]:
            return WsState.DEGRADED
        return WsState.SUBSCRIBING

    @property
    def healthy(self) -> bool:
        """Connected and every subscription live."""
        return self.state is WsState.HEALTHY

    def snapshot(self) -> WsSnapshot:
        """The stream's state for ``/status``."""
        now = self._clock()
        link = self._active if self._active is not None and not self._active.ended else None
        subs: dict[str, SubscriptionStatus] = {}
        for record in self._registry.records():
            st = link.topics.states.get(record.topic) if link is not None else None
            age = None if record.last_data_mono is None else now - record.last_data_mono
            subs[record.topic] = SubscriptionStatus(
                state=st.state.value if st is not None else SubState.PENDING.value, data_age_seconds=age,
                failures=st.failures if st is not None else 0, last_error=st.last_error if st is not None else None)
        return WsSnapshot(
            exchange=self.exchange, stream=self.stream, state=self.state.value, connected=link is not None,
            healthy=self.healthy, generation=self.generation, reconnects=self.reconnects, rotations=self.rotations,
            connect_failures=self.connect_failures,
            last_rtt_seconds=link.last_rtt_seconds if link is not None else None,
            connected_for_seconds=now - link.opened_mono if link is not None and link.opened_mono else None,
            last_error=self.last_error, last_disconnect_reason=self.last_disconnect_reason, subscriptions=subs)

    # -- connection loop -------------------------------------------------------------------------

    async def _run(self) -> None:
        while self._running:
            self._phase = WsState.CONNECTING
            try:
                link = await self._connector.connect(self._live_session(), "")
            except ConnectFailed as e:
                self._connect_failed(e)
                await self._sleep_backoff()
                continue
            await self._activate(link)
            await self._serve()
            await self._sleep_backoff()

    async def _activate(self, link: WsLink) -> None:
        self._active = link
        self.generation += 1
        self._rotation_due = (self._clock() + self.config.rotate_after_seconds
                              if self.config.rotate_after_seconds else None)
        self._update_gauges()
        log.info("stream connected", extra=self._log_extra("ws_connected", generation=self.generation))
        await self._call_hook("on_connected", self._on_connected, self.generation)

    async def _serve(self) -> None:
        """Serve the active link (rotating it when due) until it ends; then clean up and report."""
        while self._running:
            link = self._active
            assert link is not None
            loop = asyncio.get_running_loop()
            if self._rotate_request is None or self._rotate_request.done():
                self._rotate_request = loop.create_future()
            timeout = None if self._rotation_due is None else max(0.0, self._rotation_due - self._clock())
            await asyncio.wait([link.ended_future, self._rotate_request], timeout=timeout,
                               return_when=asyncio.FIRST_COMPLETED)
            if link.ended:
                break
            if self._rotate_request.done() or (self._rotation_due is not None and self._clock() >= self._rotation_due):
                await self._rotate(link)
        if self._active is not None:
            await self._disconnected(self._active)

    async def _disconnected(self, link: WsLink) -> None:
        """The active link ended: close it, count it, tell the caller (who may have missed data)."""
        reason = link.end_reason or "stopped"
        self.last_disconnect_reason = reason
        self.last_error = link.end_error or reason
        await self._connector.discard(link)
        self._active = None
        self.reconnects += 1
        self._telemetry.reconnect(reason)
        self._update_gauges()
        log.warning("stream disconnected", extra=self._log_extra("ws_disconnected", reason=reason))
        await self._call_hook("on_disconnected", self._on_disconnected, reason)

    async def _rotate(self, old: WsLink) -> None:
        """Make-before-break: establish a new link, wait until it is all live, switch, close the old one."""
        self._rotation_due = None
        try:
            new = await self._connector.connect(self._live_session(), "rotation/")
        except ConnectFailed as e:
            self._rotation_failed(f"{e.outcome}: {e.detail}")
            self._telemetry.connect(e.outcome)
            return
        deadline = self._clock() + self.config.rotation_ready_timeout_seconds
        while not new.ended and not old.ended and not new.topics.all_live() and self._clock() < deadline:
            await asyncio.wait([new.ended_future, old.ended_future],
                               timeout=min(self.config.watchdog_interval_seconds, max(0.0, deadline - self._clock())))
        if new.ended or not (new.topics.all_live() or old.ended):
            await self._connector.discard(new)
            self._rotation_failed(new.end_reason or "not_live_in_time")
            return
        new.rename("")
        old.rename("retiring/")
        self._rotation_failures = 0
        self.rotations += 1
        self._telemetry.rotation("ok")
        if old.ended:  # it died before the switch: data may be missing, report it like any disconnect
            await self._disconnected(old)
        else:
            await self._connector.discard(old, "rotated")
        await self._activate(new)

    def _rotation_failed(self, detail: str) -> None:
        self._rotation_failures += 1
        self.last_error = f"rotation: {detail}"
        self._telemetry.rotation("failed")
        self._rotation_due = self._clock() + self._backoff.ceiling(self._rotation_failures)
        log.warning("rotation failed", extra=self._log_extra("ws_rotation_failed", detail=detail))

    def _live_session(self) -> aiohttp.ClientSession:
        session = self._session or self._own_session
        assert session is not None, "start() creates the session"
        return session

    def _connect_failed(self, e: ConnectFailed) -> None:
        self.connect_failures += 1
        self.last_error = f"{e.outcome}: {e.detail}"
        self._telemetry.connect(e.outcome)
        log.warning("connect failed", extra=self._log_extra("ws_connect_failed", outcome=e.outcome))

    async def _sleep_backoff(self) -> None:
        if not self._running:
            return
        self._phase = WsState.BACKOFF
        await asyncio.sleep(self._backoff.next_delay())

    # -- watchdog --------------------------------------------------------------------------------

    async def _watchdog(self) -> None:
        while True:
            await asyncio.sleep(self.config.watchdog_interval_seconds)
            try:
                await self._check_active()
            except LinkEnded:
                pass
            except Exception:  # the watchdog must outlive any bug in one tick
                log.exception("watchdog tick failed", extra=self._log_extra("ws_watchdog_failed"))
            self._update_gauges()

    async def _check_active(self) -> None:
        link = self._active
        if link is None or link.ended or not link.established:
            return
        await self._connector.maintain(link)
        now = self._clock()
        if link.topics.all_live():
            link.healthy_since = link.healthy_since or now
            if now - link.healthy_since >= self.config.backoff_reset_after_seconds:
                self._backoff.reset()
        else:
            link.healthy_since = None

    # -- link hooks (reader task; synchronous and cheap) -----------------------------------------

    def _link_data(self, link: WsLink, frame: Data, received_ms: int) -> None:
        now = self._clock()
        if frame.topic not in self._registry or not link.topics.on_data(frame.topic, now):
            self._telemetry.frame("unsubscribed")
            return
        self._telemetry.data(received_ms)
        self._registry.record_data(frame.topic, now, received_ms)
        if self._on_data is not None:
            try:
                self._on_data(frame.topic, frame.payload, received_ms)
            except Exception:
                self._callback_failed("on_data")

    def _link_notice(self, link: WsLink, notice: ServerNotice) -> None:
        if self._on_notice is not None:
            try:
                self._on_notice(notice)
            except Exception:
                self._callback_failed("on_notice")
        if notice.action == "reconnect":
            link.fail("notice", notice.kind)
        elif notice.action == "rotate" and link is self._active:
            self.request_rotation()

    # -- helpers ---------------------------------------------------------------------------------

    async def _call_hook(self, name: str, hook: Callable[..., object] | None, *args: object) -> None:
        if hook is None:
            return
        try:
            result = hook(*args)
            if inspect.isawaitable(result):
                async with asyncio.timeout(self.config.hook_timeout_seconds):
                    await result
        except Exception:  # TimeoutError included: a slow hook must not stall the connection loop
            self._callback_failed(name)

    def _callback_failed(self, name: str) -> None:
        self._telemetry.callback_error(name)
        log.exception("callback failed", extra=self._log_extra("ws_callback_failed", callback=name))

    def _update_gauges(self) -> None:
        link = self._active if self._active is not None and not self._active.ended else None
        now = self._clock()
        ages = [r.data_age_seconds(now) for r in self._registry.records()
                if self.protocol.stale_after_seconds(r.topic) is not None]
        self._telemetry.gauges(link.topics if link is not None else None, self._registry, self.healthy, ages)

    def _log_extra(self, event: str, **fields: object) -> dict[str, object]:
        return {"event": event, "exchange": self.exchange, "stream": self.stream, **fields}
