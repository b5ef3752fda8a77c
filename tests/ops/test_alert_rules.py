"""The alert rules: promtool, unit tests for every alert, runbook links both ways, metric names, drills.

``promtool test rules`` (deploy/prometheus/rules_test.yml) proves each alert fires and stays quiet on
realistic series; the tests here make sure that stays true for every alert that exists, that every
alert and its RUNBOOK.md section point at each other, and that what the runbook tells the on-call
engineer to run is accepted by the CLI and the simulator.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess

import pytest
import yaml

from agent.cli import build_parser
from agent.config.loader import load_config
from tests.conftest import require_tool
from tests.ops.support import (
    PROMETHEUS_NAMES,
    RULES,
    RULES_TEST,
    RUNBOOK,
    RUNBOOK_PREFIX,
    code_blocks,
    headings,
    load_rules,
    metric_names,
    registry_names,
    sections,
)

SEVERITIES = {"page", "ticket"}
# Alerts about the whole agent or Prometheus, not one exchange (sinks are shared by every exchange).
AGENT_WIDE = {"FeedAgentDown", "FeedAgentAbsent", "FeedAgentConfigReloadFailed", "FeedAgentSinkDropping"}
SUBSECTIONS = ("Meaning", "Impact", "Diagnosis", "Mitigation", "Rollback", "Escalation", "Drill")
# Alerts no simulator fault can cause: the agent stopped, Prometheus lost it, a config file broken.
NOT_SIMULATED = {"FeedAgentDown", "FeedAgentAbsent", "FeedAgentConfigReloadFailed"}

RULE_LIST = load_rules()
ALERTS = sorted({r.alert for r in RULE_LIST})


def _run(cmd: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=60)


# -- promtool ------------------------------------------------------------------------------------------


@pytest.mark.tool
def test_promtool_check_rules():
    out = _run([require_tool("promtool"), "check", "rules", str(RULES)])
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"SUCCESS: {len(RULE_LIST)} rules found" in out.stdout


@pytest.mark.tool
def test_promtool_unit_tests_pass():
    out = _run([require_tool("promtool"), "test", "rules", str(RULES_TEST)])
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS" in out.stdout


# -- coverage of rules_test.yml ------------------------------------------------------------------------


def _cases() -> list[tuple[str, str, list[dict[str, str]]]]:
    doc = yaml.safe_load(RULES_TEST.read_text())
    assert doc["rule_files"] == ["rules.yml"], "the unit tests must load deploy/prometheus/rules.yml itself"
    return [(t.get("name", ""), case["alertname"], [
        {str(k): str(v) for k, v in (a.get("exp_labels") or {}).items()} for a in case.get("exp_alerts") or []])
        for t in doc["tests"] for case in t.get("alert_rule_test") or []]


@pytest.mark.parametrize("alert", ALERTS)
def test_every_alert_has_a_firing_and_a_quiet_case(alert):
    cases = [c for c in _cases() if c[1] == alert]
    assert any(expected for _, _, expected in cases), f"{alert}: no promtool case where it fires"
    assert any(not expected for _, _, expected in cases), f"{alert}: no promtool case where it must stay quiet"


@pytest.mark.parametrize("rule", RULE_LIST, ids=lambda r: f"{r.alert}-{r.labels.get('signal', r.labels['severity'])}")
def test_every_rule_of_an_alert_fires_in_some_case(rule):
    """Alerts made of several rules (signal, severity) need a firing case for each rule."""
    fired = [labels for _, name, expected in _cases() if name == rule.alert for labels in expected]
    assert any(rule.labels.items() <= labels.items() for labels in fired), (
        f"{rule.alert} {rule.labels}: no expected alert carries this rule's labels")


def test_no_case_names_an_alert_that_does_not_exist():
    assert {name for _, name, _ in _cases()} <= set(ALERTS)


# -- conventions ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("rule", RULE_LIST, ids=lambda r: r.alert)
def test_rule_conventions(rule):
    assert re.fullmatch(r"FeedAgent[A-Z][A-Za-z]+", rule.alert), "CamelCase, FeedAgent prefix"
    assert rule.labels.get("severity") in SEVERITIES
    for key in ("summary", "description", "runbook_url"):
        assert rule.annotations.get(key), f"{rule.alert}: no {key}"
    if rule.alert not in AGENT_WIDE:
        for key in ("summary", "description"):
            assert "$labels.exchange" in rule.annotations[key], f"{rule.alert}: the {key} must name the exchange"
    if "for" in rule.raw:
        assert re.fullmatch(r"([0-9]+(ms|s|m|h|d))+", rule.raw["for"])


def test_rules_are_grouped_by_concern():
    doc = yaml.safe_load(RULES.read_text())
    names = [g["name"] for g in doc["groups"]]
    assert len(names) == len(set(names)) and all(n.startswith("feedagent.") for n in names)
    for alert in ALERTS:
        groups = {r.group for r in RULE_LIST if r.alert == alert}
        assert len(groups) == 1, f"{alert} is split over groups {groups}"


def test_every_metric_name_in_the_rules_exists_in_the_registry():
    known = registry_names() | PROMETHEUS_NAMES
    for rule in RULE_LIST:
        names = metric_names(rule.expr)
        assert names, f"{rule.alert}: no metric name found in its expression"
        assert names <= known, f"{rule.alert}: unknown metrics {sorted(names - known)}"


# -- RUNBOOK.md ------------------------------------------------------------------------------------------


RUNBOOK_TEXT = RUNBOOK.read_text()
ALERT_SECTIONS = {t: body for t, body in sections(RUNBOOK_TEXT, 2).items() if re.fullmatch(r"FeedAgent\w+", t)}


@pytest.mark.parametrize("rule", RULE_LIST, ids=lambda r: r.alert)
def test_runbook_url_points_at_the_alerts_section(rule):
    url = rule.annotations["runbook_url"]
    assert url.startswith(RUNBOOK_PREFIX), "relative RUNBOOK.md#anchor (the chart's runbookBaseUrl prefixes it)"
    anchor = url[len(RUNBOOK_PREFIX):]
    section = [h for h in headings(RUNBOOK_TEXT) if h.anchor == anchor]
    assert section, f"{rule.alert}: RUNBOOK.md has no heading with anchor #{anchor}"
    assert section[0].level == 2 and section[0].title == rule.alert


def test_every_runbook_alert_section_has_a_rule():
    assert set(ALERT_SECTIONS) == set(ALERTS), (
        f"sections without a rule: {sorted(set(ALERT_SECTIONS) - set(ALERTS))}; "
        f"rules without a section: {sorted(set(ALERTS) - set(ALERT_SECTIONS))}")


@pytest.mark.parametrize("alert", ALERTS)
def test_alert_section_has_every_part(alert):
    body = ALERT_SECTIONS[alert]
    found = [h.title for h in headings(body) if h.level == 3]
    assert found == list(SUBSECTIONS), f"{alert}: subsections {found}"
    parts = sections(body, 3)
    assert "```" in parts["Diagnosis"], f"{alert}: diagnosis without commands"
    drill = parts["Drill"]
    assert "```" in drill, f"{alert}: drill without a command"
    if alert not in NOT_SIMULATED:
        assert "$SIM/" in drill, f"{alert}: the drill must act through the simulator's control API"
    severities = {r.labels["severity"] for r in RULE_LIST if r.alert == alert}
    assert all(f"**{s}**" in parts["Meaning"] for s in severities), f"{alert}: say the severity in Meaning"


def test_runbook_links_resolve():
    anchors = {h.anchor for h in headings(RUNBOOK_TEXT)}
    for target in re.findall(r"\]\(#([^)]+)\)", RUNBOOK_TEXT):
        assert target in anchors, f"RUNBOOK.md links to #{target}, which is no heading"
    for path in re.findall(r"\]\(((?:docs|agent|deploy|configs)/[^)#]+)\)", RUNBOOK_TEXT):
        assert (RUNBOOK.parent / path).exists(), path


def _fault_bodies() -> list[dict]:
    bodies = []
    for block in code_blocks(RUNBOOK_TEXT):
        for match in re.finditer(r"\$SIM/faults\s+-d\s+'(\{[^']*\})'", block):
            bodies.append(json.loads(match.group(1)))
    return bodies


def test_runbook_drills_are_valid_simulator_faults():
    import agent.simulator.ws_faults  # noqa: F401 - registers the WebSocket fault kinds
    from agent.simulator.faults import FaultRegistry

    bodies = _fault_bodies()
    assert len(bodies) >= 10
    for body in bodies:
        params = dict(body)
        FaultRegistry().inject(params.pop("venue"), params.pop("kind"), **params)  # raises FaultError when wrong


def _feedagent_commands() -> list[str]:
    """Every `feedagent ...` command line in the runbook's code blocks (continuations joined)."""
    commands = []
    for block in code_blocks(RUNBOOK_TEXT):
        for line in block.replace("\\\n", " ").splitlines():
            if line.lstrip().startswith(("alias ", "#")):
                continue
            for match in re.finditer(r"(?:^|&&|;|\|\s|\s--\s|\$\()\s*(?:[A-Z_][A-Z0-9_]*=\S+\s+)*feedagent\s+(.*)",
                                     line):
                rest = re.split(r"\s(?:\||&&|;|#|2>|>)\s?|\)\s*$|\s&\s*$", match.group(1))[0]
                commands.append(rest.strip())
    return commands


def test_runbook_feedagent_commands_parse():
    commands = _feedagent_commands()
    used = {c.split()[0] for c in commands}
    assert {"status", "mode", "validate", "reload", "report", "run", "simulate"} <= used, used
    parser = build_parser()
    for command in commands:
        try:
            parser.parse_args(shlex.split(command))
        except SystemExit:
            pytest.fail(f"RUNBOOK.md: `feedagent {command}` is not accepted by the CLI")


def test_runbook_drill_config_is_valid(tmp_path):
    blocks = [b for b in code_blocks(RUNBOOK_TEXT) if b.startswith("# drill.yaml")]
    assert len(blocks) == 1
    path = tmp_path / "drill.yaml"
    path.write_text(blocks[0])
    loaded = load_config(path, environ={})
    exchanges = loaded.config.exchanges
    assert {e.environment for e in exchanges.values()} == {"simulator"}
    assert {e.venue for e in exchanges.values()} == {"bybit", "binance"}
    for command in _feedagent_commands():
        args = shlex.split(command)
        if args[:1] == ["mode"]:
            assert args[1] in exchanges or args[1] in ("EXCHANGE",) or args[1].endswith("-custom"), command
