"""``feedagent report``: render the shadow report from the store under ``state_dir`` (no running agent needed)."""

from __future__ import annotations

import re
import sys
import time
from pathlib import Path

from agent import __version__
from agent.config.loader import LoadedConfig
from agent.shadow.report import build_report
from agent.shadow.reports import FORMATS
from agent.shadow.store import ShadowStore

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhdw])$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}


def parse_duration_seconds(text: str) -> float:
    """``90s``, ``30m``, ``2h``, ``7d``, ``1w`` in seconds."""
    match = _DURATION.match(text.strip())
    if not match:
        raise ValueError(f"--since {text!r}: use a number and a unit, e.g. 30m, 2h, 7d")
    return float(match.group(1)) * _UNIT_SECONDS[match.group(2)]


def write_report(loaded: LoadedConfig, *, exchange: str | None, since: str, fmt: str, out: Path | None) -> int:
    """Build the report and write it to ``out`` or stdout; returns the exit code."""
    config = loaded.config
    if exchange is not None and exchange not in config.exchanges:
        raise ValueError(f"--exchange {exchange!r} is not configured (known: {', '.join(sorted(config.exchanges))})")
    path = config.agent.state_dir / "shadow.sqlite3"
    if not path.exists():
        raise ValueError(f"no shadow data at {path}: run an exchange in shadow mode first")
    now_ms = int(time.time() * 1000)
    passes = max(e.rollback.promote_after_passing_windows for e in config.exchanges.values())
    with ShadowStore(path) as store:
        report = build_report(store, exchange=exchange, since_ms=now_ms - int(parse_duration_seconds(since) * 1000),
                              now_ms=now_ms, agent_version=__version__, config_sha256=loaded.sha256,
                              consecutive_passes_to_promote=passes)
    text = FORMATS[fmt](report)
    if out is None:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
    else:
        out.write_text(text, encoding="utf-8")
        print(f"wrote {out}", file=sys.stderr)
    return 0
