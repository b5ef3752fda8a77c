"""One dedicated daemon thread per sink (or spool) for blocking I/O, off the event loop.

Why not ``asyncio.to_thread``: a write to a pipe nobody reads blocks forever, and a
thread of the loop's default executor that never returns keeps ``asyncio.run`` (and
so the process) from exiting. A daemon thread of our own does not, and since jobs run
one at a time in submission order, writes keep their order without extra locking.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

log = logging.getLogger("agent.sinks")

T = TypeVar("T")

_Job = tuple[Callable[..., Any], tuple[Any, ...], asyncio.AbstractEventLoop | None, "asyncio.Future[Any] | None"]


class WorkerThread:
    """Runs blocking calls one at a time, in the order they were submitted, on its own daemon thread."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._closed = False

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` on the thread and return its result (cancelling the caller does not stop it)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._put((fn, args, loop, future))
        return await future

    def submit(self, fn: Callable[..., Any], *args: Any) -> None:
        """Queue ``fn(*args)`` without waiting; a failure is logged, since nobody awaits it."""
        self._put((fn, args, None, None))

    def close(self) -> None:
        """Let the thread end after the jobs already queued; safe to call twice."""
        if not self._closed and self._thread is not None:
            self._jobs.put(None)
        self._closed = True

    def _put(self, job: _Job) -> None:
        if self._closed:
            raise RuntimeError(f"worker thread {self.name} is closed")
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name=self.name, daemon=True)
            self._thread.start()
        self._jobs.put(job)

    def _loop(self) -> None:
        while (job := self._jobs.get()) is not None:
            fn, args, loop, future = job
            try:
                result = fn(*args)
            except Exception as exc:  # handed to the awaiting coroutine, or logged when there is none
                if loop is None or future is None:
                    log.exception("background sink job failed", extra={"event": "sink_job_failed",
                                                                       "thread": self.name})
                else:
                    _resolve(loop, future, None, exc)
                continue
            if loop is not None and future is not None:
                _resolve(loop, future, result, None)


def _resolve(loop: asyncio.AbstractEventLoop, future: asyncio.Future[Any], result: Any,
             exc: BaseException | None) -> None:
    try:
        loop.call_soon_threadsafe(_set_outcome, future, result, exc)
    except RuntimeError:  # the loop is closed: nobody is left to tell
        pass


def _set_outcome(future: asyncio.Future[Any], result: Any, exc: BaseException | None) -> None:
    if future.done():  # the caller was cancelled meanwhile
        return
    if exc is not None:
        future.set_exception(exc)
    else:
        future.set_result(result)
