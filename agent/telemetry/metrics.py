"""Every Prometheus metric of the agent, defined once on an injected registry.

Names follow Prometheus conventions: base units, ``_total`` for counters,
``_seconds``/``_ratio``/``_timestamp_seconds`` suffixes, bounded labels and no
``symbol`` label. Tests build a fresh ``CollectorRegistry`` per agent.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

from agent import __version__

_DURATION_BUCKETS_SECONDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class Metrics:
    """The agent's metric families. One instance per agent (and per test)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        r = self.registry
        self.build_info = Info("feedagent_build", "Build of the running agent.", registry=r)
        self.build_info.info({"version": __version__})

        # REST transport
        self.rest_requests = Counter(
            "feedagent_rest_requests", "REST requests sent to an exchange, by endpoint and outcome.",
            ["exchange", "endpoint", "outcome"], registry=r)
        self.rest_request_duration = Histogram(
            "feedagent_rest_request_duration_seconds", "Duration of REST requests, by endpoint.",
            ["exchange", "endpoint"], buckets=_DURATION_BUCKETS_SECONDS, registry=r)
        self.rest_rate_limit_remaining_ratio = Gauge(
            "feedagent_rest_rate_limit_remaining_ratio",
            "Share of the venue's request budget left, as read from its rate-limit headers (1 = untouched).",
            ["exchange"], registry=r)
        self.rest_backoff_until = Gauge(
            "feedagent_rest_backoff_until_timestamp_seconds",
            "Unix time until which REST calls are held back (rate limit or ban); 0 when none.",
            ["exchange"], registry=r)
        self.rest_requests_held = Counter(
            "feedagent_rest_requests_held",
            "REST calls refused locally without being sent: during a venue back-off or ban, or with the rate-limit budget spent.",
            ["exchange", "reason"], registry=r)
        self.clock_offset = Gauge(
            "feedagent_clock_offset_seconds", "Exchange server time minus local time.", ["exchange"], registry=r)

        # Polling sources
        self.polls = Counter(
            "feedagent_polls", "REST polls, by kind (positions, prices) and outcome.",
            ["exchange", "kind", "outcome"], registry=r)
        self.poll_duration = Histogram(
            "feedagent_poll_duration_seconds", "Duration of a whole REST poll (all pages).",
            ["exchange", "kind"], buckets=_DURATION_BUCKETS_SECONDS, registry=r)
        self.last_successful_poll = Gauge(
            "feedagent_last_successful_poll_timestamp_seconds", "Unix time of the last successful poll.",
            ["exchange", "kind"], registry=r)

        # WebSocket transport (one series set per exchange and stream; never a topic or symbol label)
        ws = ["exchange", "stream"]
        self.ws_connects = Counter(
            "feedagent_ws_connects",
            "WebSocket connection attempts, by outcome (ok, timeout, rejected, error, url_error, auth_rejected, "
            "auth_timeout, closed_during_setup); auth_rejected also counts a Binance listenKey call refused for the "
            "API key between connects.", [*ws, "outcome"], registry=r)
        self.ws_reconnects = Counter(
            "feedagent_ws_reconnects",
            "Established WebSocket connections that ended and are being replaced, by reason (closed_by_server, "
            "connection_lost, error, pong_timeout, stale, notice, requested, send_failed, send_timeout).",
            [*ws, "reason"], registry=r)
        self.ws_rotations = Counter(
            "feedagent_ws_rotations", "Planned make-before-break connection rotations, by outcome (ok, failed).",
            [*ws, "outcome"], registry=r)
        self.ws_connected = Gauge(
            "feedagent_ws_connected", "1 while the stream has an established connection.", ws, registry=r)
        self.ws_healthy = Gauge(
            "feedagent_ws_healthy", "1 while the stream is connected and every subscription is live.", ws, registry=r)
        self.ws_subscriptions = Gauge(
            "feedagent_ws_subscriptions",
            "Subscriptions of the stream, by state on the current connection (pending, acked, live, stale, failed).",
            [*ws, "state"], registry=r)
        self.ws_subscribe_requests = Counter(
            "feedagent_ws_subscribe_requests",
            "Subscribe and unsubscribe requests, by kind and outcome (ok, rejected, timeout).",
            [*ws, "kind", "outcome"], registry=r)
        self.ws_messages = Counter(
            "feedagent_ws_messages",
            "WebSocket frames received, by kind (data, pong, auth_ack, subscribe_ack, notice, unknown, "
            "ack_unmatched, unsubscribed).", [*ws, "kind"], registry=r)
        self.ws_frames_malformed = Counter(
            "feedagent_ws_frames_malformed", "WebSocket frames that could not be classified and were skipped.",
            ws, registry=r)
        self.ws_last_message = Gauge(
            "feedagent_ws_last_message_timestamp_seconds", "Unix time of the stream's last data message.",
            ws, registry=r)
        self.ws_data_age = Gauge(
            "feedagent_ws_data_age_seconds",
            "Data age of the stream's stalest streaming subscription (event-driven topics excluded).",
            ws, registry=r)
        self.ws_heartbeat_rtt = Histogram(
            "feedagent_ws_heartbeat_rtt_seconds", "Round trip of application-level WebSocket pings.",
            ws, buckets=_DURATION_BUCKETS_SECONDS, registry=r)
        self.ws_connect_budget_waits = Counter(
            "feedagent_ws_connect_budget_waits",
            "Connection attempts delayed because the connection budget of the domain was spent.", ws, registry=r)
        self.ws_delivery_dropped = Counter(
            "feedagent_ws_delivery_dropped",
            "Data messages dropped between receive and processing, by reason (coalesced: replaced by a newer "
            "value of the same topic; overflow: event queue full).", [*ws, "reason"], registry=r)
        self.ws_callback_errors = Counter(
            "feedagent_ws_callback_errors", "Exceptions raised by a stream's callbacks, caught and skipped.",
            [*ws, "callback"], registry=r)
        self.ws_listen_key_age = Gauge(
            "feedagent_ws_listen_key_age_seconds",
            "Seconds since the Binance listenKey was created or last kept alive (it expires at 3600 without a "
            "keepalive); 0 while no key is held.", ["exchange"], registry=r)

        # Messages and events
        self.messages_malformed = Counter(
            "feedagent_messages_malformed", "Exchange messages (rows or frames) that could not be parsed and were skipped.",
            ["exchange", "source"], registry=r)
        self.events = Counter(
            "feedagent_events", "Events emitted on the event stream.", ["exchange", "kind", "source"], registry=r)
        self.open_positions = Gauge(
            "feedagent_open_positions", "Positions currently open, per exchange.", ["exchange"], registry=r)
        self.exchange_ready = Gauge(
            "feedagent_exchange_ready", "1 once the exchange delivered its first full snapshot.", ["exchange"], registry=r)
        self.exchange_degraded = Gauge(
            "feedagent_exchange_degraded",
            "1 while a scope of an exchange cannot be trusted (its last status event said degraded).",
            ["exchange", "scope"], registry=r)
        self.lifecycle_redelivered = Counter(
            "feedagent_lifecycle_redelivered",
            "Lifecycle events published again at start because no sink had confirmed them (same ids).",
            ["exchange"], registry=r)

        # Sinks
        self.sink_queue_depth = Gauge(
            "feedagent_sink_queue_depth", "Events waiting in a sink's queue.", ["sink"], registry=r)
        self.sink_events_written = Counter(
            "feedagent_sink_events_written", "Events a sink has written.", ["sink"], registry=r)
        self.sink_events_dropped = Counter(
            "feedagent_sink_events_dropped",
            "Latest-wins events (mark prices) a sink dropped, by reason (coalesced: replaced in the queue by a "
            "newer one; queue_full: pushed out of a full queue; backlogged: arrived while the sink spilled to "
            "disk; shutdown: unwritten at stop). Lifecycle events are never dropped.",
            ["sink", "kind", "reason"], registry=r)
        self.sink_backlogged = Gauge(
            "feedagent_sink_backlogged",
            "1 while a sink is backlogged: its queue filled with lifecycle events, which spill to its on-disk "
            "spool until the sink catches up.", ["sink"], registry=r)
        self.sink_spool_events = Gauge(
            "feedagent_sink_spool_events", "Lifecycle events waiting in a sink's on-disk spool.", ["sink"], registry=r)
        self.stream_subscribers_dropped = Counter(
            "feedagent_stream_subscribers_dropped",
            "Live /v1/events subscribers disconnected, by reason (slow_consumer: it let its queue fill up).",
            ["reason"], registry=r)
        self.sink_write_errors = Counter(
            "feedagent_sink_write_errors", "Failed sink writes.", ["sink"], registry=r)

        # Modes and reconciliation
        self.mode = Gauge(
            "feedagent_mode", "1 for the exchange's effective data-source mode, 0 for the others (a state set).",
            ["exchange", "mode"], registry=r)
        self.mode_transitions = Counter(
            "feedagent_mode_transitions", "Mode transitions, by direction and reason.",
            ["exchange", "from", "to", "reason"], registry=r)
        self.mode_transition_failures = Counter(
            "feedagent_mode_transition_failures",
            "Mode transitions abandoned because the new source never became ready (the old mode stays).",
            ["exchange", "to"], registry=r)
        self.reconcile_runs = Counter(
            "feedagent_reconcile_runs", "REST reconciliations of the WebSocket view, by outcome.",
            ["exchange", "outcome"], registry=r)
        self.reconcile_disagreements = Counter(
            "feedagent_reconcile_disagreements",
            "Positions where REST disagreed with the WebSocket view (corrected), by kind.",
            ["exchange", "kind"], registry=r)
        self.position_snapshots = Counter(
            "feedagent_position_snapshots", "Full REST position snapshots taken by the hybrid source, by reason.",
            ["exchange", "reason"], registry=r)

        # Shadow comparison
        self.shadow_samples = Counter(
            "feedagent_shadow_samples", "Shadow comparison samples, by kind (price, position) and result.",
            ["exchange", "kind", "result"], registry=r)
        self.shadow_divergence = Histogram(
            "feedagent_shadow_price_divergence_ratio", "|WS mark - REST mark| / REST mark per price sample.",
            ["exchange"], buckets=(1e-6, 5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 5e-3, 1e-2),
            registry=r)
        self.shadow_ws_lead = Histogram(
            "feedagent_shadow_ws_lead_seconds", "How much earlier the WebSocket showed a REST price change.",
            ["exchange"], buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10), registry=r)
        self.shadow_ws_lag = Histogram(
            "feedagent_shadow_ws_lag_seconds", "How much later the WebSocket showed a REST price change.",
            ["exchange"], buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10), registry=r)
        self.shadow_mismatches = Counter(
            "feedagent_shadow_mismatches", "Shadow mismatches, by kind (missed_close and ghost are critical).",
            ["exchange", "kind"], registry=r)
        self.shadow_windows = Counter(
            "feedagent_shadow_windows", "Shadow comparison windows judged, by verdict.", ["exchange", "verdict"],
            registry=r)
        self.shadow_last_verdict = Gauge(
            "feedagent_shadow_last_verdict", "1 for the verdict of the latest window, 0 for the others.",
            ["exchange", "verdict"], registry=r)
        self.shadow_mismatch_ratio = Gauge(
            "feedagent_shadow_window_mismatch_ratio", "Mismatch ratio of the latest judged window.", ["exchange"],
            registry=r)

        # Health and breaker
        self.health_check_value = Gauge(
            "feedagent_health_check_value", "Latest reading of a health check (its unit is in the check name).",
            ["exchange", "check"], registry=r)
        self.health_check_failing = Gauge(
            "feedagent_health_check_failing", "1 while a health check is failing (past its consecutive limit).",
            ["exchange", "check"], registry=r)
        self.breaker_state = Gauge(
            "feedagent_breaker_state", "1 for the breaker's state (closed, open, half_open), 0 for the others.",
            ["exchange", "state"], registry=r)
        self.breaker_trips = Gauge(
            "feedagent_breaker_trips", "Trips currently counted toward the cool-down (decays while healthy).",
            ["exchange"], registry=r)
        self.breaker_cooldown_until = Gauge(
            "feedagent_breaker_cooldown_until_timestamp_seconds",
            "Unix time until which an open breaker waits before probation; 0 when none.", ["exchange"], registry=r)
        self.breaker_latched = Gauge(
            "feedagent_breaker_latched", "1 when the daily transition budget latched the exchange to rest.",
            ["exchange"], registry=r)
        self.mode_pinned = Gauge(
            "feedagent_mode_pinned", "1 when an operator pinned the exchange's mode.", ["exchange"], registry=r)

        # Agent
        self.event_loop_lag = Histogram(
            "feedagent_event_loop_lag_seconds", "How late a periodic timer fires on the event loop.",
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5), registry=r)
        self.config_last_reload_successful = Gauge(
            "feedagent_config_last_reload_successful", "1 when the last config reload succeeded (or none was tried).",
            registry=r)
        self.config_last_reload_success = Gauge(
            "feedagent_config_last_reload_success_timestamp_seconds", "Unix time of the last successful config load.",
            registry=r)
        self.config_info = Gauge(
            "feedagent_config_info", "The loaded config, by the sha256 of its file.", ["sha256"], registry=r)
        self.task_restarts = Counter(
            "feedagent_task_restarts",
            "Long-running tasks restarted after an unexpected exception, by role (e.g. hybrid/public-consumer).",
            ["exchange", "task"], registry=r)
        self.config_reloads = Counter(
            "feedagent_config_reloads", "Config reload attempts, by trigger and outcome.", ["trigger", "outcome"],
            registry=r)
        self.config_last_reload_successful.set(1)

    def set_state_set(self, gauge: Gauge, exchange: str, states: tuple[str, ...], current: str) -> None:
        """Set a state-set gauge: 1 for ``current``, 0 for every other state."""
        for state in states:
            gauge.labels(exchange, state).set(1 if state == current else 0)

    def set_mode(self, exchange: str, mode: str) -> None:
        """Mark ``mode`` as the effective one in the ``feedagent_mode`` state set."""
        for m in ("rest", "hybrid", "shadow"):
            self.mode.labels(exchange, m).set(1 if m == mode else 0)

    def init_exchange(self, exchange: str) -> None:
        """Create the known series of one exchange at zero so that rates and alerts see them from the start."""
        for kind in ("positions", "prices"):
            for outcome in ("ok", "error", "rate_limited", "banned", "auth_error", "clock_skew", "unavailable", "malformed"):
                self.polls.labels(exchange, kind, outcome)
        for source in ("rest", "ws"):
            self.messages_malformed.labels(exchange, source)
        self.exchange_ready.labels(exchange).set(0)
        self.exchange_degraded.labels(exchange, "positions").set(0)
        self.lifecycle_redelivered.labels(exchange)
        self.rest_backoff_until.labels(exchange).set(0)
        for outcome in ("ok", "error"):
            self.reconcile_runs.labels(exchange, outcome)
        for kind in ("missed_open", "missed_close", "size_mismatch"):
            self.reconcile_disagreements.labels(exchange, kind)
        self.set_mode(exchange, "none")
        for state in ("closed", "open", "half_open"):
            self.breaker_state.labels(exchange, state).set(0)
        self.breaker_trips.labels(exchange).set(0)
        self.breaker_cooldown_until.labels(exchange).set(0)
        self.breaker_latched.labels(exchange).set(0)
        self.mode_pinned.labels(exchange).set(0)

    def init_ws_stream(self, exchange: str, stream: str) -> None:
        """Create the known series of one WebSocket stream at zero."""
        for outcome in ("ok", "timeout", "rejected", "error", "url_error", "auth_rejected", "auth_timeout",
                        "closed_during_setup"):
            self.ws_connects.labels(exchange, stream, outcome)
        for reason in ("closed_by_server", "connection_lost", "error", "pong_timeout", "stale", "notice"):
            self.ws_reconnects.labels(exchange, stream, reason)
        for outcome in ("ok", "failed"):
            self.ws_rotations.labels(exchange, stream, outcome)
        for kind in ("data", "pong", "unknown"):
            self.ws_messages.labels(exchange, stream, kind)
        for state in ("pending", "acked", "live", "stale", "failed"):
            self.ws_subscriptions.labels(exchange, stream, state).set(0)
        self.ws_frames_malformed.labels(exchange, stream)
        self.ws_connect_budget_waits.labels(exchange, stream)
        self.ws_connected.labels(exchange, stream).set(0)
        self.ws_healthy.labels(exchange, stream).set(0)
