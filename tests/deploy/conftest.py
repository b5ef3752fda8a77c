"""Helpers for the deployment tests: external tools, the chart, the systemd unit."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT, require_tool

DEPLOY = REPO_ROOT / "deploy"
CHART = DEPLOY / "helm" / "feedagent"
SYSTEMD = DEPLOY / "systemd"
UNIT = SYSTEMD / "feedagent.service"


def venv_tool(name: str) -> str:
    """A console script installed beside the running interpreter (the test venv), else ``require_tool``.

    ``make test`` runs ``.venv/bin/pytest`` without activating the venv, so its
    ``bin/`` is not on PATH; tools installed with pip (kubernetes-validate) live there.
    """
    candidate = Path(sys.executable).parent / name
    if candidate.is_file() and os.access(candidate, os.X_OK):
        return str(candidate)
    return require_tool(name)


def run(cmd: list[str], *, timeout: float = 60, **kwargs) -> subprocess.CompletedProcess[str]:  # type: ignore[no-untyped-def]
    return subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=timeout, **kwargs)


def feedagent_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "agent", *args]


def unit_lines(text: str) -> list[tuple[str, str, str]]:
    """``(section, key, value)`` for every setting of a unit file, in order (keys may repeat)."""
    section = ""
    out = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
            continue
        key, sep, value = line.partition("=")
        assert sep, f"not a setting: {raw!r}"
        out.append((section, key.strip(), value.strip()))
    return out


@pytest.fixture(scope="session")
def helm(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """Run ``helm ARGS...`` with its cache, config and data directories in a temporary folder."""
    path = require_tool("helm")
    home = tmp_path_factory.mktemp("helm-home")
    env = {**os.environ, **{var: str(home / var.lower())
                            for var in ("HELM_CACHE_HOME", "HELM_CONFIG_HOME", "HELM_DATA_HOME")}}

    def helm_run(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
        return run([path, *map(str, args)], env=env, cwd=cwd)

    return helm_run
