"""The second validation phase: does this machine let the config run?

``load_config`` checks the file on its own (schema, secrets). These checks look
at what the config names on this machine: the state directory, the jsonl sink
files and the admin listen address. ``feedagent validate`` and ``feedagent run``
both run them, so that ``validate`` passing means ``run`` will not refuse the
config for one of these reasons (``validate --no-environment`` skips them, to
check a file meant for another machine).

Every problem is a ``ConfigIssue`` located at the key that names the thing
(``FILE:LINE:COL: agent.state_dir: ...``).
"""

from __future__ import annotations

import os
import socket
import stat
from pathlib import Path

from agent.admin.runtime import bind_failure_reason, listen_address, read_runtime
from agent.config.issues import ConfigIssue, sort_issues
from agent.config.loader import LoadedConfig
from agent.config.models import JsonlSinkConfig


def check_environment(loaded: LoadedConfig, *, for_run: bool) -> list[ConfigIssue]:
    """Every problem of the machine with ``loaded``; empty when the agent can start.

    ``for_run`` adds what only matters to a new agent: another agent already running
    with this state directory. Without it (``validate``), an admin port held by this
    config's own running agent is fine (``systemctl reload`` validates while it runs).
    """
    config = loaded.config
    issues: list[ConfigIssue] = []
    problem = _directory_problem(config.agent.state_dir)
    if problem:
        issues.append(loaded.issue(("agent", "state_dir"), problem))
    for index, sink in enumerate(config.sinks):
        if isinstance(sink, JsonlSinkConfig):
            problem = _file_problem(sink.path)
            if problem:
                issues.append(loaded.issue(("sinks", index, "path"), problem))
    runtime = read_runtime(config.agent.state_dir)
    running = runtime if runtime is not None and runtime.answers() else None
    if for_run and running is not None:
        issues.append(loaded.issue(("agent", "state_dir"), (
            f"another agent (pid {running.pid}, admin {running.admin_url}) runs with this state directory; "
            "stop it first or give this one its own state_dir")))
    problem = _listen_problem(config.admin.host, config.admin.port)
    held_by_own_agent = running is not None and running.admin_port == config.admin.port
    if problem and (for_run or not held_by_own_agent):
        issues.append(loaded.issue(("admin", "listen"), problem))
    return sort_issues(issues)


def _directory_problem(path: Path) -> str | None:
    """Why ``path`` cannot be (or become) a directory the agent writes in."""
    try:
        info = path.stat()
    except (FileNotFoundError, NotADirectoryError):
        return _creatable_problem(path)
    except OSError as e:
        return f"cannot use {path}: {_reason(e)}"
    if not stat.S_ISDIR(info.st_mode):
        return f"{path} exists and is not a directory"
    if not os.access(path, os.W_OK | os.X_OK):
        return f"{path} is not writable by this user"
    return None


def _file_problem(path: Path) -> str | None:
    """Why the agent could not append to ``path``."""
    try:
        info = path.stat()
    except (FileNotFoundError, NotADirectoryError):
        return _creatable_problem(path)
    except OSError as e:
        return f"cannot use {path}: {_reason(e)}"
    if stat.S_ISDIR(info.st_mode):
        return f"{path} is a directory"
    if not stat.S_ISREG(info.st_mode):
        return f"{path} is not a regular file"
    if not os.access(path, os.W_OK):
        return f"{path} is not writable by this user"
    return None


def _creatable_problem(path: Path) -> str | None:
    """For a path that does not exist: its nearest existing parent must be a directory.

    Whether that parent is writable is left to ``run`` (a deployment often mounts or
    creates the state directory only on the target machine).
    """
    parent = path.parent
    while True:
        try:
            info = parent.stat()
        except (FileNotFoundError, NotADirectoryError):
            if parent == parent.parent:
                return None
            parent = parent.parent
            continue
        except OSError as e:
            return f"cannot create {path}: {parent}: {_reason(e)}"
        if not stat.S_ISDIR(info.st_mode):
            return f"cannot create {path}: {parent} is not a directory"
        return None


def _listen_problem(host: str, port: int) -> str | None:
    """Bind the admin address the way the admin server will (``SO_REUSEADDR``), then let go."""
    shown = listen_address(host, port)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as e:
        return f"cannot listen on {shown}: cannot resolve {host!r} ({e.strerror})"
    for family, kind, proto, _, address in infos:
        with socket.socket(family, kind, proto) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind(address)
                sock.listen()
            except OSError as e:
                return f"cannot listen on {shown}: {bind_failure_reason(e, str(address[0]))}"
    return None


def _reason(e: OSError) -> str:
    return (e.strerror or str(e)).lower()
