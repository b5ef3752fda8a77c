"""``feedagent print-config``: the effective configuration, safe to paste in a ticket.

Defaults are filled in and environment overrides applied. Secrets are never
shown: each key that names a secret keeps its source (``api_key_env:
BYBIT_API_KEY``) and gets a ``# (set)`` or ``# (missing)`` comment; keys set by
an environment variable get ``# from FEEDAGENT_...``. The output is valid YAML
and loads back to the same configuration.
"""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING, Any

import yaml

from agent.config.models import FeedAgentConfig
from agent.config.yaml_source import KeyPath, dotted, parse_yaml
from agent.telemetry.logging import mask_url_credentials

if TYPE_CHECKING:
    from agent.config.loader import LoadedConfig


def config_summary_hash(config: FeedAgentConfig | LoadedConfig) -> str:
    """Hex SHA-256 of the effective configuration (canonical JSON of the validated model).

    Unlike ``LoadedConfig.sha256`` (the file's bytes), it ignores comments and
    formatting and changes when an environment override changes; it never
    depends on secret values. Reload uses it to tell "nothing changed".
    """
    model = config if isinstance(config, FeedAgentConfig) else config.config
    canonical = json.dumps(model.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def render_redacted(loaded: LoadedConfig) -> str:
    """YAML of the effective configuration with secret sources marked, never their values."""
    data = _effective_data(loaded.config)
    redacted = _redact_urls(data, ())
    body = yaml.dump(data, Dumper=_Dumper, sort_keys=False, default_flow_style=False, allow_unicode=True,
                     width=10_000)
    notes = _notes(loaded)
    for path in redacted:
        notes[path] = "; ".join(filter(None, [notes.get(path), "credentials in the URL redacted"]))
    lines = body.splitlines()
    doc = parse_yaml(body, "<print-config>")
    for path, mark in doc.marks.items():
        note = notes.get(dotted(path)) if path else None
        if note:
            lines[mark.line - 1] += f"  # {note}"
    header = [
        "# FeedAgent effective configuration: defaults filled in, environment overrides applied.",
        f"# file: {loaded.path}  sha256: {loaded.sha256}",
        f"# summary hash: {config_summary_hash(loaded.config)}",
        "# Secrets are never shown: each source is marked (set) or (missing); credentials in URLs are redacted.",
    ]
    return "\n".join(header + lines) + "\n"


class _Dumper(yaml.SafeDumper):
    """Block style, except lists of plain values stay on one line: ``symbols: [BTCUSDT, ETHUSDT]``."""


def _represent_list(dumper: yaml.SafeDumper, items: list[Any]) -> yaml.Node:
    flow = bool(items) and all(not isinstance(item, dict | list) for item in items)
    return dumper.represent_sequence("tag:yaml.org,2002:seq", items, flow_style=flow)


_Dumper.add_representer(list, _represent_list)


def _effective_data(config: FeedAgentConfig) -> dict[str, Any]:
    """The validated model as plain data; unset optional keys of ``credentials``/``endpoints`` left out."""
    data = config.model_dump(mode="json")
    for exchange in data["exchanges"].values():
        for section in ("credentials", "endpoints"):
            if exchange.get(section):
                exchange[section] = {k: v for k, v in exchange[section].items() if v is not None}
    return data


def _redact_urls(node: Any, path: KeyPath) -> list[str]:
    """Replace, in place, the user info of every URL value (``https://user:pass@host``); their dotted paths."""
    found: list[str] = []
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, value in list(items):
        if isinstance(value, str):
            masked = mask_url_credentials(value)
            if masked != value:
                node[key] = masked
                found.append(dotted(path + (key,)))
        else:
            found += _redact_urls(value, path + (key,))
    return found


def _notes(loaded: LoadedConfig) -> dict[str, str]:
    notes: dict[str, list[str]] = {}
    for path, present in loaded.secret_sources.items():
        notes.setdefault(path, []).append("(set)" if present else "(missing)")
    for name, exchange in loaded.config.exchanges.items():
        if exchange.environment == "simulator" and exchange.credentials is not None:
            notes[f"exchanges.{name}.credentials"] = ["ignored: the simulator brings its own keys"]
    admin = loaded.config.admin
    if admin.token_env is None:
        notes["admin.token_env"] = ["no token: state-changing admin calls are refused"]
    elif "admin.token_env" in loaded.secret_sources and not loaded.secret_sources["admin.token_env"]:
        notes["admin.token_env"].append("state-changing admin calls are refused")
    for path, var in loaded.env_overrides.items():
        notes.setdefault(path, []).append(f"from {var}")
    return {path: "; ".join(parts) for path, parts in notes.items()}
