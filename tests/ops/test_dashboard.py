"""The Grafana dashboard: a real dashboard, templated data source and exchange, and only metrics that exist."""

from __future__ import annotations

import json

import pytest

from tests.ops.support import PROMETHEUS_NAMES, dashboard_exprs, labels_of, load_dashboard, metric_names, registry_names

DOC = load_dashboard()
PANELS = DOC["panels"]
EXPRS = dashboard_exprs(DOC)


def test_dashboard_basics():
    assert DOC["uid"] == "feedagent-overview" and DOC["title"] == "FeedAgent"
    assert DOC["schemaVersion"] >= 38
    variables = {v["name"]: v for v in DOC["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    exchange = variables["exchange"]
    assert exchange["type"] == "query" and exchange["multi"] and exchange["includeAll"]
    assert "feedagent_mode" in exchange["query"]["query"]
    ids = [p["id"] for p in PANELS]
    assert len(ids) == len(set(ids))
    assert all(p["targets"] for p in PANELS), "tests/deploy checks this too: rows without targets break it"


def test_no_hard_coded_data_source():
    found = []

    def walk(node, at):
        if isinstance(node, dict):
            if "datasource" in node and isinstance(node["datasource"], dict):
                found.append((at, node["datasource"]))
            for key, value in node.items():
                walk(value, f"{at}/{key}")
        elif isinstance(node, list):
            for index, value in enumerate(node):
                walk(value, f"{at}/{index}")

    walk(DOC, "")
    assert found
    for at, ds in found:
        assert ds in ({"type": "prometheus", "uid": "${datasource}"},
                      {"type": "grafana", "uid": "-- Grafana --"}), f"{at}: {ds}"


def test_panels_fit_the_grid_without_overlapping():
    cells = set()
    for panel in PANELS:
        g = panel["gridPos"]
        assert g["x"] >= 0 and g["w"] > 0 and g["x"] + g["w"] <= 24, panel["title"]
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps another panel at {(x, y)}"
                cells.add((x, y))


@pytest.mark.parametrize(("where", "expr"), EXPRS, ids=[w for w, _ in EXPRS])
def test_every_expression_uses_existing_metrics(where, expr):
    names = metric_names(expr)
    assert names, f"{where}: no metric name found"
    known = registry_names() | PROMETHEUS_NAMES
    assert names <= known, f"{where}: unknown metrics {sorted(names - known)}"


@pytest.mark.parametrize(("where", "expr"), [e for e in EXPRS if e[0].startswith("panel")],
                         ids=[w for w, _ in EXPRS if w.startswith("panel")])
def test_per_exchange_metrics_follow_the_exchange_variable(where, expr):
    labels = labels_of()
    if any("exchange" in labels.get(name, ()) for name in metric_names(expr)):
        assert 'exchange=~"$exchange"' in expr, f"{where}: filter by the $exchange variable"
    if any(name.startswith("feedagent_") for name in metric_names(expr)):
        assert 'instance=~"$instance"' in expr, f"{where}: filter by the $instance variable"


def test_the_brief_is_covered():
    """The panels an on-call engineer looks for, by the metrics they read."""
    used = set().union(*(metric_names(e) for _, e in EXPRS))
    wanted = {
        "feedagent_mode", "feedagent_breaker_state", "feedagent_mode_transitions_total",
        "feedagent_last_successful_poll_timestamp_seconds", "feedagent_ws_last_message_timestamp_seconds",
        "feedagent_events_total", "feedagent_ws_reconnects_total", "feedagent_ws_subscriptions",
        "feedagent_rest_requests_total", "feedagent_rest_rate_limit_remaining_ratio",
        "feedagent_shadow_price_divergence_ratio_bucket", "feedagent_shadow_ws_lead_seconds_bucket",
        "feedagent_shadow_ws_lag_seconds_bucket", "feedagent_shadow_last_verdict", "feedagent_shadow_mismatches_total",
        "feedagent_sink_queue_depth", "feedagent_sink_events_dropped_total", "feedagent_event_loop_lag_seconds_bucket",
    }
    assert wanted <= used, sorted(wanted - used)
    timelines = [p for p in PANELS if p["type"] == "state-timeline"]
    assert any("feedagent_mode{" in t["expr"] for p in timelines for t in p["targets"])
    assert json.dumps(DOC).count("histogram_quantile") >= 5
