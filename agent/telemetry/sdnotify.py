"""systemd's sd_notify protocol, written with the standard library.

Under ``Type=notify`` systemd passes ``NOTIFY_SOCKET`` (a filesystem path, or
an abstract name written with a leading ``@``) and, with ``WatchdogSec=``,
``WATCHDOG_USEC`` and ``WATCHDOG_PID``. A notification is one datagram of
newline-separated ``KEY=VALUE`` lines on an ``AF_UNIX``/``SOCK_DGRAM`` socket
(``sd_notify(3)``, ``sd_watchdog_enabled(3)``).

Everything here is a no-op when ``NOTIFY_SOCKET`` is unset (a terminal, a
container, the tests), and nothing here ever raises into the agent: a lost
notification is logged at debug level and forgotten, as libsystemd does.

Wiring (``agent/cli.py``)::

    notifier = Notifier()                  # reads the environment once
    await supervisor.start()
    notifier.ready()                       # READY=1: systemd's start job completes
    notifier.start_watchdog()              # task "sdnotify/watchdog": WATCHDOG=1 every WATCHDOG_USEC/2
    ...
    with notifier.reloading():             # RELOADING=1 + MONOTONIC_USEC, then READY=1
        await supervisor.reload()
    ...
    notifier.stopping()                    # STOPPING=1 at the start of shutdown
    notifier.close()

The watchdog pings come from a task on the agent's own event loop, so a loop
that is blocked (or a process that is wedged) stops pinging and systemd
restarts it, while a sick exchange never does (liveness never depends on
exchange health).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Mapping

log = logging.getLogger("agent.sdnotify")

#: Name of the watchdog task (the Supervisor names every task it owns).
WATCHDOG_TASK_NAME = "sdnotify/watchdog"


def _socket_address(value: str) -> str | bytes | None:
    """``NOTIFY_SOCKET`` as an address for ``sendto``: a path, or an abstract name (``@x`` → ``\\0x``)."""
    if value.startswith("@"):
        return b"\0" + value[1:].encode()
    if value.startswith("/"):
        return value
    return None  # vsock:… and other forms of newer systemd versions are not supported here


def _one_line(text: str) -> str:
    """Values may not contain newlines: one notification line per field."""
    return " ".join(str(text).split())


class Notifier:
    """Sends sd_notify messages to systemd; every method is safe to call without systemd.

    ``environ`` defaults to ``os.environ`` and is read once, at construction.
    """

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        raw = env.get("NOTIFY_SOCKET", "")
        self._address = _socket_address(raw) if raw else None
        if raw and self._address is None:
            log.debug("unsupported NOTIFY_SOCKET; notifications disabled",
                      extra={"event": "sdnotify_unsupported_socket"})
        self._watchdog_usec = self._parse_watchdog(env)
        self._sock: socket.socket | None = None
        self._task: asyncio.Task[None] | None = None

    @staticmethod
    def _parse_watchdog(env: Mapping[str, str]) -> int | None:
        """``WATCHDOG_USEC`` when it is meant for this process (``WATCHDOG_PID`` unset or ours)."""
        try:
            usec = int(env.get("WATCHDOG_USEC", ""))
        except ValueError:
            return None
        if usec <= 0:
            return None
        pid = env.get("WATCHDOG_PID")
        if pid:
            try:
                if int(pid) != os.getpid():
                    return None
            except ValueError:
                return None
        return usec

    # -- state ---------------------------------------------------------------------------------

    @property
    def enabled(self) -> bool:
        """True when running under a notify-aware supervisor (``NOTIFY_SOCKET`` usable)."""
        return self._address is not None

    def watchdog_interval_seconds(self) -> float | None:
        """Half of ``WATCHDOG_USEC`` in seconds, or ``None`` when no watchdog is expected of us."""
        if self._address is None or self._watchdog_usec is None:
            return None
        return self._watchdog_usec / 2 / 1_000_000

    # -- messages ------------------------------------------------------------------------------

    def notify(self, *fields: str) -> bool:
        """Send one datagram made of ``fields`` (``"KEY=VALUE"``); True when it was handed to the kernel."""
        if self._address is None or not fields:
            return False
        payload = "\n".join(fields).encode()
        try:
            if self._sock is None:
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)  # close-on-exec by default
                sock.setblocking(False)  # a full receive queue drops the message instead of stalling the loop
                self._sock = sock
            self._sock.sendto(payload, self._address)
            return True
        except (OSError, ValueError) as exc:
            log.debug("sd_notify failed", extra={"event": "sdnotify_failed", "error": str(exc)})
            return False

    def ready(self, status: str | None = None) -> bool:
        """``READY=1``: start-up (or a reload) is finished."""
        return self.notify("READY=1", *self._status_field(status))

    def reloading(self, status: str | None = None) -> _Reloading:
        """``RELOADING=1`` with ``MONOTONIC_USEC`` now; as a context manager, ``READY=1`` on exit.

        Called bare it only sends ``RELOADING=1``; the caller must send ``ready()``
        afterwards, whether the reload succeeded or not (the old config keeps running).
        """
        self.notify("RELOADING=1", f"MONOTONIC_USEC={time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000}",
                    *self._status_field(status))
        return _Reloading(self)

    def stopping(self, status: str | None = None) -> bool:
        """``STOPPING=1``: shutdown has begun."""
        return self.notify("STOPPING=1", *self._status_field(status))

    def status(self, text: str) -> bool:
        """``STATUS=…``: one line shown by ``systemctl status``."""
        return self.notify(*self._status_field(text))

    def watchdog(self) -> bool:
        """``WATCHDOG=1``: one keep-alive ping."""
        return self.notify("WATCHDOG=1")

    @staticmethod
    def _status_field(status: str | None) -> tuple[str, ...]:
        return () if status is None else (f"STATUS={_one_line(status)}",)

    # -- watchdog ------------------------------------------------------------------------------

    async def watchdog_loop(self) -> None:
        """Ping every ``watchdog_interval_seconds()`` until cancelled; returns at once without a watchdog."""
        interval = self.watchdog_interval_seconds()
        if interval is None:
            return
        while True:
            self.watchdog()
            await asyncio.sleep(interval)

    def start_watchdog(self) -> asyncio.Task[None] | None:
        """Start the named watchdog task on the running loop; ``None`` when no watchdog is expected."""
        if self.watchdog_interval_seconds() is None:
            return None
        if self._task is None or self._task.done():
            try:
                self._task = asyncio.get_running_loop().create_task(self.watchdog_loop(), name=WATCHDOG_TASK_NAME)
            except RuntimeError:  # no running loop: nothing to schedule on
                log.debug("no running event loop; watchdog not started", extra={"event": "sdnotify_no_loop"})
                return None
            log.debug("watchdog started", extra={"event": "sdnotify_watchdog_started",
                                                 "interval_seconds": self.watchdog_interval_seconds()})
        return self._task

    def close(self) -> None:
        """Cancel the watchdog task and close the socket; safe to call twice."""
        if self._task is not None:
            self._task.cancel()
            self._task = None
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.close()
            self._sock = None


class _Reloading(contextlib.AbstractContextManager["_Reloading"]):
    """Returned by ``Notifier.reloading()``: sends ``READY=1`` when the block ends, however it ends."""

    def __init__(self, notifier: Notifier) -> None:
        self._notifier = notifier

    def __exit__(self, *exc_info: object) -> None:
        self._notifier.ready()
