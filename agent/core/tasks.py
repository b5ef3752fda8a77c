"""Named, tracked asyncio tasks cancelled with a timeout (one owner per resource).

``spawn_supervised`` is for the loops that must outlive their own bugs (a
stream's consumer): a crash is logged, counted by the caller's ``on_restart``
and followed by a fresh run after a short, capped, doubling delay. Bad input
is refused at the parse edge; this is the net under everything else.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any

from agent.telemetry.tracing import detached_context

log = logging.getLogger("agent.tasks")

RESTART_INITIAL_DELAY_SECONDS = 0.1
RESTART_MAX_DELAY_SECONDS = 5.0
# A run that lasted this long was healthy: its crash starts the delays from the beginning again.
RESTART_RESET_AFTER_SECONDS = 60.0


def restart_delay_seconds(crashes_in_a_row: int, initial_seconds: float = RESTART_INITIAL_DELAY_SECONDS,
                          max_seconds: float = RESTART_MAX_DELAY_SECONDS) -> float:
    """How long to wait before restarting after the ``crashes_in_a_row``-th crash (1-based): doubling, capped.

    No jitter: one task restarts, there is no herd to spread.
    """
    doublings = min(max(crashes_in_a_row, 1) - 1, 32)  # 2**32 x any sane initial is past any cap
    return min(max_seconds, initial_seconds * 2 ** doublings)


class TaskOwner:
    """Creates named tasks, logs their crashes, and cancels them all on ``cancel_all``."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self._tasks: set[asyncio.Task[Any]] = set()

    def spawn(self, name: str, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """Start ``coro`` as task ``prefix/name``; it starts its own traces (never inherits the caller's span)."""
        task = asyncio.create_task(coro, name=f"{self.prefix}/{name}", context=detached_context())
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def spawn_supervised(self, name: str, factory: Callable[[], Coroutine[Any, Any, Any]], *,
                         on_restart: Callable[[], object] | None = None,
                         initial_delay_seconds: float = RESTART_INITIAL_DELAY_SECONDS,
                         max_delay_seconds: float = RESTART_MAX_DELAY_SECONDS,
                         reset_after_seconds: float = RESTART_RESET_AFTER_SECONDS) -> asyncio.Task[Any]:
        """Start ``factory()`` as task ``prefix/name`` and run a fresh one whenever it raises.

        Each crash is logged with its traceback and reported to ``on_restart``
        (a metric's ``inc``); the restart waits ``restart_delay_seconds`` of
        the crashes in a row. The task ends when a run returns, and on cancel
        (``cancel_all``) like any other.
        """
        return self.spawn(name, self._supervise(name, factory, on_restart, initial_delay_seconds,
                                                max_delay_seconds, reset_after_seconds))

    async def _supervise(self, name: str, factory: Callable[[], Coroutine[Any, Any, Any]],
                         on_restart: Callable[[], object] | None, initial_delay_seconds: float,
                         max_delay_seconds: float, reset_after_seconds: float) -> Any:
        loop = asyncio.get_running_loop()
        crashes = 0
        while True:
            started = loop.time()
            try:
                return await factory()
            except Exception as exc:  # CancelledError is not an Exception: cancel_all still ends the loop
                crashes = 1 if loop.time() - started >= reset_after_seconds else crashes + 1
                log.error("task crashed; restarting it", exc_info=exc, extra={
                    "event": "task_restarted", "task": f"{self.prefix}/{name}", "crashes_in_a_row": crashes})
            if on_restart is not None:
                try:
                    on_restart()
                except Exception:  # a broken counter must not stop the restarts it counts
                    log.exception("restart callback failed", extra={"event": "task_restart_callback_failed",
                                                                     "task": f"{self.prefix}/{name}"})
            await asyncio.sleep(restart_delay_seconds(crashes, initial_delay_seconds, max_delay_seconds))

    def running(self, name: str) -> bool:
        """Whether a task of that name is still running."""
        full = f"{self.prefix}/{name}"
        return any(t.get_name() == full and not t.done() for t in self._tasks)

    def names(self) -> list[str]:
        """Names of the tasks still running."""
        return sorted(t.get_name() for t in self._tasks if not t.done())

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            log.error("task crashed", exc_info=exc, extra={"event": "task_crashed", "task": task.get_name()})

    async def cancel_all(self, timeout_seconds: float = 5.0) -> None:
        """Cancel every task and wait for them, at most ``timeout_seconds``."""
        tasks = [t for t in self._tasks if not t.done()]
        for task in tasks:
            task.cancel()
        if not tasks:
            return
        done, pending = await asyncio.wait(tasks, timeout=timeout_seconds)
        if pending:
            log.error("tasks did not stop in time", extra={"event": "task_cancel_timeout",
                                                           "tasks": sorted(t.get_name() for t in pending)})
