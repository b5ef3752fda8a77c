"""The operator's side of the admin API: find the running agent, read /status, send mode commands."""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from typing import Any

from agent.admin.runtime import listen_address, read_runtime, runtime_path
from agent.config.models import FeedAgentConfig

_TIMEOUT_SECONDS = 30.0


class AdminError(Exception):
    """The agent could not be reached or refused the call; the message says what to do."""


def admin_url(config: FeedAgentConfig) -> str:
    """Where the agent of ``config`` answers: its ``state_dir/agent.json`` while it runs, else ``admin.listen``.

    Only ever an address the config (or its own agent) names; a wildcard listen
    address (``0.0.0.0``, ``::``) is reached on loopback.
    """
    runtime = read_runtime(config.agent.state_dir)
    if runtime is not None and runtime.admin_url and runtime.alive:
        return runtime.admin_url.rstrip("/")
    if config.admin.port == 0:
        raise AdminError(f"admin.listen has port 0 and no running agent of this config wrote "
                         f"{runtime_path(config.agent.state_dir)} (is it running? pass --admin-url)")
    host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(config.admin.host, config.admin.host)
    return f"http://{listen_address(host, config.admin.port)}"


def _call(method: str, url: str, body: dict[str, Any] | None = None, token: str | None = None) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method)
    request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=_TIMEOUT_SECONDS) as response:  # noqa: S310 - operator URL
            return json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        try:
            body = json.loads(exc.read())
            detail = body.get("error") or "; ".join(body.get("errors") or []) or exc.reason
        except (ValueError, AttributeError):
            detail = exc.reason
        raise AdminError(f"{method} {url}: HTTP {exc.code}: {detail}") from None
    except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
        raise AdminError(f"cannot reach the agent at {url}: {getattr(exc, 'reason', exc)} "
                         f"(is it running? pass --admin-url)") from None


def get_status(url: str) -> dict[str, Any]:
    """GET /status of the running agent."""
    return _call("GET", f"{url}/status")


def set_mode(url: str, token: str | None, exchange: str, mode: str, pin: bool | None, reason: str) -> dict[str, Any]:
    """POST /v1/exchanges/{exchange}/mode."""
    if not token:
        raise AdminError("no admin token: export the variable named by admin.token_env (default FEEDAGENT_ADMIN_TOKEN)")
    body: dict[str, Any] = {"mode": mode, "reason": reason}
    if pin is not None:
        body["pin"] = pin
    return _call("POST", f"{url}/v1/exchanges/{exchange}/mode", body, token)


def reload(url: str, token: str | None) -> dict[str, Any]:
    """POST /-/reload."""
    if not token:
        raise AdminError("no admin token: export the variable named by admin.token_env (default FEEDAGENT_ADMIN_TOKEN)")
    return _call("POST", f"{url}/-/reload", {}, token)


def token_from_env(name: str | None) -> str | None:
    """The admin token from the variable ``admin.token_env`` names; ``None`` without one."""
    if not name:
        return None
    return os.environ.get(name, "").strip() or None


_COLUMNS = (("EXCHANGE", 18), ("MODE (configured→effective)", 28), ("SOURCE", 7), ("ROLLBACK", 29),
            ("PINNED", 7), ("READY", 6), ("DATA AGE", 9), ("IN MODE FOR", 0))


def format_status(doc: dict[str, Any], now_s: float | None = None) -> str:
    """A table for a human at 3 a.m.: which exchange is sick, in which mode, since when, why.

    One row per exchange; under it, indented, what explains the row (the reason of
    the last mode change, the health checks failing now, the last shadow verdict,
    the last error and how long ago).
    """
    now_s = now_s or time.time()
    ready = "yes" if doc.get("ready") else "no"
    lines = [f"feedagent {doc.get('version')}  ready: {ready}  config sha256: {str(doc['config']['sha256'])[:12]}",
             _row([name for name, _ in _COLUMNS])]
    for name, ex in sorted(doc.get("exchanges", {}).items()):
        transition = ex.get("last_transition") or {}
        configured, effective = ex.get("configured_mode"), ex.get("effective_mode")
        mode = str(effective) if configured == effective else f"{configured}→{effective}"
        pinned = (ex.get("breaker") or {}).get("pinned_mode") or "-"
        lines.append(_row([name, mode, str(ex.get("authoritative_source") or "-"), _rollback(ex, now_s), pinned,
                           "yes" if ex.get("ready") else "no", _data_age(ex, now_s),
                           _ago(now_s, transition.get("ts_ms"), ex.get("started_unix_s"))]))
        lines += [f"    {detail}" for detail in _details(ex, now_s)]
    return "\n".join(lines)


def _row(cells: list[str]) -> str:
    return " ".join(f"{cell:<{width}}" if width else cell for cell, (_, width) in zip(cells, _COLUMNS)).rstrip()


def _rollback(ex: dict[str, Any], now_s: float) -> str:
    """What the circuit breaker is doing to this exchange, in words ("-": nothing, it runs as configured)."""
    breaker = ex.get("breaker") or {}
    if breaker.get("latched"):
        return "latched, needs operator"
    configured, effective = ex.get("configured_mode"), ex.get("effective_mode")
    if configured == effective:
        return "-"
    if not (ex.get("last_transition") or {}).get("automatic"):
        return "operator set the mode"
    if effective == "rest":
        until_ms = breaker.get("cooldown_until_ms")
        if breaker.get("auto_recover") and until_ms and until_ms / 1000 > now_s:
            return f"rolled back, retry in {_duration(until_ms / 1000 - now_s)}"
        return "rolled back" if breaker.get("auto_recover") else "rolled back, manual recovery"
    if effective == "shadow":
        return f"probation, {breaker.get('passing_windows', 0)} windows passed"
    return f"automatic: {effective}"


def _details(ex: dict[str, Any], now_s: float) -> list[str]:
    out = []
    pinned_at_start = (ex.get("breaker") or {}).get("pinned_at_start")
    if pinned_at_start:  # a pin from before the restart overrides the config: say so, it surprises people
        out.append(f"pinned to {pinned_at_start} before the last restart; the configured mode applies "
                   "after feedagent mode ... --unpin")
    transition = ex.get("last_transition") or {}
    if transition.get("reason"):
        who = "automatic" if transition.get("automatic") else "operator"
        out.append(f"last mode change: {transition.get('from')}→{transition.get('to')} ({who}): "
                   f"{transition['reason']}")
    failing = sorted(n for n, c in (ex.get("health") or {}).items() if c.get("state") == "failing")
    if failing:
        out.append(f"failing health checks: {', '.join(failing)}")
    verdict = ((ex.get("shadow") or {}).get("last_verdict") or {}).get("verdict")
    if verdict:
        out.append(f"last shadow window: {verdict}")
    error = _last_error(ex)
    if error is not None:
        at, text = error
        when = f"{_duration(now_s - at)} ago" if at else "time unknown"
        out.append(f"last error ({when}): {text if len(text) <= 160 else text[:157] + '...'}")
    return out


def _last_error(ex: dict[str, Any]) -> tuple[float | None, str] | None:
    """The newest error of the REST side (polls, client), with its time."""
    found: list[tuple[float, str]] = []
    rest = ex.get("rest") or {}
    if rest.get("last_error"):
        found.append((rest.get("last_error_unix_s") or 0.0, str(rest["last_error"])))
    for kind, poll in sorted((ex.get("polls") or {}).items()):
        if poll.get("last_error"):
            found.append((poll.get("last_error_unix_s") or 0.0, f"{kind} poll: {poll['last_error']}"))
    if not found:
        return None
    at, text = max(found, key=lambda item: item[0])
    return (at or None), text


def _duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s"


def _ago(now_s: float, ts_ms: int | None, fallback_s: float | None) -> str:
    start = ts_ms / 1000 if ts_ms else fallback_s
    return _duration(now_s - start) if start else "-"


def _data_age(ex: dict[str, Any], now_s: float) -> str:
    polls = (ex.get("polls") or {}).get("prices") or {}
    last = polls.get("last_success_unix_s")
    ages = []
    if last and "rest" in (ex.get("running_sources") or []):
        ages.append(now_s - last)
    health = (ex.get("health") or {}).get("ws_data_age_seconds") or {}
    if health.get("value") is not None:
        ages.append(health["value"])
    return f"{min(ages):.1f}s" if ages else "-"
