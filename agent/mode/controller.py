"""ExchangeController: one exchange's pipeline under its breaker, health checks and shadow comparison.

I/O edge of the mode logic: reads health from the running sources every
``health.check_interval_seconds``, feeds the pure HealthEvaluator and Breaker,
carries out their decisions on the pipeline (make-before-break), persists the
breaker under ``state_dir`` and runs the ShadowRunner while in shadow mode.

After an authentication failure (a REST auth error, a WebSocket auth refused)
it reads the exchange's secret again from where the config says it is, at most
once per ``SECRET_REREAD_MIN_INTERVAL_SECONDS``, and switches the pipeline to it
when it changed (a key rotated on disk needs no reload).
"""

from __future__ import annotations

import asyncio
import copy
import logging
import os
import time
from collections import deque
from pathlib import Path
from typing import Any

import msgspec

from agent.config.models import ExchangeConfig, HealthSection
from agent.config.secrets import credentials_needed, resolve_credentials
from agent.core.events import ModeEvent
from agent.core.tasks import TaskOwner
from agent.mode.breaker import Breaker, BreakerSettings, BreakerState, Decision
from agent.mode.health import CheckSpec, HealthEvaluator
from agent.mode.pipeline import ExchangePipeline, ModeChangeError
from agent.shadow.model import WindowVerdict
from agent.shadow.promotion import promotion_json
from agent.shadow.runner import ShadowRunner, is_critical
from agent.shadow.store import ShadowStore
from agent.telemetry.logging import MASKER
from agent.telemetry.metrics import Metrics

log = logging.getLogger("agent.mode")

BREAKER_STATES = ("closed", "open", "half_open")
CRITICAL_CHECKS = ("ws_reconnects_per_window", "ws_auth_failures_per_window")
WS_CHECKS = ("ws_data_age_seconds", "ws_private_down_seconds", "ws_heartbeat_rtt_seconds",
             "ws_reconnects_per_window", "ws_auth_failures_per_window", "reconcile_disagreements")
# A secret is read again after an auth failure at most this often (the failures repeat every poll).
SECRET_REREAD_MIN_INTERVAL_SECONDS = 30.0


def health_specs(section: HealthSection) -> list[CheckSpec]:
    """The configured checks as the evaluator wants them."""
    specs = []
    for name in (*WS_CHECKS, "clock_offset_seconds", "event_loop_lag_seconds"):
        check = getattr(section, name)
        if check.enabled:
            specs.append(CheckSpec(name, check.threshold, check.consecutive, critical=name in CRITICAL_CHECKS,
                                   trips=name != "event_loop_lag_seconds"))
    return specs


class ExchangeController:
    """Owns one pipeline's mode: operator commands, automatic rollback and recovery."""

    def __init__(self, pipeline: ExchangePipeline, *, state_dir: Path, metrics: Metrics, store: ShadowStore,
                 loop_lag_seconds: Any = None,
                 secret_reread_min_interval_seconds: float = SECRET_REREAD_MIN_INTERVAL_SECONDS) -> None:
        self.pipeline = pipeline
        self.name = pipeline.name
        self.config: ExchangeConfig = pipeline.config
        self._metrics = metrics
        self._store = store
        self._loop_lag_seconds = loop_lag_seconds or (lambda: None)
        self._state_path = state_dir / "breaker" / f"{self.name}.json"
        rb = self.config.rollback
        self.breaker = Breaker(BreakerSettings(
            enabled=rb.enabled, auto_recover=rb.auto_recover, base_cooldown_seconds=rb.base_cooldown_seconds,
            max_cooldown_seconds=rb.max_cooldown_seconds, healthy_decay_seconds=rb.healthy_decay_seconds,
            promote_after_passing_windows=rb.promote_after_passing_windows,
            max_transitions_per_day=rb.max_transitions_per_day), self.config.mode, self._load_state())
        self.health = HealthEvaluator(health_specs(self.config.health))
        self.shadow: ShadowRunner | None = None
        self._tasks = TaskOwner(f"{self.name}/control")
        self._counters: deque[tuple[float, dict[str, int]]] = deque()
        self._seen_reconciles = 0
        self.last_decision: dict[str, Any] | None = None
        self.pinned_at_start: str | None = None
        self._secret_reread_interval = secret_reread_min_interval_seconds
        self._auth_failures_seen = 0
        self._secret_read_mono: float | None = None
        self.secret_rereads: dict[str, Any] = {"count": 0, "rotated": 0, "last": None}

    # -- lifecycle -------------------------------------------------------------------------------

    def initial_mode(self) -> str:
        """The mode to start in: a pin or a latch from before the restart wins over the config."""
        st = self.breaker.state
        if st.pinned_mode:
            return st.pinned_mode
        if st.latched:
            return "rest"
        return self.config.mode

    async def start(self) -> None:
        """Start the pipeline in its initial mode and the health loop."""
        mode = self.initial_mode()
        self.pinned_at_start = self.breaker.state.pinned_mode
        if self.pinned_at_start:
            log.warning("exchange starts pinned by an operator; the configured mode does not apply until unpinned",
                        extra={"event": "mode_pinned_at_start", "exchange": self.name,
                               "pinned_mode": self.pinned_at_start, "configured_mode": self.config.mode})
        await self.pipeline.start(mode=mode)
        self.breaker.note_mode(_now_ms(), mode)
        await asyncio.to_thread(self._record_start_mode, mode)
        self._sync_shadow()
        self._publish_breaker()
        for name in self.health.specs:
            self._metrics.health_check_failing.labels(self.name, name).set(0)
        self._auth_failures_seen = self._auth_failures()
        self._tasks.spawn("health", self._health_loop())

    async def stop(self) -> None:
        """Give up a pending mode change, stop the health loop, the comparison and the pipeline; persist the breaker."""
        self.pipeline.abandon_mode_change()  # it waits on the new source's readiness, which may never come
        await self._tasks.cancel_all(timeout_seconds=2.0)
        if self.shadow is not None:
            await self.shadow.stop()
            self.shadow = None
        await self.pipeline.stop()
        self._save_state()

    # -- commands --------------------------------------------------------------------------------

    async def operator_set_mode(self, mode: str, *, pin: bool | None = None, reason: str = "operator") -> dict[str, Any]:
        """An operator's mode change (CLI, admin API, config reload); pins are honoured by automation only."""
        now = _now_ms()
        event = await self._switch(mode, reason=reason or "operator", automatic=False)
        if pin is not None:
            self.pinned_at_start = None  # an operator decided again: this pin is no longer the one from before
        self.breaker.on_operator(now, self.pipeline.mode or mode, pin=pin)
        self._publish_breaker()
        self._save_state()
        return {"exchange": self.name, "mode": self.pipeline.mode, "changed": event is not None,
                "pinned": self.breaker.state.pinned_mode}

    def breaker_snapshot(self) -> tuple[str, BreakerState]:
        """The breaker as it is now, for ``restore_breaker`` (a reload that is undone)."""
        return self.breaker.mode, copy.deepcopy(self.breaker.state)

    def restore_breaker(self, snapshot: tuple[str, BreakerState]) -> None:
        """Put the breaker back as ``breaker_snapshot`` found it, and persist it."""
        self.breaker.mode, self.breaker.state = snapshot[0], copy.deepcopy(snapshot[1])
        self._publish_breaker()
        self._save_state()

    async def _apply(self, decision: Decision) -> None:
        try:
            await self._switch(decision.mode, reason=decision.reason, automatic=True)
        except ModeChangeError as exc:
            log.error("automatic mode change failed", extra={"event": "mode_change_failed", "exchange": self.name,
                                                             "to": decision.mode, "error": str(exc)})
        self.breaker.note_mode(_now_ms(), self.pipeline.mode or decision.mode)
        self.last_decision = {"mode": decision.mode, "reason": decision.reason, "ts_ms": _now_ms(),
                              "latched": decision.latch}
        if decision.latch:
            log.error("transition budget exhausted; exchange latched to rest until an operator acts",
                      extra={"event": "mode_latched", "exchange": self.name})
        self.health.reset()
        self._publish_breaker()
        self._save_state()

    async def _switch(self, mode: str, *, reason: str, automatic: bool) -> ModeEvent | None:
        event = await self.pipeline.set_mode(mode, reason=reason, automatic=automatic)
        if event is not None:
            await asyncio.to_thread(self._store.add_transition, exchange=self.name, from_mode=event.from_,
                                    to_mode=event.to, reason=reason, automatic=automatic, ts_ms=event.ts_ms)
        self._sync_shadow()
        return event

    def _sync_shadow(self) -> None:
        """Run the comparison exactly while the pipeline is in shadow mode."""
        in_shadow = self.pipeline.mode == "shadow"
        if in_shadow and self.shadow is None:
            self.shadow = ShadowRunner(exchange=self.name, config=self.config, store=self._store,
                                       metrics=self._metrics, api=self.pipeline.api,
                                       symbols=self.pipeline.followed_symbols, on_verdict=self._on_verdict)
            self.pipeline.shadow_observer = self.shadow.observe
            self._tasks.spawn("shadow-start", self.shadow.start())
        elif not in_shadow and self.shadow is not None:
            runner, self.shadow = self.shadow, None
            self.pipeline.shadow_observer = None
            self._tasks.spawn("shadow-stop", runner.stop())

    def _record_start_mode(self, mode: str) -> None:
        """Put the mode this run starts in on the shadow record when it differs from the last one there.

        A run that starts in shadow from the config has no transition otherwise, and the report could
        not say which mode it is in or since when. Exchanges that never ran in shadow stay out of it.
        """
        last = self._store.transitions(self.name)
        previous = last[-1].to_mode if last else None
        if previous == mode or (previous is None and mode != "shadow"):
            return
        st = self.breaker.state
        why = "pinned" if st.pinned_mode == mode else "latched" if st.latched and mode == "rest" else "configured"
        self._store.add_transition(exchange=self.name, from_mode=previous or "none", to_mode=mode,
                                   reason=f"start ({why})", automatic=False, ts_ms=_now_ms())

    def _on_verdict(self, verdict: WindowVerdict) -> None:
        decision = self.breaker.on_verdict(_now_ms(), verdict.verdict, critical=is_critical(verdict))
        if decision is not None:
            self._tasks.spawn("apply", self._apply(decision))
        else:
            self._publish_breaker()
            self._save_state()

    # -- health ----------------------------------------------------------------------------------

    async def _health_loop(self) -> None:
        interval = self.config.health.check_interval_seconds
        while True:
            await asyncio.sleep(interval)
            report = self.health.evaluate(self.readings())
            for name, check in report.checks.items():
                if check.value is not None:
                    self._metrics.health_check_value.labels(self.name, name).set(check.value)
                self._metrics.health_check_failing.labels(self.name, name).set(1 if check.state == "failing" else 0)
            now = _now_ms()
            decision = self.breaker.on_health(now, bad=report.failing, critical=report.critical) \
                or self.breaker.tick(now)
            self._note_auth_failures()
            if decision is not None and not self._tasks.running("apply"):
                log.warning("breaker decided", extra={"event": "breaker_decision", "exchange": self.name,
                                                      "to": decision.mode, "reason": decision.reason})
                await self._apply(decision)
            self._publish_breaker()

    def readings(self) -> dict[str, float | None]:
        """Current readings of every check (None: not applicable in this mode)."""
        readings: dict[str, float | None] = {
            "clock_offset_seconds": abs(self.pipeline.api.status.clock_offset_ms) / 1000,
            "event_loop_lag_seconds": self._loop_lag_seconds(),
        }
        ws = self.pipeline.ws
        if ws is None or "ws" not in self.pipeline.running_sources:
            self._counters.clear()
            return readings
        now = time.monotonic()
        counters = ws.counters()
        self._counters.append((now, counters))
        window = self.config.health.window_seconds
        while self._counters and now - self._counters[0][0] > window:
            self._counters.popleft()
        oldest = self._counters[0][1]
        readings.update({
            "ws_data_age_seconds": ws.price_data_age_seconds(),
            "ws_private_down_seconds": ws.private_down_seconds(),
            "ws_heartbeat_rtt_seconds": ws.heartbeat_rtt_seconds(),
            "ws_reconnects_per_window": float(counters["reconnects"] - oldest["reconnects"]),
            "ws_auth_failures_per_window": float(counters["auth_failures"] - oldest["auth_failures"]),
        })
        if counters["reconciles"] != self._seen_reconciles and ws.last_reconcile:
            self._seen_reconciles = counters["reconciles"]
            readings["reconcile_disagreements"] = float(sum(ws.last_reconcile.get("disagreements", {}).values()))
        return readings

    # -- secrets ---------------------------------------------------------------------------------

    def _auth_failures(self) -> int:
        ws = self.pipeline.ws
        return self.pipeline.api.status.auth_failures + (ws.counters()["auth_failures"] if ws is not None else 0)

    def _note_auth_failures(self) -> None:
        """A new auth failure: read the secret again, unless that was done within the interval."""
        failures = self._auth_failures()
        if failures <= self._auth_failures_seen:
            return
        self._auth_failures_seen = failures
        if not credentials_needed(self.config.environment) or self.config.credentials is None:
            return
        now = time.monotonic()
        last = self._secret_read_mono
        if (last is not None and now - last < self._secret_reread_interval) or self._tasks.running("secret"):
            return
        self._secret_read_mono = now
        self._tasks.spawn("secret", self.reread_secret())

    async def reread_secret(self) -> str:
        """Read the key pair again from its source and use it if it changed.

        Returns ``rotated``, ``unchanged`` or ``unreadable`` (the current pair is kept).
        """
        assert self.config.credentials is not None
        found, problems, _ = await asyncio.to_thread(resolve_credentials, self.config.credentials, os.environ)
        if found is None:
            outcome = "unreadable"
            log.error("secret unreadable after an auth failure; keeping the current one", extra={
                "event": "secret_reread_failed", "exchange": self.name,
                "problems": [p.message for p in problems if p.severity == "error"]})
        elif found == self.pipeline.credentials:
            outcome = "unchanged"
            log.warning("auth failure, and the secret is unchanged at its source", extra={
                "event": "secret_unchanged", "exchange": self.name})
        else:
            outcome = "rotated"
            MASKER.add(found.api_key, found.api_secret)
            await self.pipeline.set_credentials(found)
            self.secret_rereads["rotated"] += 1
            log.warning("secret changed at its source; using the new one", extra={
                "event": "secret_rotated", "exchange": self.name})
        self.secret_rereads["count"] += 1
        self.secret_rereads["last"] = {"ts_ms": _now_ms(), "outcome": outcome}
        return outcome

    # -- state -----------------------------------------------------------------------------------

    def _publish_breaker(self) -> None:
        m, st = self._metrics, self.breaker.state
        m.set_state_set(m.breaker_state, self.name, BREAKER_STATES, self.breaker.state_name)
        m.breaker_trips.labels(self.name).set(st.trips)
        m.breaker_cooldown_until.labels(self.name).set((st.cooldown_until_ms or 0) / 1000)
        m.breaker_latched.labels(self.name).set(1 if st.latched else 0)
        m.mode_pinned.labels(self.name).set(1 if st.pinned_mode else 0)

    def _load_state(self) -> BreakerState:
        try:
            return msgspec.json.decode(self._state_path.read_bytes(), type=BreakerState)
        except FileNotFoundError:
            return BreakerState()
        except (msgspec.DecodeError, OSError) as exc:
            log.error("breaker state unreadable; starting fresh", extra={
                "event": "breaker_state_unreadable", "exchange": self.name, "path": str(self._state_path),
                "error": str(exc)})
            return BreakerState()

    def _save_state(self) -> None:
        self._state_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self._state_path.with_suffix(".tmp")
        tmp.write_bytes(msgspec.json.encode(self.breaker.state))
        tmp.replace(self._state_path)

    def status(self) -> dict[str, Any]:
        """Breaker, health and shadow parts of /status."""
        st = self.breaker.state
        checks = {name: {"value": c.value, "threshold": c.threshold, "consecutive": c.consecutive,
                         "bad_streak": c.bad_streak, "state": c.state, "critical": c.critical}
                  for name, c in self.health.last.checks.items()}
        return {
            "breaker": {"state": self.breaker.state_name, "trips": st.trips, "latched": st.latched,
                        "latched_reason": st.latched_reason, "pinned_mode": st.pinned_mode,
                        "pinned_at_start": self.pinned_at_start if st.pinned_mode else None,
                        "cooldown_until_ms": st.cooldown_until_ms, "passing_windows": st.passing_windows,
                        "auto_recover": self.breaker.settings.auto_recover,
                        "transitions_last_day": self.breaker.transitions_last_day(_now_ms()),
                        "last_decision": self.last_decision},
            "health": checks,
            "shadow": ({**self.shadow.status(), "promotion": promotion_json(
                self.breaker.last_promotion, self.breaker.settings.promote_after_passing_windows)}
                       if self.shadow is not None else None),
            "secret_rereads": self.secret_rereads,
        }


def _now_ms() -> int:
    return int(time.time() * 1000)
