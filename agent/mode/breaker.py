"""The Breaker: the modes of one exchange as a circuit breaker (pure logic, no I/O, no clock).

``hybrid`` is closed (WebSocket trusted), ``rest`` is open (WebSocket not
trusted), ``shadow`` with REST primary is half-open (probation: WebSocket
observed and compared, never acted on).

What makes flapping impossible (ops.md §2.2), each a rule below:
1. minimum evidence: health checks only report a check bad after N consecutive bad readings;
2. asymmetry: trip at once, recover only through probation and N consecutive passing windows;
3. a cool-down that doubles per trip (capped) and decays while healthy;
4. a daily transition budget that latches the exchange to ``rest`` until an operator acts;
5. operator pins that automation never overrides.
Recovery is off by default (``auto_recover: false``): a rollback sticks until an operator acts.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import msgspec

from agent.shadow.promotion import Promotion, promotion_step

DAY_MS = 86_400_000


@dataclass(frozen=True)
class BreakerSettings:
    """The rollback section of an exchange's config, as the breaker needs it."""

    enabled: bool = True
    auto_recover: bool = False
    base_cooldown_seconds: float = 60.0
    max_cooldown_seconds: float = 3600.0
    healthy_decay_seconds: float = 900.0
    promote_after_passing_windows: int = 3
    max_transitions_per_day: int = 6


class BreakerState(msgspec.Struct, kw_only=True):
    """Everything the breaker remembers; persisted so a restart resets no cool-down or latch."""

    trips: int = 0
    open_since_ms: int | None = None
    cooldown_until_ms: int | None = None
    healthy_since_ms: int | None = None
    latched: bool = False
    latched_reason: str | None = None
    pinned_mode: str | None = None
    automatic_transitions_ms: list[int] = msgspec.field(default_factory=list)
    passing_windows: int = 0
    last_reason: str | None = None


@dataclass(frozen=True)
class Decision:
    """What the breaker wants: switch the exchange to ``mode`` because of ``reason``."""

    mode: str
    reason: str
    automatic: bool = True
    latch: bool = False


@dataclass
class Breaker:
    """Decides rollback and recovery for one exchange from health and shadow verdicts."""

    settings: BreakerSettings
    mode: str
    state: BreakerState = field(default_factory=BreakerState)
    last_promotion: Promotion | None = None  # what the promotion rule said of the latest window (for /status)

    # -- inputs ------------------------------------------------------------------------------------

    def on_health(self, now_ms: int, *, bad: list[str], critical: list[str]) -> Decision | None:
        """Health of the WebSocket path: sustained-bad and critical check names (empty when healthy)."""
        self._forget_old_transitions(now_ms)
        if not bad and not critical:
            self._note_healthy(now_ms)
            return None
        self.state.healthy_since_ms = None
        if self.mode in ("hybrid", "shadow"):
            reason = (critical or bad)[0]
            return self._trip(now_ms, reason)
        return None

    def on_verdict(self, now_ms: int, verdict: str, *, critical: bool = False) -> Decision | None:
        """A shadow window's verdict (pass, fail, inconclusive, error), judged by the one promotion rule."""
        self._forget_old_transitions(now_ms)
        if self.mode != "shadow":
            return None
        step = promotion_step(self.state.passing_windows, verdict, critical=critical,
                              needed=self.settings.promote_after_passing_windows)
        self.state.passing_windows = step.streak
        self.last_promotion = step
        if step.action == "roll_back":
            return self._trip(now_ms, "shadow_critical" if critical else "shadow_fail")
        if step.action == "promote":
            return self._automatic(now_ms, "hybrid", "shadow_passed")
        return None

    def tick(self, now_ms: int) -> Decision | None:
        """Time passing: the cool-down of an open breaker may end (only with auto_recover)."""
        self._forget_old_transitions(now_ms)
        if self.mode != "rest" or not self.settings.auto_recover:
            return None
        until = self.state.cooldown_until_ms
        if until is None or now_ms < until or self.state.open_since_ms is None:
            return None
        return self._automatic(now_ms, "shadow", "cooldown_elapsed")

    def on_operator(self, now_ms: int, mode: str, *, pin: bool | None = None) -> None:
        """An operator set the mode (and pinned or unpinned it); this also clears a latch."""
        if pin is True:
            self.state.pinned_mode = mode
        elif pin is False:
            self.state.pinned_mode = None
        self.state.latched = False
        self.state.latched_reason = None
        self.state.passing_windows = 0
        self.note_mode(now_ms, mode)
        if mode == "rest":
            # an operator's rest is a fresh open breaker: probation (with auto_recover) only after a cool-down
            self.state.open_since_ms = now_ms
            self.state.cooldown_until_ms = now_ms + int(self.cooldown_seconds() * 1000)

    def note_mode(self, now_ms: int, mode: str) -> None:
        """The pipeline's effective mode after a transition (whoever asked for it)."""
        if mode == self.mode:
            return
        self.mode = mode
        if mode == "rest":
            self.state.open_since_ms = now_ms
        else:
            self.state.open_since_ms = None
        if mode != "shadow":
            self.state.passing_windows = 0
            self.last_promotion = None

    # -- queries -------------------------------------------------------------------------------------

    @property
    def state_name(self) -> str:
        """closed, open or half_open, as in every circuit breaker."""
        return {"hybrid": "closed", "rest": "open", "shadow": "half_open"}.get(self.mode, "open")

    def cooldown_seconds(self) -> float:
        """The cool-down the next trip would get (doubling per trip, capped)."""
        base = self.settings.base_cooldown_seconds
        return min(base * 2 ** max(self.state.trips - 1, 0), self.settings.max_cooldown_seconds)

    def transitions_last_day(self, now_ms: int) -> int:
        """Automatic transitions within the last 24 h."""
        return sum(1 for t in self.state.automatic_transitions_ms if now_ms - t < DAY_MS)

    # -- rules ---------------------------------------------------------------------------------------

    def _trip(self, now_ms: int, reason: str) -> Decision | None:
        if not self.settings.enabled or self.state.pinned_mode is not None:
            return None
        decision = self._automatic(now_ms, "rest", reason)
        if decision is not None:
            self.state.trips += 1
            self.state.cooldown_until_ms = now_ms + int(self.cooldown_seconds() * 1000)
        return decision

    def _automatic(self, now_ms: int, mode: str, reason: str) -> Decision | None:
        """Every automatic transition goes through here: pins, latch, budget, and no rest -> hybrid."""
        if not self.settings.enabled or self.state.pinned_mode is not None or mode == self.mode:
            return None
        if self.state.latched:
            return None
        if self.mode == "rest" and mode == "hybrid":
            return None  # never skip probation
        if mode != "rest" and not self.settings.auto_recover:
            return None
        if self.transitions_last_day(now_ms) >= self.settings.max_transitions_per_day:
            self.state.latched = True
            self.state.latched_reason = f"more than {self.settings.max_transitions_per_day} transitions in 24 h"
            self.state.last_reason = "transition_budget_exhausted"
            if self.mode == "rest":
                return None
            self.state.automatic_transitions_ms.append(now_ms)
            return Decision("rest", "transition_budget_exhausted", latch=True)
        self.state.automatic_transitions_ms.append(now_ms)
        self.state.last_reason = reason
        return Decision(mode, reason)

    def _note_healthy(self, now_ms: int) -> None:
        # Envoy's ejection multiplier: every healthy stretch of healthy_decay_seconds forgives one trip.
        if self.state.healthy_since_ms is None:
            self.state.healthy_since_ms = now_ms
            return
        if self.mode == "hybrid" and self.state.trips > 0 and \
                now_ms - self.state.healthy_since_ms >= self.settings.healthy_decay_seconds * 1000:
            self.state.trips -= 1
            self.state.healthy_since_ms = now_ms

    def _forget_old_transitions(self, now_ms: int) -> None:
        self.state.automatic_transitions_ms = [t for t in self.state.automatic_transitions_ms if now_ms - t < DAY_MS]
