"""sd_notify: datagrams on a real AF_UNIX socket, path and abstract; no-ops and no exceptions without systemd."""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.telemetry.sdnotify import WATCHDOG_TASK_NAME, Notifier


class Receiver:
    """A bound datagram socket standing in for systemd's notification socket."""

    def __init__(self, address: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        bind_to = "\0" + address[1:] if address.startswith("@") else address
        self.sock.bind(bind_to)
        self.sock.settimeout(2.0)
        self.address = address

    def recv(self) -> list[str]:
        return self.sock.recv(4096).decode().split("\n")

    def pending(self) -> list[list[str]]:
        self.sock.setblocking(False)
        out = []
        try:
            while True:
                out.append(self.sock.recv(4096).decode().split("\n"))
        except BlockingIOError:
            return out
        finally:
            self.sock.settimeout(2.0)


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[Receiver]:
    r = Receiver(str(tmp_path / "notify.sock"))
    yield r
    r.sock.close()


@pytest.fixture
def abstract_receiver() -> Iterator[Receiver]:
    r = Receiver(f"@feedagent-test-{os.getpid()}-{time.monotonic_ns()}")
    yield r
    r.sock.close()


def test_every_message_on_a_path_socket(receiver):
    n = Notifier({"NOTIFY_SOCKET": receiver.address})
    assert n.enabled
    assert n.ready()
    assert receiver.recv() == ["READY=1"]
    assert n.ready(status="serving 2 exchanges")
    assert receiver.recv() == ["READY=1", "STATUS=serving 2 exchanges"]
    assert n.status("line one\nline two")
    assert receiver.recv() == ["STATUS=line one line two"]
    assert n.watchdog()
    assert receiver.recv() == ["WATCHDOG=1"]
    assert n.stopping()
    assert receiver.recv() == ["STOPPING=1"]
    n.close()
    n.close()


def test_abstract_socket(abstract_receiver):
    n = Notifier({"NOTIFY_SOCKET": abstract_receiver.address})
    assert n.ready()
    assert abstract_receiver.recv() == ["READY=1"]
    n.close()


def test_reloading_sends_monotonic_usec_then_ready(receiver):
    n = Notifier({"NOTIFY_SOCKET": receiver.address})
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    with pytest.raises(RuntimeError), n.reloading():
        raise RuntimeError("a reload that failed still ends with READY=1")
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    first = receiver.recv()
    assert first[0] == "RELOADING=1"
    assert first[1].startswith("MONOTONIC_USEC=")
    assert before <= int(first[1].split("=", 1)[1]) <= after
    assert receiver.recv() == ["READY=1"]
    n.close()


def test_no_socket_means_no_op():
    n = Notifier({})
    assert not n.enabled
    assert n.ready() is False and n.stopping() is False and n.watchdog() is False
    assert n.watchdog_interval_seconds() is None
    with n.reloading():
        pass
    n.close()


@pytest.mark.parametrize("value", ["relative/path", "vsock:2:1234", ""])
def test_unsupported_socket_values_are_ignored(value):
    n = Notifier({"NOTIFY_SOCKET": value})
    assert not n.enabled and n.ready() is False


def test_never_raises_when_nobody_listens(tmp_path):
    n = Notifier({"NOTIFY_SOCKET": str(tmp_path / "nobody.sock")})
    assert n.enabled
    assert n.ready() is False  # ENOENT, logged at debug level
    n2 = Notifier({"NOTIFY_SOCKET": "@feedagent-nobody-listens-here"})
    assert n2.stopping() is False  # ECONNREFUSED
    n.close()
    n2.close()


def test_full_receive_queue_drops_instead_of_blocking(receiver):
    receiver.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1)
    n = Notifier({"NOTIFY_SOCKET": receiver.address})
    started = time.monotonic()
    results = [n.status("x" * 512) for _ in range(2000)]
    assert time.monotonic() - started < 2.0
    assert results[0] and not all(results), "once the queue is full, messages are dropped"
    n.close()


@pytest.mark.parametrize(("environ", "expected"), [
    ({"WATCHDOG_USEC": "30000000"}, 15.0),
    ({"WATCHDOG_USEC": "400000", "WATCHDOG_PID": str(os.getpid())}, 0.2),
    ({"WATCHDOG_USEC": "400000", "WATCHDOG_PID": "1"}, None),  # meant for another process
    ({"WATCHDOG_USEC": "0"}, None),
    ({"WATCHDOG_USEC": "soon"}, None),
    ({"WATCHDOG_USEC": "400000", "WATCHDOG_PID": "me"}, None),
    ({}, None),
])
def test_watchdog_interval_is_half_of_watchdog_usec(receiver, environ, expected):
    assert Notifier({"NOTIFY_SOCKET": receiver.address, **environ}).watchdog_interval_seconds() == expected


def test_watchdog_needs_a_socket():
    assert Notifier({"WATCHDOG_USEC": "400000"}).watchdog_interval_seconds() is None


async def test_watchdog_task_pings_until_closed(receiver):
    n = Notifier({"NOTIFY_SOCKET": receiver.address, "WATCHDOG_USEC": "100000"})
    task = n.start_watchdog()
    assert task is not None and task.get_name() == WATCHDOG_TASK_NAME
    assert n.start_watchdog() is task, "one watchdog task, however often it is started"
    await asyncio.sleep(0.23)
    n.close()
    await asyncio.sleep(0)
    assert task.cancelled() or task.done()
    pings = [m for m in receiver.pending() if m == ["WATCHDOG=1"]]
    assert 3 <= len(pings) <= 6  # every 50 ms: at 0, 50, 100, 150, 200 ms


async def test_watchdog_not_started_without_watchdog_usec(receiver):
    n = Notifier({"NOTIFY_SOCKET": receiver.address})
    assert n.start_watchdog() is None
    await n.watchdog_loop()  # returns at once
    n.close()


def test_start_watchdog_without_a_loop_does_not_raise(receiver):
    n = Notifier({"NOTIFY_SOCKET": receiver.address, "WATCHDOG_USEC": "100000"})
    assert n.start_watchdog() is None
    n.close()


def test_reads_os_environ_by_default(receiver, monkeypatch):
    monkeypatch.setenv("NOTIFY_SOCKET", receiver.address)
    monkeypatch.setenv("WATCHDOG_USEC", "2000000")
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    n = Notifier()
    assert n.watchdog_interval_seconds() == 1.0
    assert n.ready() and receiver.recv() == ["READY=1"]
    n.close()
