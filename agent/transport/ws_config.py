"""Settings and status types of the resilient WebSocket.

``WsConfig`` holds every timer of one stream, in seconds. ``WsSnapshot`` is
what ``/status`` shows of it: built on demand, never shared with the loop.
"""

from __future__ import annotations

import enum
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class WsConfig:
    """Timers and limits of one stream. Every network await runs under one of these timeouts.

    ``ping_interval_seconds``: application pings (``WsProtocol.ping_request``);
    for protocols without one, WebSocket ping frames at this interval, and a
    missing pong frame ends the link after half of it (aiohttp's heartbeat).
    ``backoff_*``: capped exponential backoff with full jitter between
    connection attempts, reset once a connection stayed healthy for
    ``backoff_reset_after_seconds``. ``rotate_after_seconds``: planned
    make-before-break rotation (Binance closes every connection at 24 h);
    None disables it. ``connect_budget_*``: connection attempts allowed per
    window when no shared ``ConnectionBudget`` is given.
    """

    connect_timeout_seconds: float = 10.0
    auth_timeout_seconds: float = 5.0
    subscribe_ack_timeout_seconds: float = 5.0
    send_timeout_seconds: float = 5.0
    close_timeout_seconds: float = 2.0
    hook_timeout_seconds: float = 10.0
    stop_timeout_seconds: float = 5.0
    ping_interval_seconds: float = 20.0
    pong_timeout_seconds: float = 10.0
    watchdog_interval_seconds: float = 0.5
    backoff_initial_seconds: float = 0.5
    backoff_max_seconds: float = 30.0
    backoff_reset_after_seconds: float = 60.0
    subscribe_retry_initial_seconds: float = 1.0
    subscribe_retry_max_seconds: float = 60.0
    rotate_after_seconds: float | None = None
    rotation_ready_timeout_seconds: float = 30.0
    connect_budget_max_attempts: int = 60
    connect_budget_window_seconds: float = 300.0
    max_message_bytes: int = 4 * 1024 * 1024

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if value is not None and value <= 0:
                raise ValueError(f"WsConfig.{name} must be > 0, was {value}")
        if self.backoff_max_seconds < self.backoff_initial_seconds:
            raise ValueError("WsConfig.backoff_max_seconds must be >= backoff_initial_seconds, "
                             f"was {self.backoff_max_seconds} < {self.backoff_initial_seconds}")


class WsState(str, enum.Enum):
    """Where the stream is in its life."""

    STOPPED = "stopped"
    CONNECTING = "connecting"
    BACKOFF = "backoff"
    SUBSCRIBING = "subscribing"  # connected and authenticated, not every subscription live yet
    DEGRADED = "degraded"  # connected, some subscription stale or failed
    HEALTHY = "healthy"  # connected and every subscription live


@dataclass(frozen=True)
class SubscriptionStatus:
    """One topic as ``/status`` shows it."""

    state: str
    data_age_seconds: float | None
    failures: int = 0
    last_error: str | None = None


@dataclass(frozen=True)
class WsSnapshot:
    """The stream's state for ``/status``."""

    exchange: str
    stream: str
    state: str
    connected: bool
    healthy: bool
    generation: int
    reconnects: int
    rotations: int
    connect_failures: int
    last_rtt_seconds: float | None
    connected_for_seconds: float | None
    last_error: str | None
    last_disconnect_reason: str | None
    subscriptions: dict[str, SubscriptionStatus] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
