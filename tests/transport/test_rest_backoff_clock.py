"""Pure parts of the transport: the back-off gate, growing delays, the clock-offset estimate."""

from __future__ import annotations

import pytest

from agent.transport.backoff import BackoffGate, GrowingDelay
from agent.transport.clock import ManualClock, ServerClock, offset_from_sample_ms
from agent.transport.errors import Banned, RateLimited
from agent.transport.ratelimit import RateLimitBudget, RateLimitReading, RateLimitRule


def test_offset_is_measured_from_the_round_trip_midpoint():
    # Sent at local 1000 ms, answered 200 ms later; the server stamped 5100 at the midpoint (local 1100).
    assert offset_from_sample_ms(server_ms=5100, sent_wall_ms=1000, rtt_ms=200) == 4000


def test_server_clock_translates_both_ways():
    clock = ManualClock(wall_s=100.0)
    server = ServerClock(clock)
    assert server.age_s() is None and not server.measured

    server.record(server_ms=101_500, sent_wall_ms=99_900, rtt_ms=200)

    assert server.offset_ms == 1500
    assert server.server_now_ms() == 101_500
    assert server.to_local_unix_s(101_500) == pytest.approx(100.0)
    clock.advance(5)
    assert server.age_s() == 5


def test_gate_holds_with_a_copy_of_the_error_and_the_time_left():
    clock = ManualClock()
    gate = BackoffGate(clock)
    gate.check()  # open

    gate.close(RateLimited("slow down", status=429, code=-1003, retry_after_seconds=10), 10)
    clock.advance(4)

    with pytest.raises(RateLimited) as caught:
        gate.check()
    assert (str(caught.value), caught.value.status, caught.value.code) == ("slow down", 429, -1003)
    assert caught.value.retry_after_seconds == pytest.approx(6)
    clock.advance(6)
    gate.check()
    assert gate.until_unix_s == 0


def test_a_ban_is_not_shortened_or_downgraded_by_a_later_rate_limit():
    clock = ManualClock()
    gate = BackoffGate(clock)
    gate.close(Banned("banned", retry_after_seconds=600), 600)
    gate.close(RateLimited("slow", retry_after_seconds=5), 5)
    gate.close(RateLimited("slow", retry_after_seconds=900), 900)

    with pytest.raises(Banned):
        gate.check()
    assert gate.remaining_s() == pytest.approx(600)

    gate.close(Banned("banned longer", retry_after_seconds=1200), 1200)
    assert gate.remaining_s() == pytest.approx(1200)


def test_growing_delay_doubles_up_to_the_cap_and_resets():
    delay = GrowingDelay(initial_s=120, cap_s=400)
    assert [delay.next() for _ in range(4)] == [120, 240, 400, 400]
    delay.reset()
    assert delay.next() == 120


def test_budget_per_endpoint_and_shared():
    reading = lambda headers, now: RateLimitReading(float(headers["left"]), float(headers["reset"]))  # noqa: E731
    per_endpoint = RateLimitBudget(RateLimitRule(read=reading, shared=False))
    per_endpoint.record("GET /a", {"left": "0", "reset": "2000"}, 1000)
    assert per_endpoint.seconds_until_allowed("GET /a", 1000) == 1.0
    assert per_endpoint.seconds_until_allowed("GET /b", 1000) == 0.0
    assert per_endpoint.remaining_ratio(1000) == 0.0
    assert per_endpoint.remaining_ratio(2500) is None  # the window has reset

    shared = RateLimitBudget(RateLimitRule(read=reading, shared=True, reserve_ratio=0.05))
    shared.record("GET /a", {"left": "0.04", "reset": "3000"}, 1000)
    assert shared.seconds_until_allowed("GET /b", 1000) == 2.0
