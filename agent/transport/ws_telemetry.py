"""The metrics of one WebSocket stream, labelled ``{exchange, stream}`` and nothing unbounded."""

from __future__ import annotations

from agent.telemetry.metrics import Metrics
from agent.transport.ws_subscriptions import LinkTopics, RequestKind, SubscriptionRegistry, SubState


class WsTelemetry:
    """Counts and gauges of one stream; every method is cheap enough for the reader task."""

    def __init__(self, metrics: Metrics, exchange: str, stream: str) -> None:
        self.metrics = metrics
        self._labels = (exchange, stream)
        metrics.init_ws_stream(exchange, stream)

    def frame(self, kind: str) -> None:
        self.metrics.ws_messages.labels(*self._labels, kind).inc()

    def malformed(self, detail: str) -> None:
        self.metrics.ws_frames_malformed.labels(*self._labels).inc()

    def request_done(self, kind: RequestKind, outcome: str) -> None:
        self.metrics.ws_subscribe_requests.labels(*self._labels, kind, outcome).inc()

    def rtt(self, seconds: float) -> None:
        self.metrics.ws_heartbeat_rtt.labels(*self._labels).observe(seconds)

    def connect(self, outcome: str) -> None:
        self.metrics.ws_connects.labels(*self._labels, outcome).inc()

    def reconnect(self, reason: str) -> None:
        self.metrics.ws_reconnects.labels(*self._labels, reason).inc()

    def rotation(self, outcome: str) -> None:
        self.metrics.ws_rotations.labels(*self._labels, outcome).inc()

    def budget_wait(self) -> None:
        self.metrics.ws_connect_budget_waits.labels(*self._labels).inc()

    def callback_error(self, callback: str) -> None:
        self.metrics.ws_callback_errors.labels(*self._labels, callback).inc()

    def data(self, received_ms: int) -> None:
        self.frame("data")
        self.metrics.ws_last_message.labels(*self._labels).set(received_ms / 1000.0)

    def gauges(self, link_topics: LinkTopics | None, registry: SubscriptionRegistry, healthy: bool,
               streaming_ages: list[float]) -> None:
        """Refresh the state gauges: connection, health, subscriptions by state, worst data age."""
        m = self.metrics
        m.ws_connected.labels(*self._labels).set(1 if link_topics is not None else 0)
        m.ws_healthy.labels(*self._labels).set(1 if healthy else 0)
        counts = link_topics.counts() if link_topics is not None else {s: 0 for s in SubState}
        if link_topics is None:
            counts[SubState.PENDING] = len(registry)
        for state, n in counts.items():
            m.ws_subscriptions.labels(*self._labels, state.value).set(n)
        m.ws_data_age.labels(*self._labels).set(max(streaming_ages, default=0.0))
