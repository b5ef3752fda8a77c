"""``feedagent run`` speaks sd_notify as systemd's Type=notify + WatchdogSec= expect.

The test plays systemd: it binds an AF_UNIX datagram socket, starts the agent
(on the built-in simulator) with NOTIFY_SOCKET and WATCHDOG_USEC=400000, and
reads what arrives: READY=1 once started, WATCHDOG=1 every 200 ms, STOPPING=1
after SIGTERM.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import yaml

from tests.deploy.conftest import feedagent_cmd


def simulator_config(tmp_path: Path) -> Path:
    config = {
        "agent": {"state_dir": str(tmp_path / "var"), "shutdown_timeout_seconds": 5},
        "admin": {"listen": "127.0.0.1:0", "token_env": None},
        "telemetry": {"log": {"format": "json", "level": "warning"}},
        "sinks": [{"type": "jsonl", "path": str(tmp_path / "var" / "events.jsonl"), "fsync": "never"}],
        "exchanges": {"bybit-sim": {"venue": "bybit", "environment": "simulator", "symbols": ["BTCUSDT"],
                                    "rest": {"positions_interval_seconds": 0.2, "prices_interval_seconds": 0.2}}},
    }
    path = tmp_path / "feedagent.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def collect(sock: socket.socket, until, timeout_seconds: float) -> list[list[str]]:  # type: ignore[no-untyped-def]
    messages: list[list[str]] = []
    deadline = time.monotonic() + timeout_seconds
    while not until(messages):
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"timed out; received {messages}"
        sock.settimeout(remaining)
        try:
            messages.append(sock.recv(4096).decode().split("\n"))
        except TimeoutError:
            continue
    return messages


def test_ready_watchdog_stopping(tmp_path):
    sock_path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(sock_path))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FEEDAGENT_", "WATCHDOG_", "NOTIFY_"))}
    env.update(NOTIFY_SOCKET=str(sock_path), WATCHDOG_USEC="400000")
    proc = subprocess.Popen(feedagent_cmd("run", "-c", str(simulator_config(tmp_path))), env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        started = collect(sock, lambda m: sum(x == ["WATCHDOG=1"] for x in m) >= 2, timeout_seconds=20)
        assert started[0] == ["READY=1"], "READY=1 comes first, then the watchdog starts"
        runtime = json.loads((tmp_path / "var" / "agent.json").read_text())
        assert runtime["pid"] == proc.pid, "READY=1 is sent once the agent has started"

        first_ping = time.monotonic()
        more = collect(sock, lambda m: sum(x == ["WATCHDOG=1"] for x in m) >= 5, timeout_seconds=5)
        took = time.monotonic() - first_ping
        assert 0.6 <= took <= 2.5, f"5 pings every 200 ms took {took:.2f}s"
        assert all(m == ["WATCHDOG=1"] for m in more)

        proc.send_signal(signal.SIGTERM)
        stopping = collect(sock, lambda m: ["STOPPING=1"] in m, timeout_seconds=5)
        assert set(map(tuple, stopping)) <= {("WATCHDOG=1",), ("STOPPING=1",)}
        _, stderr = proc.communicate(timeout=10)
        assert proc.returncode == 0, stderr.decode()[-2000:]
        sock.settimeout(0.3)
        try:
            after = sock.recv(4096)
        except TimeoutError:
            after = b""
        assert after in (b"", b"WATCHDOG=1"), "nothing but a last in-flight ping after STOPPING=1"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        sock.close()
