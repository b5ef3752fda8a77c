"""ResilientWebSocket against a real loopback server: connect, auth, subscribe, reconnect, replay."""

from __future__ import annotations

import json

import pytest
from prometheus_client import CollectorRegistry
from tests.transport.test_ws_harness import (
    JsonTestProtocol, Recorder, eventually, fake_server, fast_config, has_gap, sample, stream,
)

from agent.telemetry.metrics import Metrics
from agent.transport.ws import WsCapacityError
from agent.transport.ws_config import WsState


async def test_connects_authenticates_subscribes_and_delivers() -> None:
    async with fake_server() as server:
        proto = JsonTestProtocol(server.url)
        rec = Recorder()
        metrics = Metrics(CollectorRegistry())
        async with stream(proto, recorder=rec, metrics=metrics) as ws:
            await ws.subscribe(["a", "b", "c"])
            await eventually(lambda: ws.healthy, what="all subscriptions live")

            conn = server.last
            assert conn.authed
            assert conn.ops("auth") and conn.received[0]["op"] == "auth"  # auth before anything else
            assert sorted(conn.topics_of("sub")) == ["a", "b", "c"]
            assert len(conn.ops("sub")) == 2  # batched by the protocol (2 topics per request)
            assert rec.connected == [1]
            snap = ws.snapshot()
            assert snap.connected and snap.healthy and snap.generation == 1
            assert {t: s.state for t, s in snap.subscriptions.items()} == {"a": "live", "b": "live", "c": "live"}
            assert all(s.data_age_seconds is not None and s.data_age_seconds < 1 for s in snap.subscriptions.values())
            await eventually(lambda: ws.snapshot().last_rtt_seconds is not None, what="an RTT sample")
            assert sample(metrics, "feedagent_ws_connects_total", outcome="ok") == 1
            assert sample(metrics, "feedagent_ws_connected") == 1
            assert sample(metrics, "feedagent_ws_subscriptions", state="live") == 3
            assert sample(metrics, "feedagent_ws_messages_total", kind="data") > 0
            assert sample(metrics, "feedagent_ws_heartbeat_rtt_seconds_count") >= 1
            assert sample(metrics, "feedagent_ws_last_message_timestamp_seconds") > 1e9
        assert ws.state is WsState.STOPPED
        assert sample(metrics, "feedagent_ws_connected") == 0


async def test_topic_is_live_only_after_its_first_data_message() -> None:
    async with fake_server() as server:
        server.silent_topics.add("b")
        async with stream(JsonTestProtocol(server.url, stale_after=5.0)) as ws:
            await ws.subscribe(["a", "b"])
            await eventually(lambda: ws.snapshot().subscriptions["a"].state == "live")
            assert ws.snapshot().subscriptions["b"].state == "acked"
            assert not ws.healthy and ws.state is WsState.SUBSCRIBING
            server.silent_topics.clear()
            await eventually(lambda: ws.healthy, what="b live after its first message")


async def test_reconnects_with_backoff_and_replays_subscriptions() -> None:
    async with fake_server() as server:
        server.drop_after_frames = 10
        rec = Recorder()
        async with stream(JsonTestProtocol(server.url), recorder=rec) as ws:
            await ws.subscribe(["a", "b"])
            await eventually(lambda: len(server.conns) >= 4, what="three reconnects")
            await eventually(lambda: ws.healthy)
            for conn in server.conns[:4]:
                assert sorted(conn.topics_of("sub")) == ["a", "b"]  # each connection got the full registry
                assert conn.authed
            assert ws.reconnects >= 3
            assert set(rec.disconnected) == {"closed_by_server"}
            assert rec.connected[:4] == [1, 2, 3, 4]
            assert len(server.open_conns()) <= 1  # never two connections outside a rotation


async def test_tcp_reset_is_a_reconnect_not_a_crash() -> None:
    async with fake_server() as server:
        rec = Recorder()
        async with stream(JsonTestProtocol(server.url), recorder=rec) as ws:
            await ws.subscribe(["a"])
            await eventually(lambda: ws.healthy)
            server.abort_all()
            await eventually(lambda: len(server.conns) == 2 and ws.healthy, what="reconnect after reset")
            assert rec.disconnected[0] in {"connection_lost", "closed_by_server", "error"}
            assert "run" in " ".join(ws.task_names())


async def test_server_close_with_code_is_counted_by_reason() -> None:
    async with fake_server() as server:
        metrics = Metrics(CollectorRegistry())
        async with stream(JsonTestProtocol(server.url), metrics=metrics) as ws:
            await ws.subscribe(["a"])
            await eventually(lambda: ws.healthy)
            await server.close_all(code=4001)
            await eventually(lambda: len(server.conns) == 2 and ws.healthy)
            assert sample(metrics, "feedagent_ws_reconnects_total", reason="closed_by_server") == 1
            assert ws.snapshot().last_disconnect_reason == "closed_by_server"
            assert "4001" in (ws.snapshot().last_error or "")


async def test_subscribe_and_unsubscribe_on_the_live_connection() -> None:
    async with fake_server() as server:
        rec = Recorder()
        async with stream(JsonTestProtocol(server.url), recorder=rec) as ws:
            await ws.subscribe(["a", "b"])
            await eventually(lambda: ws.healthy)
            await ws.subscribe(["c"])
            assert len(server.conns) == 1  # no reconnect for a new topic
            assert server.last.topics_of("sub")[-1] == "c"
            await eventually(lambda: ws.healthy and ws.snapshot().subscriptions["c"].state == "live")

            await ws.unsubscribe(["b"])
            assert server.last.topics_of("unsub") == ["b"]
            assert ws.topics() == ["a", "c"]
            delivered = len(rec.seqs("b"))
            await eventually(lambda: len(rec.seqs("a")) > len(rec.data) // 3 + 5)  # time passes, data flows
            assert len(rec.seqs("b")) == delivered  # no data for b after unsubscribe returned

            server.abort_all()
            await eventually(lambda: len(server.conns) == 2 and ws.healthy)
            assert sorted(server.conns[1].topics_of("sub")) == ["a", "c"]  # b is not replayed


async def test_failed_subscribe_shows_failed_then_retries_with_backoff() -> None:
    async with fake_server() as server:
        server.fail_topics["bad"] = 3
        metrics = Metrics(CollectorRegistry())
        config = fast_config(subscribe_retry_initial_seconds=0.04, subscribe_retry_max_seconds=0.16)
        async with stream(JsonTestProtocol(server.url, batch=1), config=config, metrics=metrics,
                          rng=lambda: 1.0) as ws:
            await ws.subscribe(["a", "bad"])
            await eventually(lambda: ws.snapshot().subscriptions["bad"].state == "failed")
            snap = ws.snapshot()
            assert snap.subscriptions["bad"].last_error == "unknown topic"
            assert snap.state == "degraded" and not snap.healthy
            await eventually(lambda: ws.healthy, what="bad subscribed after retries")
            times = server.last.times_of("sub", "bad")
            assert len(times) == 4
            gaps = [b - a for a, b in zip(times, times[1:])]
            assert gaps[0] >= 0.035 and gaps[1] >= 0.075 and gaps[2] >= 0.15  # 0.04, 0.08, 0.16: growing
            assert len(server.conns) == 1  # retried on the same connection
            assert sample(metrics, "feedagent_ws_subscribe_requests_total", kind="subscribe", outcome="rejected") == 3


async def test_partially_failed_ack_fails_only_the_listed_topics() -> None:
    async with fake_server() as server:
        server.fail_topics["bad"] = -1
        async with stream(JsonTestProtocol(server.url, batch=5)) as ws:
            await ws.subscribe(["a", "bad", "c"])
            await eventually(lambda: ws.snapshot().subscriptions["a"].state == "live"
                             and ws.snapshot().subscriptions["c"].state == "live")
            assert ws.snapshot().subscriptions["bad"].state in {"failed", "pending"}
            await eventually(lambda: ws.snapshot().subscriptions["bad"].failures >= 2, what="retries")


async def test_ack_slower_than_the_timeout_fails_and_is_retried() -> None:
    async with fake_server() as server:
        server.ack_delay_seconds = 0.5  # longer than subscribe_ack_timeout_seconds (0.3)
        async with stream(JsonTestProtocol(server.url, stale_after=5.0)) as ws:
            await ws.subscribe(["evt.positions"])
            await eventually(lambda: ws.snapshot().subscriptions["evt.positions"].failures >= 1)
            assert ws.snapshot().subscriptions["evt.positions"].last_error == "ack_timeout"
            assert not ws.healthy
            server.ack_delay_seconds = 0.0
            await eventually(lambda: ws.healthy, what="retry acked")
            assert len(server.conns) == 1


async def test_malformed_and_unknown_frames_are_counted_and_skipped() -> None:
    async with fake_server() as server:
        metrics = Metrics(CollectorRegistry())
        async with stream(JsonTestProtocol(server.url), metrics=metrics) as ws:
            await ws.subscribe(["a"])
            await eventually(lambda: ws.healthy)
            await server.send_all("{not json")
            await server.send_all("[1, 2]")
            await server.send_all({"op": "surprise"})
            await server.send_all({"op": "ack", "id": "999", "ok": True})
            await server.send_all({"topic": "never-subscribed", "seq": 1})
            await eventually(lambda: sample(metrics, "feedagent_ws_messages_total", kind="unsubscribed") == 1)
            assert sample(metrics, "feedagent_ws_frames_malformed_total") == 1
            assert sample(metrics, "feedagent_ws_messages_total", kind="unknown") == 2
            assert sample(metrics, "feedagent_ws_messages_total", kind="ack_unmatched") == 1
            assert len(server.conns) == 1 and ws.healthy


async def test_notice_reaches_the_callback_and_can_force_a_reconnect() -> None:
    async with fake_server() as server:
        rec = Recorder()
        proto = JsonTestProtocol(server.url)
        async with stream(proto, recorder=rec) as ws:
            await ws.subscribe(["a"])
            await eventually(lambda: ws.healthy)
            await server.send_all({"op": "notice", "kind": "info", "action": "none"})
            await server.send_all({"op": "notice", "kind": "listenKeyExpired", "action": "reconnect"})
            await eventually(lambda: len(server.conns) == 2 and ws.healthy)
            assert [n.kind for n in rec.notices] == ["info", "listenKeyExpired"]
            assert rec.disconnected == ["notice"]
            assert proto.url_calls == 2  # the URL (a fresh listenKey) is asked for before every connect


async def test_data_flows_without_gaps_when_nothing_goes_wrong() -> None:
    async with fake_server() as server:
        rec = Recorder()
        async with stream(JsonTestProtocol(server.url), recorder=rec) as ws:
            await ws.subscribe(["a"])
            await eventually(lambda: len(rec.seqs("a")) >= 30)
            assert not has_gap(rec.seqs("a"))


async def test_capacity_is_checked_before_the_registry_changes() -> None:
    async with fake_server() as server:
        async with stream(JsonTestProtocol(server.url)) as ws:
            await ws.subscribe([f"t{i}" for i in range(50)])
            with pytest.raises(WsCapacityError):
                await ws.subscribe(["one-too-many"])
            assert len(ws.topics()) == 50


async def test_callback_errors_are_counted_not_raised() -> None:
    async with fake_server() as server:
        metrics = Metrics(CollectorRegistry())

        def broken(topic: str, payload: object, ts: int) -> None:
            raise RuntimeError("consumer bug")

        from agent.transport.ws import ResilientWebSocket
        ws = ResilientWebSocket(JsonTestProtocol(server.url), exchange="test-ex", stream="public",
                                config=fast_config(), metrics=metrics, on_data=broken)
        await ws.start()
        try:
            await ws.subscribe(["a"])
            await eventually(lambda: sample(metrics, "feedagent_ws_callback_errors_total", callback="on_data") >= 3)
            assert ws.healthy and len(server.conns) == 1
        finally:
            await ws.stop()


def test_protocol_requests_are_json() -> None:
    proto = JsonTestProtocol("ws://x")
    reqs = proto.subscribe_requests(["a", "b", "c"])
    assert [r.topics for r in reqs] == [("a", "b"), ("c",)]
    assert json.loads(reqs[0].text)["id"] == reqs[0].request_id
