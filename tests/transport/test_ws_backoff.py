"""Reconnect pacing: jittered backoff, its reset, auth-failure retries and the connection budget."""

from __future__ import annotations

import time

import pytest
from prometheus_client import CollectorRegistry

from agent.telemetry.metrics import Metrics
from agent.transport.ws_backoff import ConnectionBudget, JitterBackoff, SlidingWindowLimiter
from tests.transport.test_ws_harness import (
    JsonTestProtocol, Recorder, eventually, fake_server, fast_config, sample, stream,
)


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_backoff_ceiling_doubles_up_to_the_cap_and_jitter_stays_below_it() -> None:
    values = iter([0.0, 0.5, 0.999, 0.25, 0.999])
    backoff = JitterBackoff(0.1, 0.5, rng=lambda: next(values))
    assert [backoff.ceiling(n) for n in range(5)] == [0.1, 0.2, 0.4, 0.5, 0.5]
    delays = [backoff.next_delay() for _ in range(5)]
    assert delays == pytest.approx([0.0, 0.1, 0.3996, 0.125, 0.4995])
    backoff.reset()
    assert backoff.attempt == 0
    assert backoff.ceiling(10_000) == 0.5  # no overflow after a very long outage


def test_backoff_rejects_nonsense() -> None:
    with pytest.raises(ValueError):
        JitterBackoff(0, 1)
    with pytest.raises(ValueError):
        JitterBackoff(2, 1)


def test_sliding_window_allows_at_most_n_in_any_window() -> None:
    clock = FakeClock()
    limiter = SlidingWindowLimiter(3, 10.0, clock)
    assert limiter.try_acquire()  # t=100
    clock.now += 2.0
    assert [limiter.try_acquire() for _ in range(3)] == [True, True, False]  # t=102
    clock.now += 4.0
    assert limiter.wait_seconds() == pytest.approx(4.0)  # until the t=100 event leaves the window
    clock.now += 4.0
    assert limiter.try_acquire()  # t=110
    assert not limiter.try_acquire()  # the two of t=102 are still inside the window
    clock.now += 2.0
    assert limiter.wait_seconds() == 0.0


async def test_limiter_acquire_waits_for_room() -> None:
    limiter = SlidingWindowLimiter(2, 0.1)
    start = time.monotonic()
    for _ in range(5):
        await limiter.acquire()
    assert time.monotonic() - start >= 0.2  # 5 events at 2 per 0.1 s need two full windows
    assert limiter.waits >= 2


async def test_auth_failure_is_retried_with_growing_delays() -> None:
    async with fake_server() as server:
        server.reject_auth = True
        metrics = Metrics(CollectorRegistry())
        config = fast_config(backoff_initial_seconds=0.02, backoff_max_seconds=0.16)
        async with stream(JsonTestProtocol(server.url), config=config, metrics=metrics, rng=lambda: 1.0) as ws:
            await ws.subscribe(["a"])
            await eventually(lambda: len(server.auth_times) >= 6, what="six auth attempts")
            gaps = [b - a for a, b in zip(server.auth_times, server.auth_times[1:])]
            for gap, delay in zip(gaps, [0.02, 0.04, 0.08, 0.16, 0.16]):
                assert gap >= delay * 0.95
            assert gaps[3] > 2 * gaps[0]
            assert gaps[4] < 0.16 + 0.1  # capped
            snap = ws.snapshot()
            assert not snap.connected and snap.connect_failures >= 5
            assert snap.last_error == "auth_rejected: invalid key"
            assert sample(metrics, "feedagent_ws_connects_total", outcome="auth_rejected") >= 5
            assert all(conn.ops("sub") == [] for conn in server.conns)  # never subscribed unauthenticated

            server.reject_auth = False
            await eventually(lambda: ws.healthy, what="recovery once auth works")


async def test_connection_budget_caps_attempts_in_every_window() -> None:
    async with fake_server() as server:
        server.reject_upgrades = True  # every attempt fails at once: the worst case for a storm
        metrics = Metrics(CollectorRegistry())
        budget = ConnectionBudget(max_attempts=3, window_seconds=0.3)
        config = fast_config(backoff_initial_seconds=0.001, backoff_max_seconds=0.002)
        async with stream(JsonTestProtocol(server.url), config=config, metrics=metrics, budget=budget) as ws:
            await eventually(lambda: len(server.attempts) >= 9, what="nine attempts")
            await eventually(lambda: sample(metrics, "feedagent_ws_connects_total", outcome="rejected") >= 9)
            attempts = list(server.attempts)
        for i, t in enumerate(attempts):
            in_window = [u for u in attempts[i:] if u - t < 0.3 - 0.02]  # minus connect-latency jitter
            assert len(in_window) <= 3
        span = attempts[8] - attempts[0]
        assert span >= 2 * 0.3 - 0.02  # nine attempts need at least two full windows
        assert sample(metrics, "feedagent_ws_connect_budget_waits_total") >= 2
        assert ws.snapshot().last_error == "rejected: handshake refused with HTTP 503"


async def test_one_budget_is_shared_by_the_streams_of_a_domain() -> None:
    async with fake_server() as server:
        server.reject_upgrades = True
        budget = ConnectionBudget(max_attempts=4, window_seconds=0.5)
        config = fast_config(backoff_initial_seconds=0.001, backoff_max_seconds=0.002)
        async with stream(JsonTestProtocol(server.url), config=config, budget=budget):
            async with stream(JsonTestProtocol(server.url), config=config, budget=budget):
                await eventually(lambda: len(server.attempts) >= 4)
                first = server.attempts[0]
                await eventually(lambda: time.monotonic() - first > 0.4)
                assert len([t for t in server.attempts if t - first < 0.45]) == 4


async def _reconnect_gap(reset_after_seconds: float) -> float:
    """Fail auth four times (backoff ceiling 0.32 s next), then connect, stay up, drop: how long until retry?"""
    async with fake_server() as server:
        server.reject_auth = True
        config = fast_config(backoff_initial_seconds=0.02, backoff_max_seconds=0.32,
                             backoff_reset_after_seconds=reset_after_seconds)
        rec = Recorder()
        async with stream(JsonTestProtocol(server.url), config=config, recorder=rec, rng=lambda: 1.0) as ws:
            await ws.subscribe(["a"])
            await eventually(lambda: len(server.auth_times) >= 4)
            server.reject_auth = False
            await eventually(lambda: ws.healthy)
            await eventually(lambda: (ws.snapshot().connected_for_seconds or 0) > 0.25)
            n = len(server.attempts)
            closed_at = time.monotonic()
            await server.close_all()
            await eventually(lambda: len(server.attempts) > n, what="reconnect attempt")
            return server.attempts[n] - closed_at


async def test_backoff_resets_after_the_connection_stayed_healthy() -> None:
    assert await _reconnect_gap(reset_after_seconds=0.1) < 0.15  # back to the initial 0.02 s


async def test_backoff_does_not_reset_before_the_connection_proved_itself() -> None:
    assert await _reconnect_gap(reset_after_seconds=10.0) >= 0.3  # still at the 0.32 s step
