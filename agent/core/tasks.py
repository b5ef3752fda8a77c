"""Named, tracked asyncio tasks cancelled with a timeout (one owner per resource)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

from agent.telemetry.tracing import detached_context

log = logging.getLogger("agent.tasks")


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
