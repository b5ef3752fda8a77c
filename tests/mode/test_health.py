"""Health checks: minimum evidence, critical at once, n/a neutral."""

from agent.mode.health import CheckSpec, HealthEvaluator


def test_needs_consecutive_bad_readings():
    ev = HealthEvaluator([CheckSpec("ws_data_age_seconds", 5.0, consecutive=3)])
    assert ev.evaluate({"ws_data_age_seconds": 9}).checks["ws_data_age_seconds"].state == "bad"
    assert ev.evaluate({"ws_data_age_seconds": 9}).healthy
    report = ev.evaluate({"ws_data_age_seconds": 9})
    assert report.failing == ["ws_data_age_seconds"] and not report.healthy
    assert ev.evaluate({"ws_data_age_seconds": 1}).healthy  # one good reading resets the streak
    assert ev.evaluate({"ws_data_age_seconds": 9}).checks["ws_data_age_seconds"].bad_streak == 1


def test_critical_fails_on_first_bad_reading_and_none_is_neutral():
    ev = HealthEvaluator([CheckSpec("ws_reconnects_per_window", 5, critical=True),
                          CheckSpec("ws_heartbeat_rtt_seconds", 2.0, consecutive=2)])
    assert ev.evaluate({"ws_reconnects_per_window": 6}).critical == ["ws_reconnects_per_window"]
    ev.evaluate({"ws_heartbeat_rtt_seconds": 3})
    ev.evaluate({"ws_heartbeat_rtt_seconds": None})
    assert ev.evaluate({"ws_heartbeat_rtt_seconds": 3}).failing == ["ws_heartbeat_rtt_seconds"]


def test_non_tripping_check_is_reported_but_moves_nothing():
    ev = HealthEvaluator([CheckSpec("event_loop_lag_seconds", 0.5, consecutive=1, trips=False)])
    report = ev.evaluate({"event_loop_lag_seconds": 2})
    assert report.checks["event_loop_lag_seconds"].state == "failing" and report.healthy
