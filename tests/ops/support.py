"""Shared helpers of the operations tests: the alert rules, RUNBOOK.md headings, PromQL metric names, the registry.

Nothing here needs an external tool; the tests that run promtool or Prometheus say so themselves.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from prometheus_client.metrics import MetricWrapperBase

from agent.telemetry.metrics import Metrics
from tests.conftest import REPO_ROOT

RULES = REPO_ROOT / "deploy" / "prometheus" / "rules.yml"
RULES_TEST = REPO_ROOT / "deploy" / "prometheus" / "rules_test.yml"
DASHBOARD = REPO_ROOT / "deploy" / "grafana" / "feedagent.json"
RUNBOOK = REPO_ROOT / "RUNBOOK.md"
METRICS_DOC = REPO_ROOT / "docs" / "metrics.md"

RUNBOOK_PREFIX = "RUNBOOK.md#"
# Metric names a rule or panel may use that the agent does not export.
PROMETHEUS_NAMES = {"up"}


# -- alert rules -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class AlertRule:
    group: str
    alert: str
    expr: str
    labels: dict[str, str]
    annotations: dict[str, str]
    raw: dict[str, Any]


def load_rules(path: Path = RULES) -> list[AlertRule]:
    """Every alerting rule of a rules file, in file order."""
    doc = yaml.safe_load(path.read_text())
    return [AlertRule(group["name"], rule["alert"], str(rule["expr"]), dict(rule.get("labels") or {}),
                      dict(rule.get("annotations") or {}), rule)
            for group in doc["groups"] for rule in group["rules"] if "alert" in rule]


# -- Markdown headings and GitHub anchors ----------------------------------------------------------


def github_slug(text: str) -> str:
    """The anchor GitHub gives a heading: rendered text, lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)  # links render as their text
    text = text.replace("`", "").replace("*", "")
    text = text.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


@dataclass(frozen=True)
class Heading:
    level: int
    title: str
    anchor: str
    line: int


def headings(markdown: str) -> list[Heading]:
    """ATX headings outside fenced code blocks, with GitHub's anchors (duplicates get -1, -2, ...)."""
    found: list[Heading] = []
    seen: dict[str, int] = {}
    fence: str | None = None
    for number, line in enumerate(markdown.splitlines(), start=1):
        stripped = line.strip()
        marker = re.match(r"^(`{3,}|~{3,})", stripped)
        if marker:
            if fence is None:
                fence = marker.group(1)[0] * 3
            elif stripped.startswith(fence):
                fence = None
            continue
        if fence is not None:
            continue
        match = re.match(r"^(#{1,6})\s+(.*?)\s*#*\s*$", line)
        if not match:
            continue
        title = match.group(2)
        base = github_slug(title)
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.append(Heading(len(match.group(1)), title, base if count == 0 else f"{base}-{count}", number))
    return found


def sections(markdown: str, level: int = 2) -> dict[str, str]:
    """Title -> body text of every heading of ``level`` (up to the next heading of that level or higher)."""
    lines = markdown.splitlines()
    marks = [h for h in headings(markdown) if h.level <= level]
    out: dict[str, str] = {}
    for index, heading in enumerate(marks):
        if heading.level != level:
            continue
        end = marks[index + 1].line - 1 if index + 1 < len(marks) else len(lines)
        out[heading.title] = "\n".join(lines[heading.line:end])
    return out


def code_blocks(markdown: str) -> list[str]:
    """The contents of every fenced code block."""
    return [m.group(2) for m in re.finditer(r"^(```+|~~~+)[^\n]*\n(.*?)^\1\s*$", markdown, re.M | re.S)]


# -- PromQL ----------------------------------------------------------------------------------------

_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset", "and", "or",
             "unless", "atan2", "inf", "nan", "start", "end"}
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_LABEL_LIST = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_TOKEN = re.compile(r"(?P<num>\d+(?:\.\d+)?(?:[eE][+-]?\d+)?[a-zA-Z]*)|(?P<id>[A-Za-z_:][A-Za-z0-9_:]*)")


def metric_names(expr: str) -> set[str]:
    """Metric names a PromQL expression selects (also ``label_values(metric, label)`` and ``{__name__="x"}``)."""
    names = set(re.findall(r'__name__\s*=\s*"([A-Za-z_:][A-Za-z0-9_:]*)"', expr))
    lv = re.match(r"^\s*label_values\(\s*(.*),\s*[A-Za-z_][A-Za-z0-9_]*\s*\)\s*$", expr, re.S)
    if lv:
        expr = lv.group(1)
    text = _STRING.sub('""', expr)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = _LABEL_LIST.sub(" ", text)
    text = re.sub(r"\boffset\s+-?\S+", " ", text)
    text = re.sub(r"\$\{?\w+\}?", " ", text)  # Grafana variables outside matchers and ranges
    for match in _TOKEN.finditer(text):
        name = match.group("id")
        if name is None or name.lower() in _KEYWORDS:
            continue
        if text[match.end():].lstrip().startswith("("):
            continue  # a function or an aggregation
        names.add(name)
    return names


# -- the registry ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Family:
    name: str  # as registered (counters without _total)
    type: str
    documentation: str
    labels: tuple[str, ...]
    exposed: tuple[str, ...]  # every series name it can expose


_SUFFIXES = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_sum", "_count", "_created"),
             "summary": ("", "_sum", "_count", "_created"), "info": ("_info",), "gaugehistogram": ("_bucket", "_gsum",
                                                                                                 "_gcount")}


def registry_families(metrics: Metrics | None = None) -> list[Family]:
    """Every family of a live ``Metrics()`` registry, in registration order, with label names and exposed names."""
    metrics = metrics or Metrics()
    labels_by_name: dict[str, tuple[str, ...]] = {}
    for value in vars(metrics).values():
        if isinstance(value, MetricWrapperBase):
            labels_by_name[value._name] = tuple(value._labelnames)  # noqa: SLF001 - prometheus_client has no public getter
    families = []
    for fam in metrics.registry.collect():
        labels = labels_by_name.get(fam.name)
        if labels is None or fam.type == "info":
            labels = tuple(sorted({k for s in fam.samples for k in s.labels}))
        exposed = tuple(fam.name + s for s in _SUFFIXES.get(fam.type, ("",)))
        families.append(Family(fam.name, fam.type, fam.documentation, labels, exposed))
    return families


def registry_names(metrics: Metrics | None = None) -> set[str]:
    """Every series name the registry can expose (``_total``, ``_bucket``, ``_created``, ... included)."""
    return {name for fam in registry_families(metrics) for name in fam.exposed}


def labels_of(metrics: Metrics | None = None) -> dict[str, tuple[str, ...]]:
    """Exposed series name -> label names (without ``le``)."""
    return {name: fam.labels for fam in registry_families(metrics) for name in fam.exposed}


# -- the dashboard ---------------------------------------------------------------------------------


def load_dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def dashboard_exprs(doc: dict[str, Any]) -> list[tuple[str, str]]:
    """(where, PromQL) of every panel target, template variable query and annotation query."""
    found: list[tuple[str, str]] = []

    def panels(items: list[dict[str, Any]]) -> None:
        for panel in items:
            for target in panel.get("targets") or []:
                if "expr" in target:
                    found.append((f"panel {panel.get('id')} {panel.get('title')!r} {target.get('refId')}",
                                  target["expr"]))
            panels(panel.get("panels") or [])

    panels(doc.get("panels") or [])
    for var in doc.get("templating", {}).get("list", []):
        if var.get("type") == "query":
            query = var.get("query")
            found.append((f"variable {var['name']}", query.get("query") if isinstance(query, dict) else query))
    for annotation in doc.get("annotations", {}).get("list", []):
        if annotation.get("expr"):
            found.append((f"annotation {annotation['name']!r}", annotation["expr"]))
    return found
