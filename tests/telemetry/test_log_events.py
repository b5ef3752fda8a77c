"""Every log record carries a stable ``event`` name chosen by the code, never one built from its text.

Dashboards, alerts and the RUNBOOK's ``jq`` filters select on ``event``; a name derived
from the message would change whenever a message is reworded (or carry a value in it).
"""

from __future__ import annotations

import ast
import io
import json
import logging
import re
from pathlib import Path

import pytest

from agent.telemetry.logging import JsonFormatter, TextFormatter

AGENT = Path(__file__).resolve().parents[2] / "agent"
LEVELS = {"debug", "info", "warning", "warn", "error", "exception", "critical", "fatal", "log"}
EVENT_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


def _loggers(tree: ast.Module) -> set[str]:
    """Names bound to ``logging.getLogger(...)`` in a module, plus ``logging`` itself (root logger calls)."""
    names = {"logging"}
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Call):
            func = node.value.func
            if isinstance(func, ast.Attribute) and func.attr == "getLogger":
                names |= {t.id for t in node.targets if isinstance(t, ast.Name)}
    return names


def _event_of(call: ast.Call) -> ast.expr | None:
    """The expression given as the event name: ``extra={"event": ...}`` or ``extra=self._log_extra(NAME, ...)``."""
    extra = next((k.value for k in call.keywords if k.arg == "extra"), None)
    if isinstance(extra, ast.Dict):
        return next((v for k, v in zip(extra.keys, extra.values)
                     if isinstance(k, ast.Constant) and k.value == "event"), None)
    if isinstance(extra, ast.Call) and extra.args and getattr(extra.func, "attr", "").endswith("log_extra"):
        return extra.args[0]
    return None


def _log_calls() -> list[tuple[str, ast.Call]]:
    calls = []
    for path in sorted(AGENT.rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        loggers = _loggers(tree)
        for node in ast.walk(tree):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in LEVELS
                    and isinstance(node.func.value, ast.Name) and node.func.value.id in loggers):
                calls.append((f"{path.relative_to(AGENT.parent)}:{node.lineno}", node))
    return calls


def test_the_scan_finds_the_log_calls() -> None:
    assert len(_log_calls()) > 50


def test_every_log_call_in_agent_names_its_event_with_a_literal() -> None:
    missing = []
    for where, call in _log_calls():
        event = _event_of(call)
        if not (isinstance(event, ast.Constant) and isinstance(event.value, str) and EVENT_NAME.match(event.value)):
            missing.append(f"{where}: {ast.unparse(call)[:100]}")
    assert missing == [], "log calls without a literal snake_case event name:\n" + "\n".join(missing)


def _record(name: str, msg: str, **extra: object) -> logging.LogRecord:
    record = logging.LogRecord(name, logging.WARNING, __file__, 1, msg, (), None)
    for key, value in extra.items():
        setattr(record, key, value)
    return record


def test_json_record_without_an_event_never_gets_one_from_its_text() -> None:
    formatter = JsonFormatter()

    ours = json.loads(formatter.format(_record("agent.x", "Job 42 missed by 0:00:01")))
    theirs = json.loads(formatter.format(_record("apscheduler.scheduler", "Run time of job 42 was missed")))

    assert ours["event"] == "unnamed"
    assert theirs["event"] == "library_log"
    assert theirs["msg"] == "Run time of job 42 was missed"


def test_json_record_keeps_the_event_the_code_gave() -> None:
    line = json.loads(JsonFormatter().format(_record("agent.x", "anything", event="poll_failed", exchange="b")))

    assert (line["event"], line["exchange"]) == ("poll_failed", "b")


@pytest.mark.parametrize("formatter", [JsonFormatter(), TextFormatter()], ids=["json", "text"])
def test_credentials_in_urls_are_masked_in_logs(formatter: logging.Formatter) -> None:
    handler = logging.StreamHandler(io.StringIO())
    record = _record("agent.x", "connect to https://alice:s3cret-pw@api.example.com/v5 failed",
                     event="ws_connect_failed", url="wss://tok3n@stream.example.com/x")

    line = formatter.format(record)
    handler.close()

    assert "s3cret-pw" not in line and "alice" not in line and "tok3n" not in line
    assert "https://***@api.example.com/v5" in line
