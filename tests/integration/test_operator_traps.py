"""Operator traps of issue 12 on the running surface: the CLI, the admin API, a second agent.

Real subprocesses on loopback ports; one agent (``live``) serves the tests that only read it.
"""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from agent.admin.server import AdminListenError
from agent.config.loader import load_config
from agent.supervisor import Supervisor
from tests.integration.harness import feedagent_cmd, free_port, read_runtime, spawn, write_config

TOKEN = "operator-trap-token-0123456789"


def cli(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None,
        stdout: Any = subprocess.PIPE) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("FEEDAGENT_")}
    return subprocess.run(feedagent_cmd(*args), stdout=stdout, stderr=subprocess.PIPE, text=True, timeout=60,
                          cwd=cwd, env={**base, **(env or {})})


def get_json(url: str) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def eventually(predicate: Any, timeout_seconds: float = 15.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout_seconds
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A running agent on a fixed port, with an admin token."""
    tmp = tmp_path_factory.mktemp("live")
    port = free_port()
    cfg = write_config(tmp, admin={"listen": f"127.0.0.1:{port}"})
    proc = spawn("run", "-c", str(cfg), env={"FEEDAGENT_ADMIN_TOKEN": TOKEN})
    try:
        runtime = read_runtime(tmp / "var")
        yield {"cfg": cfg, "port": port, "url": runtime["admin_url"], "proc": proc, "state_dir": tmp / "var",
               "runtime_text": (tmp / "var" / "agent.json").read_text()}
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=15)


# -- 1. the CLI never guesses an address ----------------------------------------------------------

@pytest.fixture
def default_port_guard() -> Iterator[socket.socket | None]:
    """Listen where the old CLI fell back to (127.0.0.1:9464), when that port is free, to catch a call."""
    guard = socket.socket()
    try:
        guard.bind(("127.0.0.1", 9464))
        guard.listen()
    except OSError:
        guard.close()
        yield None
        return
    guard.setblocking(False)
    yield guard
    guard.close()


def assert_never_called(guard: socket.socket | None) -> None:
    if guard is not None:
        readable, _, _ = select.select([guard], [], [], 0)
        assert not readable, "the CLI connected to 127.0.0.1:9464, an address no valid config named"


@pytest.mark.parametrize("command", [["status"], ["mode", "bybit-sim", "rest"], ["reload"]])
def test_invalid_config_is_refused_with_its_errors(tmp_path: Path, default_port_guard: socket.socket | None,
                                                   command: list[str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("exchanges: {x: {venue: bybit}}\nunknown_key: 1\n")

    out = cli(*command, "-c", str(bad), env={"FEEDAGENT_ADMIN_TOKEN": TOKEN})

    assert out.returncode == 78
    assert out.stderr.splitlines()[0] == f"{bad}:2:1: unknown_key: unknown key 'unknown_key'; valid keys: " \
                                         "agent, admin, telemetry, simulator, sinks, exchanges"
    assert "--admin-url" in out.stderr.splitlines()[-1]
    assert out.stdout == ""
    assert_never_called(default_port_guard)


def test_missing_config_is_refused(tmp_path: Path, default_port_guard: socket.socket | None) -> None:
    out = cli("status", cwd=tmp_path, env={"FEEDAGENT_CONFIG": str(tmp_path / "absent.yaml")})

    assert out.returncode == 78
    assert out.stderr.splitlines()[0] == (f"{tmp_path / 'absent.yaml'}:0:0: (file): cannot read the config file: "
                                          "no such file or directory")
    assert_never_called(default_port_guard)


def test_port_zero_without_a_running_agent_says_so(tmp_path: Path) -> None:
    cfg = write_config(tmp_path)

    out = cli("status", "-c", str(cfg))

    assert out.returncode == 1
    assert "admin.listen has port 0" in out.stderr and "--admin-url" in out.stderr


def test_explicit_admin_url_works_with_an_invalid_config(tmp_path: Path, live: dict[str, Any]) -> None:
    """RUNBOOK's ConfigReloadFailed: while the file is invalid, --admin-url reaches the agent."""
    bad = tmp_path / "bad.yaml"
    bad.write_text("exchanges: {x: {venue: bybit}}\nunknown_key: 1\n")

    out = cli("status", "-c", str(bad), "--admin-url", live["url"], "--json")

    assert out.returncode == 0, out.stderr
    assert set(json.loads(out.stdout)["exchanges"]) == {"bybit-sim", "binance-sim"}


# -- 2. a taken admin port, a second agent ---------------------------------------------------------

def test_second_agent_on_a_taken_port_is_refused_and_leaves_the_first_alone(live: dict[str, Any]) -> None:
    out = cli("run", "-c", str(live["cfg"]))

    assert out.returncode == 78
    assert "Traceback" not in out.stderr
    cfg_lines = live["cfg"].read_text().splitlines()
    listen_line = next(i for i, line in enumerate(cfg_lines, 1) if line.strip().startswith("listen:"))
    state_line = next(i for i, line in enumerate(cfg_lines, 1) if line.strip().startswith("state_dir:"))
    assert out.stderr.splitlines() == [
        f"{live['cfg']}:{state_line}:3: agent.state_dir: another agent (pid {live['proc'].pid}, admin "
        f"{live['url']}) runs with this state directory; stop it first or give this one its own state_dir",
        f"{live['cfg']}:{listen_line}:3: admin.listen: cannot listen on 127.0.0.1:{live['port']}: "
        "the address is already in use",
    ]
    assert (live["state_dir"] / "agent.json").read_text() == live["runtime_text"]
    assert live["proc"].poll() is None


def test_other_state_dir_on_a_taken_port_is_refused(tmp_path: Path, live: dict[str, Any]) -> None:
    cfg = write_config(tmp_path, admin={"listen": f"127.0.0.1:{live['port']}"})

    out = cli("run", "-c", str(cfg))

    assert out.returncode == 78
    assert out.stderr.splitlines() == [
        f"{cfg}:5:3: admin.listen: cannot listen on 127.0.0.1:{live['port']}: the address is already in use"]
    assert not (tmp_path / "var" / "agent.json").exists()
    assert (live["state_dir"] / "agent.json").read_text() == live["runtime_text"]


async def test_bind_failure_at_start_keeps_the_other_instances_runtime_file(tmp_path: Path) -> None:
    """The race the environment check cannot close: the port is taken between the check and the bind."""
    cfg = write_config(tmp_path)
    (tmp_path / "var").mkdir()
    theirs = json.dumps({"pid": 1, "admin_url": "http://127.0.0.1:1", "version": "x"})
    (tmp_path / "var" / "agent.json").write_text(theirs)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        loaded = load_config(cfg, {"FEEDAGENT_ADMIN__LISTEN": f"127.0.0.1:{port}"})
        supervisor = Supervisor(loaded, registry=CollectorRegistry())
        try:
            with pytest.raises(AdminListenError) as caught:
                await supervisor.start()
        finally:
            await supervisor.stop()

    assert str(caught.value) == f"cannot listen on 127.0.0.1:{port}: the address is already in use"
    assert (tmp_path / "var" / "agent.json").read_text() == theirs


# -- 3. validate catches what run would refuse -----------------------------------------------------

def test_validate_while_this_configs_agent_runs_is_ok(live: dict[str, Any]) -> None:
    """systemctl reload runs `feedagent validate` while the agent holds the port."""
    out = cli("validate", "-c", str(live["cfg"]))

    assert out.returncode == 0, out.stderr
    assert out.stdout.endswith("ok (2 exchanges)\n")


def test_validate_reports_a_port_taken_by_something_else(tmp_path: Path, live: dict[str, Any]) -> None:
    cfg = write_config(tmp_path, admin={"listen": f"127.0.0.1:{live['port']}"})

    out = cli("validate", "-c", str(cfg))

    assert out.returncode == 78
    assert out.stderr.splitlines() == [
        f"{cfg}:5:3: admin.listen: cannot listen on 127.0.0.1:{live['port']}: the address is already in use"]


def test_validate_reports_the_environment_and_no_environment_skips_it(tmp_path: Path) -> None:
    (tmp_path / "var").write_text("a file where the state directory should be")
    (tmp_path / "events").mkdir()
    cfg = write_config(tmp_path, sinks=[{"type": "jsonl", "path": str(tmp_path / "events")}])

    out = cli("validate", "-c", str(cfg))
    skipped = cli("validate", "--no-environment", "-c", str(cfg))
    run = cli("run", "-c", str(cfg))

    expected = [f"{cfg}:2:3: agent.state_dir: {tmp_path / 'var'} exists and is not a directory",
                f"{cfg}:12:3: sinks.0.path: {tmp_path / 'events'} is a directory"]
    assert (out.returncode, out.stderr.splitlines()) == (78, expected)
    assert (run.returncode, run.stderr.splitlines()) == (78, expected)
    assert skipped.returncode == 0, skipped.stderr


# -- 9. status: a readable table, and quiet in a closed pipe ----------------------------------------

def test_status_table_says_what_each_column_means(live: dict[str, Any]) -> None:
    out = cli("status", "-c", str(live["cfg"]))

    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    header = next(line for line in lines if line.startswith("EXCHANGE"))
    columns = ["EXCHANGE", "MODE (configured→effective)", "SOURCE", "ROLLBACK", "PINNED", "READY", "DATA AGE",
               "IN MODE FOR"]
    assert [c for c in columns if c in header] == columns
    assert "WANT" not in out.stdout and "BREAKER" not in out.stdout
    starts = [header.index(c) for c in columns]
    rows = {}
    for line in lines[lines.index(header) + 1:]:
        if line.startswith(" "):
            continue  # detail lines of the exchange above
        cells = [line[a:b].strip() for a, b in zip(starts, [*starts[1:], None])]
        rows[cells[0]] = dict(zip(columns, cells))
    assert set(rows) == {"bybit-sim", "binance-sim"}
    for row in rows.values():
        assert row["MODE (configured→effective)"] == "rest"  # configured rest, running rest: one word
        assert row["SOURCE"] == "rest"
        assert row["ROLLBACK"] == "-"  # not "open": nothing was rolled back
        assert row["PINNED"] == "-"


def _exchange(configured: str, effective: str, *, automatic: bool = True, **breaker: Any) -> dict[str, Any]:
    now = 1_700_000_000.0
    return {"configured_mode": configured, "effective_mode": effective, "ready": True, "started_unix_s": now - 600,
            "authoritative_source": "rest" if effective == "rest" else "ws", "running_sources": ["rest"],
            "polls": {"prices": {"last_success_unix_s": now - 1.5}},
            "last_transition": {"from": configured, "to": effective, "reason": "ws_data_age_seconds",
                                "automatic": automatic, "ts_ms": (now - 75) * 1000},
            "breaker": {"pinned_mode": None, "latched": False, "auto_recover": False, **breaker},
            "health": {"ws_data_age_seconds": {"state": "failing", "value": None}},
            "rest": {"last_error": "ExchangeUnavailable: HTTP 503", "last_error_unix_s": now - 42}}


@pytest.mark.parametrize(("exchange", "mode", "rollback", "pinned"), [
    (_exchange("hybrid", "rest"), "hybrid→rest", "rolled back, manual recovery", "-"),
    (_exchange("hybrid", "rest", auto_recover=True, cooldown_until_ms=(1_700_000_000 + 250) * 1000),
     "hybrid→rest", "rolled back, retry in 4m10s", "-"),
    (_exchange("hybrid", "shadow", passing_windows=1), "hybrid→shadow", "probation, 1 windows passed", "-"),
    (_exchange("hybrid", "rest", latched=True), "hybrid→rest", "latched, needs operator", "-"),
    (_exchange("hybrid", "rest", automatic=False, pinned_mode="rest"), "hybrid→rest", "operator set the mode",
     "rest"),
])
def test_status_row_says_what_the_breaker_did_in_words(exchange: dict[str, Any], mode: str, rollback: str,
                                                       pinned: str) -> None:
    from agent.admin.client import format_status

    doc = {"version": "0.1.0", "ready": True, "config": {"sha256": "ab" * 32}, "exchanges": {"bybit-main": exchange}}

    lines = format_status(doc, now_s=1_700_000_000.0).splitlines()

    row = [cell for cell in lines[2].split("  ") if cell.strip()]
    assert [c.strip() for c in row] == ["bybit-main", mode, exchange["authoritative_source"], rollback, pinned,
                                        "yes", "1.5s", "1m15s"]
    assert lines[3:] == [
        f"    last mode change: hybrid→{exchange['effective_mode']} "
        f"({'automatic' if exchange['last_transition']['automatic'] else 'operator'}): ws_data_age_seconds",
        "    failing health checks: ws_data_age_seconds",
        "    last error (0m42s ago): ExchangeUnavailable: HTTP 503",
    ]


def test_status_into_a_closed_pipe_exits_quietly(live: dict[str, Any]) -> None:
    """`feedagent status | head -0`: the reader is gone before anything is written."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        out = cli("status", "-c", str(live["cfg"]), stdout=write_end)
    finally:
        os.close(write_end)

    assert out.stderr == ""
    assert out.returncode == 141  # 128 + SIGPIPE, what `yes | head` reports under pipefail


# -- 11. /v1/events names what it can filter on ------------------------------------------------------

def test_events_with_an_unknown_exchange_is_400_with_the_valid_names(live: dict[str, Any]) -> None:
    status, body = get_json(f"{live['url']}/v1/events?exchange=nope")

    assert status == 400
    assert body["valid"] == ["binance-sim", "bybit-sim"]
    assert "nope" in body["error"]


def test_events_with_an_unknown_kind_is_400_with_the_valid_kinds(live: dict[str, Any]) -> None:
    status, body = get_json(f"{live['url']}/v1/events?kind=position,nope")

    assert status == 400
    assert {"position", "mark_price", "mode"} <= set(body["valid"])
    assert "nope" in body["error"]


def test_events_filtered_by_exchange_and_kind(live: dict[str, Any]) -> None:
    url = f"{live['url']}/v1/events?exchange=binance-sim&kind=mark_price"
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.status == 200
        events = [json.loads(response.readline()) for _ in range(5)]

    assert {(e["exchange"], e["kind"]) for e in events} == {("binance-sim", "mark_price")}


# -- 12. the last REST error outlives the next success ------------------------------------------------

def test_last_rest_error_is_kept_with_its_time_after_a_success(live: dict[str, Any]) -> None:
    _, status = get_json(f"{live['url']}/status")
    control = status["simulator"]["control_url"]
    request = urllib.request.Request(f"{control}/faults", method="POST", data=json.dumps({
        "venue": "bybit", "kind": "rest_error", "status": 503, "endpoint": "/v5/position/list",
        "count": 2}).encode())
    started = time.time()
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200

    def recovered() -> dict[str, Any] | None:
        ex = get_json(f"{live['url']}/status")[1]["exchanges"]["bybit-sim"]
        poll = ex["polls"]["positions"]
        if poll["last_error_unix_s"] and poll["last_success_unix_s"] > poll["last_error_unix_s"]:
            return ex
        return None

    ex = eventually(recovered, what="a failed positions poll followed by a good one")
    poll = ex["polls"]["positions"]
    assert "ExchangeUnavailable" in poll["last_error"] and started <= poll["last_error_unix_s"]
    assert "ExchangeUnavailable" in ex["rest"]["last_error"]
    assert started <= ex["rest"]["last_error_unix_s"] <= poll["last_success_unix_s"]


# -- 13. make run installs what running needs, no more ---------------------------------------------

def test_make_run_installs_only_runtime_dependencies(tmp_path: Path) -> None:
    from tests.conftest import REPO_ROOT

    def dry_run(target: str) -> str:
        out = subprocess.run(["make", "-n", target, f"VENV={tmp_path / 'venv'}"], cwd=REPO_ROOT,
                             capture_output=True, text=True, timeout=30)
        assert out.returncode == 0, out.stderr
        return out.stdout

    run_steps, test_steps = dry_run("run"), dry_run("test")

    installs = [line for line in run_steps.splitlines() if " install " in line and "--upgrade pip" not in line]
    assert installs and all("[test]" not in line for line in installs), run_steps
    assert "feedagent run -c configs/feedagent.yaml" in run_steps
    assert "'.[test]'" in test_steps or '".[test]"' in test_steps


def test_readme_quick_start_puts_feedagent_on_the_path() -> None:
    from tests.conftest import REPO_ROOT

    readme = (REPO_ROOT / "README.md").read_text()
    quick_start = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    first_block = quick_start.split("```sh\n", 1)[1].split("```", 1)[0]
    assert "pip install ." in first_block
    assert first_block.index("pip install .") < first_block.index("feedagent run -c configs/feedagent.yaml")
