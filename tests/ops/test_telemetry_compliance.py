"""Telemetry compliance per mode (as Vector does per component): after traffic, a live agent's /metrics is
clean under `promtool check metrics` and carries the series every source must emit."""

from __future__ import annotations

import subprocess

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import require_tool
from tests.integration.harness import agent_on_simulator, eventually

COMMON = [
    ("feedagent_build_info", {}),
    ("feedagent_exchange_ready", {"exchange": "{ex}"}),
    ("feedagent_open_positions", {"exchange": "{ex}"}),
    ("feedagent_clock_offset_seconds", {"exchange": "{ex}"}),
    ("feedagent_breaker_state", {"exchange": "{ex}", "state": "closed"}),
    ("feedagent_sink_queue_depth", {}),
    ("feedagent_event_loop_lag_seconds_count", {}),
    ("feedagent_config_info", {}),
    ("feedagent_config_last_reload_successful", {}),
    ("feedagent_health_check_failing", {"exchange": "{ex}", "check": "clock_offset_seconds"}),
]
REST = [
    ("feedagent_polls_total", {"exchange": "{ex}", "kind": "positions", "outcome": "ok"}, "positive"),
    ("feedagent_polls_total", {"exchange": "{ex}", "kind": "prices", "outcome": "ok"}, "positive"),
    ("feedagent_rest_requests_total", {"exchange": "{ex}"}, "positive"),
    ("feedagent_rest_request_duration_seconds_count", {"exchange": "{ex}"}, "positive"),
    ("feedagent_last_successful_poll_timestamp_seconds", {"exchange": "{ex}", "kind": "positions"}, "positive"),
    ("feedagent_events_total", {"exchange": "{ex}", "kind": "mark_price", "source": "rest"}, "positive"),
]
WS = [
    ("feedagent_ws_connected", {"exchange": "{ex}", "stream": "public"}, "positive"),
    ("feedagent_ws_connected", {"exchange": "{ex}", "stream": "private"}, "positive"),
    ("feedagent_ws_messages_total", {"exchange": "{ex}", "stream": "public", "kind": "data"}, "positive"),
    ("feedagent_ws_last_message_timestamp_seconds", {"exchange": "{ex}", "stream": "public"}, "positive"),
    ("feedagent_ws_subscriptions", {"exchange": "{ex}", "stream": "public"}, None),
    ("feedagent_position_snapshots_total", {"exchange": "{ex}"}, "positive"),
    ("feedagent_ws_frames_malformed_total", {"exchange": "{ex}"}, None),
    ("feedagent_health_check_value", {"exchange": "{ex}", "check": "ws_data_age_seconds"}, None),
]
HYBRID = [("feedagent_events_total", {"exchange": "{ex}", "kind": "mark_price", "source": "ws"}, "positive"),
          ("feedagent_reconcile_runs_total", {"exchange": "{ex}", "outcome": "ok"}, None)]
SHADOW = [
    ("feedagent_shadow_samples_total", {"exchange": "{ex}", "kind": "price", "result": "match"}, "positive"),
    ("feedagent_shadow_windows_total", {"exchange": "{ex}"}, "positive"),
    ("feedagent_shadow_price_divergence_ratio_count", {"exchange": "{ex}"}, "positive"),
    ("feedagent_shadow_last_verdict", {"exchange": "{ex}"}, "positive"),
    ("feedagent_shadow_mismatches_total", {"exchange": "{ex}", "kind": "missed_close"}, None),
]
REQUIRED = {"rest": REST, "hybrid": WS + HYBRID, "shadow": REST + WS + SHADOW}
FAST_SHADOW = {"shadow": {"window_seconds": 2, "min_samples": 5, "max_mismatch_ratio": 0.3}}


def samples(text: str) -> list[tuple[str, dict[str, str], float]]:
    return [(s.name, s.labels, s.value) for fam in text_string_to_metric_families(text) for s in fam.samples]


def find(all_samples, name: str, labels: dict[str, str]) -> list[float]:
    return [v for n, lab, v in all_samples if n == name and all(lab.get(k) == val for k, val in labels.items())]


@pytest.mark.tool
@pytest.mark.parametrize("mode", ["rest", "hybrid", "shadow"])
async def test_required_series_after_traffic_and_promtool_clean(tmp_path, mode):
    promtool = require_tool("promtool")
    overrides = {v: FAST_SHADOW for v in ("bybit", "binance")} if mode == "shadow" else None
    async with agent_on_simulator(tmp_path, modes={"bybit": mode, "binance": mode}, overrides=overrides) as (
            agent, log, sim):
        await eventually(agent.is_ready, timeout_seconds=20, what="ready")
        for venue in ("bybit", "binance"):
            sim.market.open_position(venue, "SOLUSDT", "long", "1")
        await eventually(lambda: len(log.positions()) >= 2, what="traffic")
        await eventually(lambda: all(c.health.last.checks for c in agent.controllers.values()),
                         what="a health evaluation")
        if mode == "shadow":
            await eventually(lambda: all(agent.store.windows(f"{v}-x") for v in ("bybit", "binance")),
                             timeout_seconds=15, what="a shadow window per exchange")
        async with aiohttp.ClientSession() as http:
            text = await (await http.get(f"{agent.admin.url}/metrics")).text()
    check = subprocess.run([promtool, "check", "metrics"], input=text.encode(), capture_output=True, timeout=30)
    assert check.returncode == 0 and not (check.stdout + check.stderr).strip(), (check.stdout + check.stderr).decode()
    parsed = samples(text)
    missing = []
    for exchange in ("bybit-x", "binance-x"):
        for name, labels, *want in [*(c + (None,) for c in COMMON), *REQUIRED[mode]]:
            labels = {k: v.format(ex=exchange) for k, v in labels.items()}
            values = find(parsed, name, labels)
            if not values or (want[0] == "positive" and not any(v > 0 for v in values)):
                missing.append((exchange, name, labels, values))
    assert not missing, missing
    modes = {lab["exchange"]: lab["mode"] for n, lab, v in parsed if n == "feedagent_mode" and v == 1}
    assert modes == {"bybit-x": mode, "binance-x": mode}
