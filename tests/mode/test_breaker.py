"""The Breaker as pure logic: examples and properties (no flapping, pins win, the budget latches)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from agent.mode.breaker import DAY_MS, Breaker, BreakerSettings

AUTO = BreakerSettings(auto_recover=True, base_cooldown_seconds=60, max_cooldown_seconds=600,
                       healthy_decay_seconds=300, promote_after_passing_windows=3, max_transitions_per_day=6)
S = 1000


def apply(breaker: Breaker, now_ms: int, decision):
    if decision is not None:
        breaker.note_mode(now_ms, decision.mode)
    return decision


def test_trips_at_once_on_bad_health_and_sticks_by_default():
    b = Breaker(BreakerSettings(), "hybrid")
    d = apply(b, 0, b.on_health(0, bad=["ws_stale"], critical=[]))
    assert (d.mode, d.reason) == ("rest", "ws_stale")
    assert b.state_name == "open"
    assert all(b.tick(t * S) is None for t in range(0, 100_000, 600))  # sticky: no auto recovery


def test_recovery_goes_through_probation_with_doubling_cooldown():
    b = Breaker(AUTO, "hybrid")
    apply(b, 0, b.on_health(0, bad=["ws_stale"], critical=[]))
    assert b.tick(59 * S) is None
    d = apply(b, 60 * S, b.tick(60 * S))
    assert (d.mode, d.reason) == ("shadow", "cooldown_elapsed")
    assert apply(b, 61 * S, b.on_verdict(61 * S, "pass")) is None
    assert apply(b, 62 * S, b.on_verdict(62 * S, "inconclusive")) is None  # holds and resets the streak
    for i in range(2):
        assert apply(b, (63 + i) * S, b.on_verdict((63 + i) * S, "pass")) is None
    d = apply(b, 70 * S, b.on_verdict(70 * S, "pass"))
    assert (d.mode, d.reason) == ("hybrid", "shadow_passed")
    # second trip: the cool-down doubled
    apply(b, 100 * S, b.on_health(100 * S, bad=[], critical=["ws_dead"]))
    assert b.tick(219 * S) is None
    assert b.tick(220 * S).mode == "shadow"


def test_shadow_failure_reopens_and_never_rest_to_hybrid():
    b = Breaker(AUTO, "rest")
    b.state.open_since_ms = 0
    b.state.cooldown_until_ms = 0
    assert b.on_verdict(1, "pass") is None  # verdicts mean nothing outside probation
    d = apply(b, 1, b.tick(1))
    assert d.mode == "shadow"
    d = apply(b, 2, b.on_verdict(2, "fail", critical=True))
    assert (d.mode, d.reason) == ("rest", "shadow_critical")


def test_operator_pin_always_wins():
    b = Breaker(AUTO, "hybrid")
    b.on_operator(0, "hybrid", pin=True)
    assert b.on_health(1, bad=["ws_stale"], critical=["ws_dead"]) is None
    b.on_operator(2, "hybrid", pin=False)
    assert b.on_health(3, bad=["ws_stale"], critical=[]).mode == "rest"


def test_daily_budget_latches_to_rest():
    b = Breaker(AUTO, "hybrid")
    t = 0
    decisions = []
    for _ in range(20):
        d = apply(b, t, b.on_health(t, bad=["ws_stale"], critical=[]))
        t += 2000 * S
        d2 = apply(b, t, b.tick(t))
        for _ in range(3):
            t += S
            d3 = apply(b, t, b.on_verdict(t, "pass"))
        decisions += [x for x in (d, d2, d3) if x]
        t += S
    assert b.state.latched
    assert b.mode == "rest"
    assert sum(1 for x in decisions) <= AUTO.max_transitions_per_day + 1
    assert b.tick(t + 10 * DAY_MS) is None, "a latch holds until an operator acts"
    b.on_operator(t, "rest")
    assert not b.state.latched


def test_disabled_rollback_never_acts():
    b = Breaker(BreakerSettings(enabled=False), "hybrid")
    assert b.on_health(0, bad=["x"], critical=["y"]) is None


events = st.lists(st.tuples(
    st.integers(min_value=1, max_value=120_000),  # ms since the previous input
    st.sampled_from(["healthy", "bad", "critical", "pass", "fail", "inconclusive", "error", "tick",
                     "op_rest", "op_hybrid", "op_shadow", "pin", "unpin"])), max_size=300)


@settings(max_examples=300, deadline=None)
@given(events)
def test_no_sequence_flaps_faster_than_the_rules_allow(seq):
    b = Breaker(AUTO, "hybrid")
    now = 0
    automatic: list[tuple[int, str, str]] = []  # (time, from, to)
    for delta, kind in seq:
        now += delta
        before = b.mode
        d = None
        if kind == "healthy":
            d = b.on_health(now, bad=[], critical=[])
        elif kind in ("bad", "critical"):
            d = b.on_health(now, bad=["x"] if kind == "bad" else [], critical=["y"] if kind == "critical" else [])
        elif kind in ("pass", "fail", "inconclusive", "error"):
            d = b.on_verdict(now, kind)
        elif kind == "tick":
            d = b.tick(now)
        elif kind.startswith("op_"):
            b.on_operator(now, kind[3:])
        elif kind == "pin":
            b.on_operator(now, b.mode, pin=True)
        elif kind == "unpin":
            b.on_operator(now, b.mode, pin=False)
        if d is not None:
            assert b.state.pinned_mode is None, "automation acted on a pinned exchange"
            assert not (before == "rest" and d.mode == "hybrid"), "skipped probation"
            automatic.append((now, before, d.mode))
            apply(b, now, d)
    # leaving rest automatically only after the cool-down since it opened
    opened_at = None
    for t, frm, to in automatic:
        if to == "rest":
            opened_at = t
        elif frm == "rest" and opened_at is not None:
            assert t - opened_at >= AUTO.base_cooldown_seconds * 1000
    # the budget: never more automatic transitions in any 24 h than allowed (+1 for the latching move)
    for i, (t, _, _) in enumerate(automatic):
        in_day = [x for x in automatic[i:] if x[0] - t < DAY_MS]
        assert len(in_day) <= AUTO.max_transitions_per_day + 1
