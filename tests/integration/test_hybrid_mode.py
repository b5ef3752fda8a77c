"""Hybrid mode against the simulator, one test per failure mode (../shared/reference/failure-modes.md).

Every test drives positions through the simulator, injects a fault, and checks that the agent's
lifecycle events equal the simulator's own record (nothing lost, nothing duplicated).
"""

from __future__ import annotations

import time

from agent.core.events import MarkPriceEvent
from agent.simulator import SimulatorConfig
from tests.integration.harness import agent_on_simulator, eventually
from tests.integration.lifecycle import assert_same_lifecycle

BOTH = ("bybit", "binance")


def ws_marks(log, exchange: str) -> list[MarkPriceEvent]:
    return [e for e in log.of_kind("mark_price", exchange) if e.source == "ws"]


async def churn(sim, log, venue: str, symbol: str = "SOLUSDT", side: str = "long") -> None:
    """Open, resize and close one position, waiting for the agent to see each step."""
    name = f"{venue}-x"
    sim.market.open_position(venue, symbol, side, "3")
    await eventually(lambda: any(e.symbol == symbol and e.change == "opened" for e in log.positions(name)),
                     what=f"{venue} opened")
    sim.market.set_size(venue, symbol, "5")
    await eventually(lambda: any(e.symbol == symbol and e.size in ("5", "5.0", "5.00", "5.000") for e in
                                 log.positions(name)), what=f"{venue} resized")
    sim.market.close_position(venue, symbol)
    await eventually(lambda: any(e.symbol == symbol and e.change == "closed" for e in log.positions(name)),
                     what=f"{venue} closed")


async def test_hybrid_streams_prices_and_lifecycle_from_ws(tmp_path):
    async with agent_on_simulator(tmp_path) as (agent, log, sim):
        await eventually(agent.is_ready, what="ready")
        started = time.monotonic()
        await eventually(lambda: len(ws_marks(log, "binance-x")) >= 6, timeout_seconds=10, what="binance marks")
        elapsed = time.monotonic() - started
        by_symbol = {s: [e for e in ws_marks(log, "bybit-x") if e.symbol == s] for s in ("BTCUSDT", "ETHUSDT")}
        for symbol, marks in by_symbol.items():
            assert len(marks) / elapsed > 2, f"bybit {symbol}: {len(marks)} in {elapsed:.1f}s"
        bn = [e for e in ws_marks(log, "binance-x") if e.symbol == "BTCUSDT"]
        assert 0.5 < len(bn) / elapsed < 2.5, "binance @markPrice@1s: about one a second"
        assert all(e.mark_price for e in ws_marks(log, "bybit-x")), "a delta without markPrice emits nothing"
        for venue in BOTH:
            await churn(sim, log, venue)
            ws_events = [e for e in log.positions(f"{venue}-x") if e.symbol == "SOLUSDT"]
            assert {e.source for e in ws_events} == {"ws"}
            assert_same_lifecycle(log.positions(f"{venue}-x"), sim, venue)
        # the symbol with a position was followed while open, and dropped when closed
        await eventually(lambda: "SOLUSDT" not in agent.pipelines["bybit-x"].followed_symbols(), what="unfollow")


async def test_position_stream_silent_at_start_uses_rest_snapshot(tmp_path):
    """failure-modes #7: positions that exist before connecting are known at once, not when they change."""
    cfg = SimulatorConfig(seed=3, position_change_interval_seconds=0, initial_positions_per_venue=2)
    async with agent_on_simulator(tmp_path, cfg) as (agent, log, sim):
        await eventually(lambda: all(len([e for e in log.positions(f"{v}-x") if e.change == "opened"]) == 2
                                     for v in BOTH), what="initial positions from the REST snapshot")
        for venue in BOTH:
            assert {e.source for e in log.positions(f"{venue}-x")} == {"rest"}
            assert_same_lifecycle(log.positions(f"{venue}-x"), sim, venue)


async def test_silent_public_socket_is_detected_and_recovered(tmp_path):
    """failure-modes #1: connected but silent: data-age liveness resubscribes, then reconnects."""
    async with agent_on_simulator(tmp_path) as (agent, log, sim):
        await eventually(agent.is_ready, what="ready")
        for venue in BOTH:
            sim.faults.inject(venue, "ws_silence", stream="public" if venue == "bybit" else "market",
                              duration_seconds=4)
        mark = time.monotonic()
        n = {v: len(ws_marks(log, f"{v}-x")) for v in BOTH}

        def resumed() -> bool:
            return all(len(ws_marks(log, f"{v}-x")) > n[v] + 3 for v in BOTH) and time.monotonic() - mark > 4
        await eventually(resumed, timeout_seconds=15, what="prices resume after the silence")
        for venue in BOTH:
            stream = agent.pipelines[f"{venue}-x"].ws.status()["public"]
            resubscribes = agent.metrics.registry.get_sample_value("feedagent_ws_subscribe_requests_total", {
                "exchange": f"{venue}-x", "stream": "public", "kind": "unsubscribe", "outcome": "ok"}) or 0
            assert stream["reconnects"] >= 1 or resubscribes >= 1, "the silence was noticed (resubscribe or reconnect)"
            await churn(sim, log, venue)
            assert_same_lifecycle(log.positions(f"{venue}-x"), sim, venue)


async def test_dropped_connections_restore_subscriptions_and_miss_nothing(tmp_path):
    """failure-modes #2, #5: after a reconnect every subscription is replayed and a REST snapshot closes the gap."""
    async with agent_on_simulator(tmp_path) as (agent, log, sim):
        await eventually(agent.is_ready, what="ready")
        for venue in BOTH:
            sim.faults.inject(venue, "ws_drop", stream="private", duration_seconds=1.5)
            sim.market.open_position(venue, "ETHUSDT", "short", "2")  # happens while the private stream is down
        for venue in BOTH:
            name = f"{venue}-x"
            await eventually(lambda: any(e.change == "opened" for e in log.positions(name)), timeout_seconds=15,
                             what=f"{venue} open seen after reconnect")
            sim.faults.inject(venue, "ws_drop", stream="public" if venue == "bybit" else "market")
        for venue in BOTH:
            n = len(ws_marks(log, f"{venue}-x"))
            await eventually(lambda: len(ws_marks(log, f"{venue}-x")) > n + 2, timeout_seconds=10,
                             what=f"{venue} prices after the public reconnect")
            sim.market.close_position(venue, "ETHUSDT")
            await eventually(lambda: any(e.change == "closed" for e in log.positions(f"{venue}-x")),
                             what=f"{venue} close")
            assert_same_lifecycle(log.positions(f"{venue}-x"), sim, venue)
            await eventually(lambda: agent.pipelines[f"{venue}-x"].ws.snapshots_taken >= 2,
                             what=f"{venue} snapshot after the private reconnect")


async def test_listen_key_expiry_and_keepalive_failure(tmp_path):
    """failure-modes #3, #4: listenKeyExpired (E as a string) -> new key, snapshot, no lost event."""
    async with agent_on_simulator(tmp_path, modes={"binance": "hybrid"}) as (agent, log, sim):
        await eventually(agent.is_ready, what="ready")
        source = agent.pipelines["binance-x"].ws
        first_key = source.venue.listen_keys.key
        sim.faults.inject("binance", "listen_key_expire", e_as_string=True)
        sim.market.open_position("binance", "BTCUSDT", "long", "0.01")
        await eventually(lambda: any(e.change == "opened" for e in log.positions("binance-x")), timeout_seconds=15,
                         what="open after expiry")
        await eventually(lambda: source.venue.listen_keys.key not in (None, first_key), what="a new listenKey")
        sim.market.close_position("binance", "BTCUSDT")
        await eventually(lambda: any(e.change == "closed" for e in log.positions("binance-x")), what="close")
        assert_same_lifecycle(log.positions("binance-x"), sim, "binance")
        tasks = [t for t in source.venue.listen_keys.task_names()]
        assert len(tasks) <= 1, f"one keepalive task, never duplicated: {tasks}"


async def test_clock_skew_on_auth_is_absorbed(tmp_path):
    """failure-modes #10: auth and signed REST use the server-corrected clock."""
    async with agent_on_simulator(tmp_path) as (agent, log, sim):
        await eventually(agent.is_ready, what="ready")
        sim.faults.inject("all", "clock_skew", offset_ms=-4000)
        for venue in BOTH:
            await agent.pipelines[f"{venue}-x"].api.sync_clock()
            sim.faults.inject(venue, "ws_drop", stream="private")  # force a fresh auth under the skew
        for venue in BOTH:
            await churn(sim, log, venue)
            assert_same_lifecycle(log.positions(f"{venue}-x"), sim, venue)
            assert abs(agent.pipelines[f"{venue}-x"].api.status.clock_offset_ms + 4000) < 1000


async def test_rest_ban_during_resync_is_retried_without_loss(tmp_path):
    """failure-modes #11: the snapshot after a reconnect is rate limited; it is retried, never skipped."""
    async with agent_on_simulator(tmp_path, modes={"bybit": "hybrid"}) as (agent, log, sim):
        await eventually(agent.is_ready, what="ready")
        sim.faults.inject("bybit", "rest_error", status=200, code=10006, duration_seconds=2,
                          endpoint="/v5/position/list")
        sim.faults.inject("bybit", "ws_drop", stream="private", duration_seconds=0.5)
        sim.market.open_position("bybit", "XRPUSDT", "long", "100")
        await eventually(lambda: any(e.change == "opened" for e in log.positions("bybit-x")), timeout_seconds=15,
                         what="open after the ban")
        sim.market.close_position("bybit", "XRPUSDT")
        await eventually(lambda: any(e.change == "closed" for e in log.positions("bybit-x")), what="close")
        assert_same_lifecycle(log.positions("bybit-x"), sim, "bybit")


async def test_reconnect_storm_is_capped_by_backoff(tmp_path):
    """failure-modes #12: a server that drops every connection gets backoff, not a storm."""
    async with agent_on_simulator(tmp_path, modes={"bybit": "hybrid"}) as (agent, log, sim):
        await eventually(agent.is_ready, what="ready")
        before = sim.ws_stats()["bybit"]["public"]["opened"]
        sim.faults.inject("bybit", "ws_drop", stream="public", duration_seconds=3)
        started = time.monotonic()
        await eventually(lambda: time.monotonic() - started > 3.2, what="fault over")
        attempts = sim.ws_stats()["bybit"]["public"]["opened"] - before
        # backoff 0.05 s doubling to a 0.5 s cap: about 10 attempts in 3 s, never hundreds
        assert 2 <= attempts <= 20, attempts
        n = len(ws_marks(log, "bybit-x"))
        await eventually(lambda: len(ws_marks(log, "bybit-x")) > n + 3, timeout_seconds=10, what="recovered")
        await churn(sim, log, "bybit")
        assert_same_lifecycle(log.positions("bybit-x"), sim, "bybit")


async def test_forced_connection_cut_and_planned_rotation(tmp_path):
    """failure-modes #13: the venue cuts every connection at its age limit; planned rotation leaves no gap."""
    cfg = SimulatorConfig(seed=5, position_change_interval_seconds=0, binance_ws_max_connection_age_seconds=2.0)
    async with agent_on_simulator(tmp_path, cfg, modes={"binance": "hybrid", "bybit": "hybrid"},
                                  overrides={"bybit": {"ws": {"rotate_after_seconds": 1.5}}}) as (agent, log, sim):
        await eventually(agent.is_ready, what="ready")
        started = time.monotonic()
        await eventually(lambda: time.monotonic() - started > 4.5, timeout_seconds=10, what="two age cuts")
        for venue in BOTH:
            await churn(sim, log, venue)
            assert_same_lifecycle(log.positions(f"{venue}-x"), sim, venue)
        bybit_public = agent.pipelines["bybit-x"].ws.status()["public"]
        assert bybit_public["rotations"] >= 2
        assert sim.ws_stats()["binance"]["market"]["closed"].get("age", 0) >= 1
        # no gap in Bybit prices across rotations: never more than 1 s between two marks of BTCUSDT
        times = [e.ts_received_ms for e in ws_marks(log, "bybit-x") if e.symbol == "BTCUSDT"]
        assert max(b - a for a, b in zip(times, times[1:])) < 1000


async def test_dropped_ws_event_is_corrected_by_reconciliation(tmp_path):
    """failure-modes #9 and the reconciler: a position event that never arrives is found by REST."""
    async with agent_on_simulator(tmp_path) as (agent, log, sim):
        await eventually(agent.is_ready, what="ready")
        for venue in BOTH:
            sim.faults.inject(venue, "ws_drop_event", count=1)
            sim.market.open_position(venue, "BTCUSDT", "long", "0.5")
        for venue in BOTH:
            name = f"{venue}-x"
            await eventually(lambda: any(e.change == "opened" for e in log.positions(name)), timeout_seconds=10,
                             what=f"{venue} open found by reconciliation")
            opened = [e for e in log.positions(name) if e.change == "opened"][0]
            assert opened.source == "rest"
            value = agent.metrics.registry.get_sample_value(
                "feedagent_reconcile_disagreements_total", {"exchange": name, "kind": "missed_open"})
            assert value == 1
            sim.market.close_position(venue, "BTCUSDT")
            await eventually(lambda: any(e.change == "closed" for e in log.positions(name)), what="close")
            assert_same_lifecycle(log.positions(name), sim, venue)


async def test_blocked_event_loop_loses_no_lifecycle_event(tmp_path):
    """failure-modes #17: a stalled consumer: prices coalesce, lifecycle events all arrive in order."""
    async with agent_on_simulator(tmp_path) as (agent, log, sim):
        await eventually(agent.is_ready, what="ready")
        for venue in BOTH:
            sim.market.open_position(venue, "SOLUSDT", "long", "1")
        time.sleep(0.8)  # block the loop on purpose: frames pile up in the socket buffers
        for venue in BOTH:
            sim.market.set_size(venue, "SOLUSDT", "2")
            sim.market.set_size(venue, "SOLUSDT", "4")
        time.sleep(0.8)
        for venue in BOTH:
            sim.market.close_position(venue, "SOLUSDT")
        for venue in BOTH:
            await eventually(lambda: any(e.change == "closed" for e in log.positions(f"{venue}-x")),
                             timeout_seconds=10, what=f"{venue} close")
            assert_same_lifecycle(log.positions(f"{venue}-x"), sim, venue)


async def test_malformed_and_unknown_frames_are_counted_and_skipped(tmp_path):
    """Bad frames never crash a stream: counted, skipped, and the lifecycle stays exact."""
    async with agent_on_simulator(tmp_path) as (agent, log, sim):
        await eventually(agent.is_ready, what="ready")
        for venue in BOTH:
            for stream in ("public" if venue == "bybit" else "market", "private"):
                for mode in ("invalid_json", "unknown_shape"):
                    sim.faults.inject(venue, "ws_malformed", stream=stream, mode=mode, duration_seconds=3)
        for venue in BOTH:
            await churn(sim, log, venue)
            assert_same_lifecycle(log.positions(f"{venue}-x"), sim, venue)

        def bad(venue):
            return sum(agent.metrics.registry.get_sample_value(
                "feedagent_ws_frames_malformed_total", {"exchange": f"{venue}-x", "stream": s}) or 0
                for s in ("public", "private"))
        await eventually(lambda: all(bad(v) >= 2 for v in BOTH), what="malformed frames counted")
        n = {v: len(ws_marks(log, f"{v}-x")) for v in BOTH}
        await eventually(lambda: all(len(ws_marks(log, f"{v}-x")) > n[v] for v in BOTH), what="prices still flow")
