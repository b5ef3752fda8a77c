"""Install as the unit documents it, then run the unit's own command lines in a temporary root.

``pip install .`` goes into a fresh virtualenv at ``<root>/opt/feedagent`` (the
path the unit's ExecStart= names). To stay fast and offline, it installs with
``--no-deps --no-build-isolation`` and sees the test environment's packages
(aiohttp, pydantic, setuptools, ...) through a ``.pth`` line, the equivalent of
``--system-site-packages`` for a venv made from a venv.

Then ExecStartPre= and ExecStart= are taken from deploy/systemd/feedagent.service
with /opt, /etc and /var paths moved under the root, run with the environment
systemd would give (Environment=, EnvironmentFile=, NOTIFY_SOCKET) in
WorkingDirectory=, under the unit's seccomp filter (tests/deploy/sandbox.py:
SystemCallFilter=, RestrictAddressFamilies=, MemoryDenyWriteExecute=,
NoNewPrivileges=). The example config is used as shipped, its exchanges turned
to the built-in simulator by FEEDAGENT_* lines in the env file, so no network
is needed.
"""

from __future__ import annotations

import ctypes.util
import importlib.metadata
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT
from tests.deploy.conftest import SYSTEMD, UNIT, run, unit_lines

SANDBOX = Path(__file__).with_name("sandbox.py")


def needs_libseccomp() -> None:
    if ctypes.util.find_library("seccomp"):
        return
    if os.environ.get("FEEDAGENT_REQUIRE_TOOLS") == "1":
        pytest.fail("libseccomp is required (FEEDAGENT_REQUIRE_TOOLS=1) for the sandboxed run")
    pytest.skip("libseccomp is not installed")


def _has_build_backend() -> bool:
    try:
        setuptools_version = importlib.metadata.version("setuptools")
        importlib.metadata.version("wheel")
    except importlib.metadata.PackageNotFoundError:
        return False
    return int(setuptools_version.split(".")[0]) >= 68


def install_into_fresh_venv(root: Path) -> Path:
    """``pip install .`` into ``<root>/opt/feedagent``; returns the venv."""
    src = root.parent / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO_ROOT / name, src / name)
    shutil.copytree(REPO_ROOT / "agent", src / "agent", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    venv = root / "opt" / "feedagent"
    out = run([sys.executable, "-m", "venv", "--without-pip", str(venv)])
    assert out.returncode == 0, out.stderr
    python = venv / "bin" / "python"
    site = Path(run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip())
    ours = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (site / "test-environment.pth").write_text("\n".join(sorted(ours)) + "\n")
    # Offline when the test environment has the build backend (the `test` extra brings it); else pip
    # fetches setuptools and wheel into an isolated build environment.
    offline = ["--no-build-isolation", "--no-index"] if _has_build_backend() else []
    out = run([sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet", "--no-deps",
               *offline, str(src)], timeout=180)
    assert out.returncode == 0, out.stdout + out.stderr
    return venv


def env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines as systemd's EnvironmentFile= reads them (comments, blank lines, optional quotes)."""
    out = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        key, _, value = line.partition("=")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        out[key.strip()] = value
    return out


def test_pip_install_and_the_units_exec_lines_in_a_temp_root(tmp_path):
    needs_libseccomp()
    root = tmp_path / "root"
    root.mkdir()
    venv = install_into_fresh_venv(root)
    where = run([str(venv / "bin" / "python"), "-c", "import agent; print(agent.__file__)"], cwd=root).stdout.strip()
    assert where.startswith(str(venv)), f"imported the repository's agent, not the installed one: {where}"
    assert (venv / "bin" / "feedagent").is_file()

    def moved(text: str) -> str:
        for prefix in ("/opt/feedagent", "/etc/feedagent", "/var/lib/feedagent"):
            text = text.replace(prefix, f"{root}{prefix}")
        return text

    settings = unit_lines(UNIT.read_text())
    service = {}
    for section, key, value in settings:
        if section == "Service":
            service.setdefault(key, []).append(value)

    etc = root / "etc" / "feedagent"
    etc.mkdir(parents=True)
    (etc / "feedagent.yaml").write_text(moved((SYSTEMD / "feedagent.yaml.example").read_text()))
    secrets = {name: ("x" * 24 if not value else value) for name, value in
               env_file(SYSTEMD / "feedagent.env.example").items()}
    lines = [f"{k}={v}" for k, v in secrets.items()] + [
        "FEEDAGENT_ADMIN__LISTEN=127.0.0.1:0",  # any free port: read back from state_dir/agent.json
        "FEEDAGENT_EXCHANGES__BYBIT_MAIN__ENVIRONMENT=simulator",
        "FEEDAGENT_EXCHANGES__BINANCE_MAIN__ENVIRONMENT=simulator",
        "FEEDAGENT_EXCHANGES__BYBIT_MAIN__MODE=rest",
        "FEEDAGENT_EXCHANGES__BINANCE_MAIN__MODE=rest",
    ]
    env_path = Path(moved(service["EnvironmentFile"][0].removeprefix("-")))
    env_path.write_text("\n".join(lines) + "\n")
    env_path.chmod(0o600)
    state = Path(moved(service["WorkingDirectory"][0]))
    state.mkdir(parents=True)  # StateDirectory=feedagent
    state.chmod(0o700)

    notify = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(notify))
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "NOTIFY_SOCKET": str(notify), "LANG": "C.UTF-8"}
    for assignment in service.get("Environment", []):
        env.update(dict(item.split("=", 1) for item in shlex.split(assignment)))
    env.update(env_file(env_path))

    def sandboxed(line: str) -> list[str]:
        return [sys.executable, str(SANDBOX), str(UNIT), "--", *shlex.split(moved(line))]

    (pre,) = service["ExecStartPre"]
    out = run(sandboxed(pre), env=env, cwd=state)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "ok (2 exchanges)" in out.stdout

    (start,) = service["ExecStart"]
    proc = subprocess.Popen(sandboxed(start), env=env, cwd=state, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        sock.settimeout(20)
        assert sock.recv(4096) == b"READY=1"
        runtime = json.loads((state / "agent.json").read_text())
        assert runtime["pid"] == proc.pid, "the sandbox wrapper execs the agent: systemd's MAINPID"
        deadline = time.monotonic() + 20
        while True:
            try:
                with urllib.request.urlopen(runtime["admin_url"] + "/-/ready", timeout=2) as response:
                    assert json.load(response) == {"ready": True}
                    break
            except urllib.error.HTTPError as err:
                assert err.code == 503
                assert time.monotonic() < deadline, "never became ready"
                time.sleep(0.1)
        with urllib.request.urlopen(runtime["admin_url"] + "/status", timeout=2) as response:
            status = json.load(response)
        assert set(status["exchanges"]) == {"bybit-main", "binance-main"}
        assert status["config"]["path"] == str(etc / "feedagent.yaml")

        for reload_line in service["ExecReload"][:1]:  # the validate step; the HUP goes to $MAINPID
            out = run(sandboxed(reload_line), env=env, cwd=state)
            assert out.returncode == 0, out.stderr

        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=int(service["TimeoutStopSec"][0].removesuffix("s")))
        assert proc.returncode == 0, stderr.decode()[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        sock.close()
    assert (state / "events.jsonl").stat().st_size > 0, "events land in the state directory"
    assert not (state / "agent.json").exists()
    records = [json.loads(line) for line in stderr.decode().splitlines()]  # journald gets JSON lines
    assert {"agent_started", "agent_stopped"} <= {r.get("event") for r in records}
    assert not [r for r in records if r["level"] == "critical"], records
