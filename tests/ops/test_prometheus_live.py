"""A real Prometheus server scrapes a live agent, evaluates deploy/prometheus/rules.yml, and sees an alert fire.

The agent runs in-process on the built-in simulator (admin on 127.0.0.1:0); Prometheus runs on
127.0.0.1 with an ephemeral port and a temporary TSDB, scraping every second and evaluating every
second. The rules file it loads is derived from rules.yml with only FeedAgentFeedStale's ``for:``
shortened; every expression is the same text. A simulator fault (Binance REST answers 503) makes
binance-sim's last successful poll age past the alert's 30 s threshold.

Along the way, the same server checks what promtool cannot: every rule evaluates without error on
real data, every dashboard query is valid PromQL, the scraped metric names are the registry's, and
``_created`` series (which some alerts rely on) are ingested.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pytest
import yaml

from tests.conftest import require_tool
from tests.integration.harness import eventually, exchange_block, free_port, running_agent, write_config
from tests.ops.support import RULES, dashboard_exprs, load_dashboard, registry_names

pytestmark = pytest.mark.tool

ALERT = "FeedAgentFeedStale"
STALE_AFTER_SECONDS = 30  # the threshold in the expression (not changed for the test)


def derived_rules(path: Path) -> str:
    """rules.yml with FeedAgentFeedStale's ``for:`` shortened; returns the alert's expression text."""
    doc = yaml.safe_load(RULES.read_text())
    (rule,) = [r for g in doc["groups"] for r in g["rules"] if r.get("alert") == ALERT]
    rule["for"] = "1s"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    reloaded = yaml.safe_load(path.read_text())
    (again,) = [r for g in reloaded["groups"] for r in g["rules"] if r.get("alert") == ALERT]
    assert again["expr"] == rule["expr"]
    return str(rule["expr"])


@contextlib.contextmanager
def prometheus_server(tmp_path: Path, target: str, rules: Path):  # type: ignore[no-untyped-def]
    """Start prometheus on 127.0.0.1:<free port>; stop it with SIGTERM (by pid) and check it exited cleanly."""
    binary = require_tool("prometheus")
    port = free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(yaml.safe_dump({
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(rules)],
        "scrape_configs": [{"job_name": "feedagent", "static_configs": [{"targets": [target]}]}],
    }))
    log = (tmp_path / "prometheus.log").open("wb")
    proc = subprocess.Popen([
        binary, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
        f"--web.listen-address=127.0.0.1:{port}", "--storage.tsdb.retention.time=1h", "--log.level=info",
    ], stdout=log, stderr=subprocess.STDOUT)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            code = proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
            raise AssertionError("prometheus did not stop within 15 s of SIGTERM") from None
        log.close()
        text = (tmp_path / "prometheus.log").read_text(errors="replace")
        assert code == 0, text[-2000:]
        assert "See you next time!" in text, text[-2000:]


class PromApi:
    def __init__(self, session: aiohttp.ClientSession, base: str) -> None:
        self.session = session
        self.base = base

    async def get(self, path: str, **params: str) -> Any:
        async with self.session.get(self.base + path, params=params) as response:
            return await response.json()

    async def query(self, expr: str) -> dict[str, Any]:
        """POST /api/v1/query; returns the whole answer (status, data or error)."""
        async with self.session.post(self.base + "/api/v1/query", data={"query": expr}) as response:
            return await response.json()

    async def vector(self, expr: str) -> list[dict[str, Any]]:
        answer = await self.query(expr)
        assert answer["status"] == "success", (expr, answer)
        return answer["data"]["result"]


def grafana_to_promql(expr: str) -> str:
    """A dashboard expression as Prometheus would get it from Grafana (variables set to "everything")."""
    if expr.startswith("label_values("):
        expr = expr[len("label_values("):expr.rindex(",")]
    for var, value in (("$__rate_interval", "1m"), ("$__interval", "15s"), ("$instance", ".*"), ("$exchange", ".*")):
        expr = expr.replace(var, value)
    return expr


async def test_feed_stale_fires_on_a_real_prometheus(tmp_path):
    require_tool("prometheus")
    rest = {"positions_interval_seconds": 0.5, "prices_interval_seconds": 0.5}
    config = write_config(tmp_path, {"bybit-sim": exchange_block("bybit", rest=rest),
                                     "binance-sim": exchange_block("binance", rest=rest)})
    rules = tmp_path / "rules.yml"
    expr = derived_rules(rules)

    async with running_agent(config) as (agent, _events):
        await eventually(agent.is_ready, 20, 0.1, "both exchanges ready")
        agent.simulator.faults.inject("binance", "rest_error", status=503, duration_seconds=90)
        fault_at = time.monotonic()
        target = urlsplit(agent.admin.url).netloc

        with prometheus_server(tmp_path, target, rules) as base:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
                prom = PromApi(session, base)

                async def scraped() -> bool:
                    with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError):
                        return any(s["value"][1] == "1" for s in await prom.vector('up{job="feedagent"}'))
                    return False

                await eventually(scraped, 30, 0.25, "the first successful scrape")

                # -- while binance-sim's data ages: what promtool cannot check --------------------
                names = {s["metric"]["__name__"] for s in await prom.vector(
                    'group by (__name__) ({__name__=~"feedagent_.+"})')}
                assert names and names <= registry_names(), sorted(names - registry_names())
                assert await prom.vector("count(feedagent_polls_created)"), "_created series are not ingested"

                for where, dashboard_expr in dashboard_exprs(load_dashboard()):
                    answer = await prom.query(grafana_to_promql(dashboard_expr))
                    assert answer["status"] == "success", (where, answer)

                async def evaluated() -> list[dict[str, Any]] | None:
                    groups = (await prom.get("/api/v1/rules"))["data"]["groups"]
                    found = [r for g in groups for r in g["rules"]]
                    return found if found and all(r["health"] != "unknown" for r in found) else None

                evaluated_rules = await eventually(evaluated, 15, 0.5, "every rule evaluated once")
                broken = [(r["name"], r.get("lastError")) for r in evaluated_rules if r["health"] != "ok"]
                assert not broken, broken
                assert len(evaluated_rules) == len(
                    [r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]])

                # -- the alert's own expression, as written in rules.yml --------------------------
                async def stale() -> list[dict[str, Any]]:
                    return await prom.vector(expr)

                series = await eventually(stale, 75, 1.0, f"{ALERT}'s expression to become true")
                assert time.monotonic() - fault_at >= STALE_AFTER_SECONDS - 2, "true before the data could be stale"
                assert [s["metric"]["exchange"] for s in series] == ["binance-sim"], series
                assert series[0]["metric"]["mode"] == "rest" and float(series[0]["value"][1]) > STALE_AFTER_SECONDS

                async def firing() -> list[dict[str, Any]]:
                    alerts = (await prom.get("/api/v1/alerts"))["data"]["alerts"]
                    return [a for a in alerts if a["labels"]["alertname"] == ALERT and a["state"] == "firing"]

                (alert,) = await eventually(firing, 15, 0.5, f"{ALERT} firing")
                assert alert["labels"]["exchange"] == "binance-sim" and alert["labels"]["severity"] == "page"
                assert "binance-sim" in alert["annotations"]["summary"]
                assert alert["annotations"]["runbook_url"] == "RUNBOOK.md#feedagentfeedstale"

                everything = (await prom.get("/api/v1/alerts"))["data"]["alerts"]
                assert {a["labels"]["alertname"] for a in everything} == {ALERT}, (
                    "a healthy agent with one faulty venue must raise nothing else", everything)
