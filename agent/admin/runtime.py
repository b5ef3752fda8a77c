"""``state_dir/agent.json``: where the running agent of a config can be reached.

The agent writes it once started and removes it when it stops (only its own:
the file names the process that wrote it). The CLI reads it to find the admin
API when ``admin.listen`` has port 0; ``run`` and ``validate`` read it to tell
"the port is taken by this config's own agent" from "by something else".
"""

from __future__ import annotations

import errno
import json
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

RUNTIME_FILE = "agent.json"


@dataclass(frozen=True)
class RuntimeInfo:
    """What a running agent wrote about itself."""

    path: Path
    pid: int
    admin_url: str | None

    @property
    def admin_port(self) -> int | None:
        try:
            return urlsplit(self.admin_url).port if self.admin_url else None
        except ValueError:
            return None

    @property
    def alive(self) -> bool:
        """Whether the process that wrote the file still runs (and is not this one)."""
        return self.pid != os.getpid() and pid_alive(self.pid)

    def answers(self, timeout_seconds: float = 1.0) -> bool:
        """Whether the agent is really there: its process runs and its admin port accepts a connection.

        A file left by a crash names a pid that, after a reboot, may belong to anything;
        the pid and a listening admin port together are what only a running agent shows.
        """
        if not self.alive or not self.admin_url:
            return False
        try:
            parts = urlsplit(self.admin_url)
            host, port = parts.hostname, parts.port
        except ValueError:
            return False
        if not host or not port:
            return False
        host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
        try:
            with socket.create_connection((host, port), timeout=timeout_seconds):
                return True
        except OSError:
            return False


def runtime_path(state_dir: Path) -> Path:
    return state_dir / RUNTIME_FILE


def read_runtime(state_dir: Path) -> RuntimeInfo | None:
    """The runtime file of ``state_dir``; ``None`` when absent or unreadable."""
    path = runtime_path(state_dir)
    try:
        doc = json.loads(path.read_text())
        pid = int(doc["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    url = doc.get("admin_url")
    return RuntimeInfo(path=path, pid=pid, admin_url=str(url) if url else None)


def pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    except OSError:
        return False
    return True


def listen_address(host: str, port: int) -> str:
    """``host:port`` as written in ``admin.listen`` (IPv6 in brackets)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def bind_failure_reason(e: OSError, host: str) -> str:
    """Why binding ``host`` failed, in an operator's words."""
    if e.errno == errno.EADDRINUSE:
        return "the address is already in use"
    if e.errno == errno.EADDRNOTAVAIL:
        return f"{host} is not an address of this machine"
    if e.errno == errno.EACCES:
        return "permission denied (ports below 1024 need privileges)"
    return (e.strerror or str(e)).lower()
