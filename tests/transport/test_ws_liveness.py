"""Data-level liveness and heartbeats: silent sockets, unanswered pings, event-driven topics."""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry

from agent.telemetry.metrics import Metrics
from tests.transport.test_ws_harness import (
    JsonTestProtocol, Recorder, eventually, fake_server, fast_config, sample, stream,
)

STALE_AFTER = 0.15
TICK = 0.01  # watchdog interval in fast_config


async def test_silent_socket_is_resubscribed_then_reconnected() -> None:
    async with fake_server() as server:
        rec = Recorder()
        metrics = Metrics(CollectorRegistry())
        async with stream(JsonTestProtocol(server.url, stale_after=STALE_AFTER), recorder=rec,
                          metrics=metrics) as ws:
            await ws.subscribe(["a"])
            await eventually(lambda: ws.healthy)
            pongs_before = sample(metrics, "feedagent_ws_messages_total", kind="pong")
            server.silent = True  # the socket stays open, pings and acks are answered, data stops
            silent_at = time.monotonic()

            took = await eventually(lambda: len(server.conns) == 2, what="reconnect of the silent socket")
            # first silence window -> resubscribe; second -> reconnect
            assert took <= 2 * (STALE_AFTER + TICK) + 0.15
            first = server.conns[0]
            assert first.times_of("unsub", "a") and first.times_of("unsub", "a")[0] > silent_at
            assert first.times_of("sub", "a")[-1] > silent_at  # resubscribed once on the same socket
            assert rec.disconnected == ["stale"]
            assert sample(metrics, "feedagent_ws_reconnects_total", reason="stale") == 1
            # pongs kept arriving while the data was silent: ping/pong alone would have called this healthy
            assert sample(metrics, "feedagent_ws_messages_total", kind="pong") > pongs_before
            server.silent = False
            await eventually(lambda: ws.healthy)


async def test_stale_topic_recovered_by_resubscribe_without_reconnect() -> None:
    async with fake_server() as server:
        async with stream(JsonTestProtocol(server.url, stale_after=STALE_AFTER)) as ws:
            await ws.subscribe(["a", "b"])
            await eventually(lambda: ws.healthy)
            server.silent_until_resubscribed.add("b")  # b goes quiet until it is subscribed again
            await eventually(lambda: server.last.topics_of("unsub") == ["b"], what="b resubscribed")
            await eventually(lambda: ws.healthy, what="b live again after the resubscribe")
            assert len(server.conns) == 1


async def test_stale_topic_shows_in_snapshot_and_metrics() -> None:
    async with fake_server() as server:
        metrics = Metrics(CollectorRegistry())
        async with stream(JsonTestProtocol(server.url, stale_after=STALE_AFTER), metrics=metrics) as ws:
            await ws.subscribe(["a", "b"])
            await eventually(lambda: ws.healthy)
            server.silent_topics.add("b")
            await eventually(lambda: ws.snapshot().subscriptions["b"].state == "stale", what="b stale")
            assert ws.snapshot().state == "degraded" and not ws.healthy
            await eventually(lambda: sample(metrics, "feedagent_ws_subscriptions", state="stale") == 1)
            assert sample(metrics, "feedagent_ws_healthy") == 0
            server.silent_topics.clear()
            await eventually(lambda: ws.healthy, what="b back before the second window ends")
            assert len(server.conns) == 1


async def test_silent_socket_detected_while_the_server_keeps_pinging_with_frames() -> None:
    # The trap: aiohttp's receive timeout restarts on every ping frame, so only data age finds this.
    async with fake_server() as server:
        server.ping_frames_every = 0.01
        rec = Recorder()
        proto = JsonTestProtocol(server.url, stale_after=STALE_AFTER, app_ping=False)
        async with stream(proto, recorder=rec) as ws:
            await ws.subscribe(["a"])
            await eventually(lambda: ws.healthy)
            server.silent = True
            took = await eventually(lambda: len(server.conns) == 2, what="reconnect")
            assert took <= 2 * (STALE_AFTER + TICK) + 0.15
            assert rec.disconnected == ["stale"]
            assert server.conns[0].pong_payloads  # the server's ping frames were answered all along


async def test_unanswered_application_ping_is_a_pong_timeout() -> None:
    async with fake_server() as server:
        rec = Recorder()
        config = fast_config(ping_interval_seconds=0.05, pong_timeout_seconds=0.1)
        async with stream(JsonTestProtocol(server.url, stale_after=5.0), config=config, recorder=rec) as ws:
            await ws.subscribe(["a"])
            await eventually(lambda: ws.healthy)
            server.answer_pings = False
            took = await eventually(lambda: len(server.conns) == 2, what="reconnect after pong timeout")
            assert took <= 0.05 + 0.1 + 0.15
            assert rec.disconnected == ["pong_timeout"]
            server.answer_pings = True
            await eventually(lambda: ws.healthy)


async def test_unanswered_ping_frame_is_a_pong_timeout_without_application_pings() -> None:
    async with fake_server() as server:
        server.answer_ping_frames = False
        rec = Recorder()
        proto = JsonTestProtocol(server.url, app_ping=False)
        async with stream(proto, recorder=rec) as ws:
            await ws.subscribe(["evt.positions"])  # event-driven: no data, so only pings can tell
            await eventually(lambda: len(server.conns) >= 2, what="reconnect after a missing pong frame")
            assert rec.disconnected[0] == "pong_timeout"


async def test_server_ping_frames_are_answered_with_their_payload() -> None:
    async with fake_server() as server:
        server.ping_frames_every = 0.01
        async with stream(JsonTestProtocol(server.url, app_ping=False)) as ws:
            await ws.subscribe(["evt.positions"])
            await eventually(lambda: bool(server.conns) and len(server.last.pong_payloads) >= 3)
            assert server.last.pong_payloads[:3] == [b"p0", b"p1", b"p2"]


async def test_event_driven_topic_is_live_on_ack_and_never_stale() -> None:
    async with fake_server() as server:
        metrics = Metrics(CollectorRegistry())
        async with stream(JsonTestProtocol(server.url, stale_after=STALE_AFTER), metrics=metrics) as ws:
            await ws.subscribe(["evt.positions"])
            await eventually(lambda: ws.healthy, what="live without any data")
            rtts = sample(metrics, "feedagent_ws_heartbeat_rtt_seconds_count")
            await eventually(lambda: sample(metrics, "feedagent_ws_heartbeat_rtt_seconds_count") >= rtts + 8,
                             what="several heartbeats (> 3 stale windows)")
            assert ws.healthy and len(server.conns) == 1
            assert ws.snapshot().subscriptions["evt.positions"].data_age_seconds is None


async def test_data_age_metric_tracks_the_stalest_streaming_topic() -> None:
    async with fake_server() as server:
        server.silent_topics.add("b")
        metrics = Metrics(CollectorRegistry())
        async with stream(JsonTestProtocol(server.url, stale_after=5.0), metrics=metrics) as ws:
            await ws.subscribe(["a", "b", "evt.positions"])
            await eventually(lambda: sample(metrics, "feedagent_ws_data_age_seconds") > 0.2)
            assert ws.snapshot().subscriptions["a"].data_age_seconds < 0.2
