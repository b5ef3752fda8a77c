"""The systemd unit: ``systemd-analyze verify`` with no output at all, and the sandboxing score.

``verify`` exits 0 on warnings (unknown keys, unparsable values), so any
output is a failure. It also checks that ExecStart= binaries exist, so it runs
against a fake root holding the stock units, the console script path and
/bin/kill. No systemd runs as PID 1 here: the unit is never started (the
sandbox's seccomp part is exercised by tests/deploy/test_install.py).
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO_ROOT, require_tool
from tests.deploy.conftest import SYSTEMD, UNIT, feedagent_cmd, run, unit_lines

pytestmark = pytest.mark.tool

THRESHOLD = 20  # tenths: exposure <= 2.0 on systemd-analyze's 0-10 scale
CONSOLE_SCRIPT = "/opt/feedagent/bin/feedagent"
CONFIG = "/etc/feedagent/feedagent.yaml"


def fake_root(tmp_path: Path, unit_text: str, name: str = "feedagent.service") -> Path:
    root = tmp_path / "root"
    (root / "etc" / "systemd" / "system").mkdir(parents=True)
    (root / "usr" / "lib" / "systemd").mkdir(parents=True)
    shutil.copytree("/usr/lib/systemd/system", root / "usr" / "lib" / "systemd" / "system", symlinks=True)
    for binary in (CONSOLE_SCRIPT, "/bin/kill"):
        path = root / binary.lstrip("/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("#!/bin/sh\n")
        path.chmod(0o755)
    (root / "etc" / "systemd" / "system" / name).write_text(unit_text)
    return root


def verify(tmp_path: Path, unit_text: str) -> tuple[int, str]:
    systemd_analyze = require_tool("systemd-analyze")
    if not Path("/usr/lib/systemd/system").is_dir():
        pytest.skip("no stock systemd units in /usr/lib/systemd/system")
    root = fake_root(tmp_path, unit_text)
    out = run([systemd_analyze, "verify", f"--root={root}", "feedagent.service"],
              env={**os.environ, "SYSTEMD_LOG_COLOR": "0", "SYSTEMD_PAGER": ""})
    return out.returncode, (out.stdout + out.stderr).strip()


def security(unit: Path, threshold: int) -> tuple[int, str]:
    systemd_analyze = require_tool("systemd-analyze")
    out = run([systemd_analyze, "security", "--offline=yes", f"--threshold={threshold}", "--no-pager", str(unit)],
              env={**os.environ, "SYSTEMD_LOG_COLOR": "0", "SYSTEMD_COLORS": "0"})
    return out.returncode, out.stdout + out.stderr


def exposure(output: str) -> float:
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", output)
    assert match, output
    return float(match.group(1))


def test_verify_prints_nothing(tmp_path):
    rc, output = verify(tmp_path, UNIT.read_text())
    assert rc == 0 and output == "", output


def test_verify_negative_unknown_key_is_output_but_exit_0(tmp_path):
    text = UNIT.read_text().replace("UMask=0077", "UMask=0077\nProtectEverything=yes")
    rc, output = verify(tmp_path, text)
    assert "Unknown key 'ProtectEverything'" in output
    assert rc == 0, "systemd 252 only warns: the output is what the positive test must catch"


def test_verify_negative_missing_binary(tmp_path):
    rc, output = verify(tmp_path, UNIT.read_text().replace(CONSOLE_SCRIPT, "/opt/nowhere/feedagent"))
    assert rc != 0 and "is not executable" in output


def test_security_exposure_under_the_documented_threshold():
    rc, output = security(UNIT, THRESHOLD)
    assert rc == 0, output
    score = exposure(output)
    assert score <= THRESHOLD / 10
    header = UNIT.read_text().split("[Unit]")[0]
    assert f"--threshold={THRESHOLD}" in header, "the unit's header states the threshold the tests use"
    version = run([require_tool("systemd-analyze"), "--version"]).stdout.split()[1]
    documented = re.search(r"scores (\d+\.\d+) on systemd (\d+)", header)
    assert documented, "the unit's header states its score and the systemd version that gave it"
    if documented.group(2) == version:
        assert float(documented.group(1)) == score, f"this systemd {version} scores the unit {score}"
    readme = (REPO_ROOT / "README.md").read_text()
    assert f"--threshold={THRESHOLD}" in readme


def test_security_negative_bare_unit_is_over_the_threshold(tmp_path):
    bare = tmp_path / "bare.service"
    bare.write_text(f"[Service]\nExecStart={CONSOLE_SCRIPT} run -c {CONFIG}\n")
    rc, output = security(bare, THRESHOLD)
    assert rc != 0
    assert exposure(output) > 9.0


def settings() -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for section, key, value in unit_lines(UNIT.read_text()):
        out.setdefault(f"{section}.{key}", []).append(value)
    return out


def test_unit_contract():
    s = settings()
    one = {k: v[-1] for k, v in s.items()}
    assert one["Service.Type"] == "notify"
    assert one["Service.NotifyAccess"] == "main"
    assert one["Service.WatchdogSec"] == "30"
    assert s["Service.ExecStartPre"] == [f"{CONSOLE_SCRIPT} validate -c {CONFIG}"]
    assert s["Service.ExecStart"] == [f"{CONSOLE_SCRIPT} run -c {CONFIG}"]
    assert s["Service.ExecReload"] == [f"{CONSOLE_SCRIPT} validate -c {CONFIG}", "/bin/kill -HUP $MAINPID"]
    assert one["Service.Restart"] == "on-failure"
    assert one["Service.RestartPreventExitStatus"] == "78", "a bad config is not fixed by restarting"
    assert one["Service.StateDirectory"] == "feedagent"
    assert one["Service.ConfigurationDirectory"] == "feedagent"
    assert one["Service.WorkingDirectory"] == "/var/lib/feedagent"
    assert one["Service.EnvironmentFile"] == "-/etc/feedagent/feedagent.env"
    assert one["Service.DynamicUser"] == "yes"
    assert one["Service.MemoryDenyWriteExecute"] == "yes"
    assert one["Service.RestrictAddressFamilies"] == "AF_INET AF_INET6 AF_UNIX"
    assert s["Service.SystemCallFilter"] == ["@system-service", "~@privileged @resources"]
    assert one["Service.CapabilityBoundingSet"] == "" and one["Service.AmbientCapabilities"] == ""
    for key in ("MemoryMax", "TasksMax", "StartLimitBurst"):
        assert any(k.endswith("." + key) for k in s), key
    stop_timeout = int(one["Service.TimeoutStopSec"].removesuffix("s"))
    assert stop_timeout > 60, "longer than the largest agent.shutdown_timeout_seconds"


def test_example_config_validates_with_the_example_env_names(tmp_path):
    """The example config names only variables the example env file lists, and validates once they are set."""
    env_names = [line.split("=", 1)[0] for line in (SYSTEMD / "feedagent.env.example").read_text().splitlines()
                 if line and not line.startswith("#")]
    config = yaml.safe_load((SYSTEMD / "feedagent.yaml.example").read_text())
    named = {config["admin"]["token_env"]}
    for exchange in config["exchanges"].values():
        named |= {exchange["credentials"]["api_key_env"], exchange["credentials"]["api_secret_env"]}
    assert named <= set(env_names)
    env = {k: v for k, v in os.environ.items() if not k.startswith("FEEDAGENT_")}
    out = run(feedagent_cmd("validate", "-c", str(SYSTEMD / "feedagent.yaml.example")),
              env={**env, **{name: "x" * 24 for name in env_names}})
    assert out.returncode == 0, out.stderr
    assert config["agent"]["state_dir"] == "/var/lib/feedagent"
