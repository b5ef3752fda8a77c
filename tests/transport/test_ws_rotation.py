"""Planned make-before-break rotation: no data gap across the switch, old link kept when the new one fails."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from agent.telemetry.metrics import Metrics
from tests.transport.test_ws_harness import (
    EXCHANGE, STREAM, JsonTestProtocol, Recorder, eventually, fake_server, fast_config, has_gap, sample, stream,
)

BASE_TASKS = {f"{EXCHANGE}/{STREAM}/{name}" for name in ("run", "watchdog", "reader", "heartbeat")}


def overlapped(conns: list) -> bool:
    """Each connection opened before the previous one closed."""
    return all(b.opened < (a.closed or float("inf")) for a, b in zip(conns, conns[1:]))


async def test_rotation_switches_links_without_a_gap() -> None:
    async with fake_server(tick_seconds=0.005) as server:
        rec = Recorder()
        metrics = Metrics(CollectorRegistry())
        config = fast_config(rotate_after_seconds=0.25)
        async with stream(JsonTestProtocol(server.url), config=config, recorder=rec, metrics=metrics) as ws:
            await ws.subscribe(["a", "b", "evt.positions"])
            await eventually(lambda: ws.rotations >= 3, what="three rotations")
            await eventually(lambda: ws.healthy and set(ws.task_names()) == BASE_TASKS)

            for topic in ("a", "b"):
                seqs = rec.seqs(topic)
                assert len(seqs) > 50 and not has_gap(seqs), f"gap in {topic}"
            assert overlapped(server.conns[:4])  # make before break
            assert max(len(c.subscribed) for c in server.conns) == 3
            assert rec.disconnected == [] and ws.reconnects == 0
            assert rec.connected[:4] == [1, 2, 3, 4]  # on_connected after each switch (REST snapshot hook)
            assert sample(metrics, "feedagent_ws_rotations_total", outcome="ok") >= 3
            assert sample(metrics, "feedagent_ws_reconnects_total", reason="closed_by_server") == 0
            assert len(server.open_conns()) <= 2


async def test_failed_rotation_keeps_the_old_link_and_retries() -> None:
    async with fake_server(tick_seconds=0.005) as server:
        server.reject_auth_from_conn = 1  # every new connection fails auth
        rec = Recorder()
        metrics = Metrics(CollectorRegistry())
        config = fast_config(rotate_after_seconds=0.1, backoff_initial_seconds=0.02, backoff_max_seconds=0.05)
        async with stream(JsonTestProtocol(server.url), config=config, recorder=rec, metrics=metrics) as ws:
            await ws.subscribe(["a"])
            await eventually(lambda: sample(metrics, "feedagent_ws_rotations_total", outcome="failed") >= 2)
            assert ws.healthy and ws.generation == 1
            assert server.conns[0].closed is None  # the old link served all along
            assert rec.disconnected == []
            assert (ws.snapshot().last_error or "").startswith("rotation: auth_rejected")

            server.reject_auth_from_conn = None
            await eventually(lambda: ws.rotations >= 1 and ws.healthy, what="rotation once auth works")
            assert not has_gap(rec.seqs("a"))
            assert server.conns[0].closed is not None


async def test_rotation_on_request_from_a_server_notice() -> None:
    async with fake_server(tick_seconds=0.005) as server:
        rec = Recorder()
        async with stream(JsonTestProtocol(server.url), recorder=rec) as ws:  # no scheduled rotation
            await ws.subscribe(["a"])
            await eventually(lambda: ws.healthy)
            await server.send_all({"op": "notice", "kind": "maintenance", "action": "rotate"})
            await eventually(lambda: ws.rotations == 1 and ws.healthy)
            assert rec.disconnected == [] and [n.kind for n in rec.notices] == ["maintenance"]
            assert overlapped(server.conns[:2])
            assert not has_gap(rec.seqs("a"))


async def test_candidate_tasks_have_their_own_names_during_a_rotation() -> None:
    async with fake_server() as server:
        server.silent_topics.add("a")  # the candidate can never become live: the rotation waits
        config = fast_config(rotate_after_seconds=0.05, rotation_ready_timeout_seconds=5.0)
        async with stream(JsonTestProtocol(server.url, stale_after=5.0), config=config) as ws:
            await ws.subscribe(["a"])
            prefix = f"{EXCHANGE}/{STREAM}/"
            await eventually(lambda: f"{prefix}rotation/reader" in ws.task_names(), what="candidate tasks")
            assert set(ws.task_names()) == BASE_TASKS | {f"{prefix}rotation/reader", f"{prefix}rotation/heartbeat"}


async def test_old_link_dying_during_a_rotation_is_reported_as_a_disconnect() -> None:
    async with fake_server(tick_seconds=0.005) as server:
        server.silent_conns.add(1)  # the candidate never becomes live on its own
        rec = Recorder()
        config = fast_config(rotate_after_seconds=0.05, rotation_ready_timeout_seconds=5.0)
        async with stream(JsonTestProtocol(server.url, stale_after=5.0), config=config, recorder=rec) as ws:
            await ws.subscribe(["a"])
            await eventually(lambda: len(server.conns) == 2 and server.conns[1].subscribed == {"a"},
                             what="candidate subscribed")
            server.conns[0].request.transport.abort()  # the old link dies before the switch
            await eventually(lambda: ws.generation == 2, what="candidate promoted")
            assert len(rec.disconnected) == 1 and ws.reconnects == 1  # reported: the caller must resync
            assert rec.connected == [1, 2] and len(server.conns) == 2
            server.silent_conns.clear()
            await eventually(lambda: ws.healthy)
