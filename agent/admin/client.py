"""The operator's side of the admin API: find the running agent, read /status, send mode commands."""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from typing import Any

from agent.config.models import FeedAgentConfig

_TIMEOUT_SECONDS = 30.0


class AdminError(Exception):
    """The agent could not be reached or refused the call; the message says what to do."""


def admin_url(config: FeedAgentConfig | None, override: str | None) -> str:
    """``--admin-url``, else the running agent's ``state_dir/agent.json``, else ``admin.listen``."""
    if override:
        return override.rstrip("/")
    if config is None:
        return "http://127.0.0.1:9464"
    runtime = config.agent.state_dir / "agent.json"
    try:
        url = json.loads(runtime.read_text()).get("admin_url")
        if url:
            return str(url)
    except (OSError, ValueError):
        pass
    host = config.admin.host
    host = f"[{host}]" if ":" in host else host
    return f"http://{host}:{config.admin.port}"


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


def token_from_env(config: FeedAgentConfig | None) -> str | None:
    """The admin token from the variable the config names (FEEDAGENT_ADMIN_TOKEN by default)."""
    name = (config.admin.token_env if config else None) or "FEEDAGENT_ADMIN_TOKEN"
    return os.environ.get(name) or None


def format_status(doc: dict[str, Any], now_s: float | None = None) -> str:
    """A compact table for a human at 3 a.m.: which exchange is sick, in which mode, since when, why."""
    now_s = now_s or time.time()
    lines = [f"feedagent {doc.get('version')}  ready={doc.get('ready')}  config={str(doc['config']['sha256'])[:12]}"]
    header = f"{'EXCHANGE':<18} {'MODE':<8} {'WANT':<8} {'BREAKER':<10} {'SINCE':<10} {'READY':<6} {'DATA AGE':<9} WHY"
    lines.append(header)
    for name, ex in sorted(doc.get("exchanges", {}).items()):
        transition = ex.get("last_transition") or {}
        since = _ago(now_s, transition.get("ts_ms"), ex.get("started_unix_s"))
        breaker = ex.get("breaker", {})
        flags = "".join([" PINNED" if breaker.get("pinned_mode") else "", " LATCHED" if breaker.get("latched") else ""])
        why = transition.get("reason") or "-"
        failing = [n for n, c in (ex.get("health") or {}).items() if c.get("state") == "failing"]
        if failing:
            why += f"; failing: {', '.join(failing)}"
        verdict = ((ex.get("shadow") or {}).get("last_verdict") or {}).get("verdict")
        if verdict:
            why += f"; last window {verdict}"
        lines.append(f"{name:<18} {str(ex.get('effective_mode')):<8} {str(ex.get('configured_mode')):<8} "
                     f"{str(breaker.get('state', '-')) + flags:<10} {since:<10} {str(ex.get('ready')):<6} "
                     f"{_data_age(ex, now_s):<9} {why}")
    return "\n".join(lines)


def _ago(now_s: float, ts_ms: int | None, fallback_s: float | None) -> str:
    start = ts_ms / 1000 if ts_ms else fallback_s
    if not start:
        return "-"
    seconds = max(0, int(now_s - start))
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"


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
