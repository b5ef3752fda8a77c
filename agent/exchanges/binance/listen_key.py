"""The one owner of a Binance USDⓈ-M listenKey's life (failure-modes rows 3, 4 and 19).

https://developers.binance.com/docs/derivatives/usds-margined-futures/user-data-streams :
a key lives 60 minutes after its creation or its last keepalive (PUT); a PUT
answered with -1125 means the key is gone; a POST returns the account's active
key (extended by 60 minutes) or a new one.

``ListenKeyManager`` holds the key and nobody else does:

* ``current()`` never returns a missing or known-dead key: it creates one when
  there is none and, when the key was last confirmed more than
  ``revalidate_after_seconds`` ago, confirms it with a PUT first (a reconnect
  always goes through "get a valid key"). Calls are serialised, so two
  connections never create two keys.
* One named task (``{exchange}/listen-key/keepalive``) PUTs every
  ``keepalive_seconds`` (30 min by default, well inside 60). On -1125 it
  creates a new key and signals a rotation; on any other failure it POSTs,
  which returns the same key when it is still active (no rotation needed) or a
  new one (rotation); when that fails too it retries with a growing delay.
* ``on_expired(key)`` handles the ``listenKeyExpired`` event: the key is
  dropped, so the reconnect that follows gets a fresh one. A notice about an
  older key is ignored.

The rotation signal is a callback; the hybrid source wires it to
``ResilientWebSocket.request_rotation`` so the stream moves to the new key
make-before-break.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Protocol

from agent.core.tasks import TaskOwner
from agent.telemetry.metrics import Metrics
from agent.transport.errors import AuthError, ListenKeyNotFound

log = logging.getLogger(__name__)

LISTEN_KEY_VALIDITY_SECONDS = 3600.0


class ListenKeyApi(Protocol):
    """The REST calls the manager needs (``BinanceRestApi`` has them)."""

    async def create_listen_key(self) -> str: ...

    async def keepalive_listen_key(self, key: str) -> str | None: ...

    async def close_listen_key(self, key: str) -> None: ...


class ListenKeyClosed(RuntimeError):
    """``current()`` after ``close()``."""


class ListenKeyManager:
    """Creates, keeps alive, replaces and closes the listenKey of one account."""

    def __init__(self, api: ListenKeyApi, *, exchange: str, keepalive_seconds: float = 1800.0,
                 metrics: Metrics | None = None, on_rotate: Callable[[str], None] | None = None,
                 validity_seconds: float = LISTEN_KEY_VALIDITY_SECONDS, revalidate_after_seconds: float = 60.0,
                 retry_initial_seconds: float = 5.0, retry_max_seconds: float = 60.0,
                 request_timeout_seconds: float = 15.0, clock: Callable[[], float] = time.monotonic) -> None:
        if not 0 < keepalive_seconds < validity_seconds:
            raise ValueError(f"keepalive_seconds must be > 0 and < validity_seconds ({validity_seconds:g}), "
                             f"was {keepalive_seconds:g}")
        if retry_initial_seconds <= 0 or retry_max_seconds < retry_initial_seconds:
            raise ValueError("retry delays must be > 0 with retry_max_seconds >= retry_initial_seconds")
        self._api = api
        self.exchange = exchange
        self.keepalive_seconds = keepalive_seconds
        self.validity_seconds = validity_seconds
        self.revalidate_after_seconds = revalidate_after_seconds
        self._retry_initial = retry_initial_seconds
        self._retry_max = retry_max_seconds
        self._timeout = request_timeout_seconds
        self._clock = clock
        self._on_rotate = on_rotate
        self._metrics = metrics
        self._tasks = TaskOwner(f"{exchange}/listen-key")
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._key: str | None = None
        self._confirmed_mono: float | None = None  # created or kept alive
        self._created_mono: float | None = None
        self._renew_reason: str | None = None  # set when the stream's key is known dead and no new one exists yet
        self._failures = 0
        self._retry_at: float | None = None
        self._closed = False
        self.created = 0
        self.keepalives = 0
        self.rotations = 0
        self.expired_notices = 0
        self.last_error: str | None = None
        if metrics is not None:
            metrics.ws_listen_key_age.labels(exchange).set_function(self._age_for_metric)

    # -- public API ------------------------------------------------------------------------------

    def set_rotation_callback(self, on_rotate: Callable[[str], None] | None) -> None:
        """Who is told (with a reason) that the stream must move to a new key."""
        self._on_rotate = on_rotate

    async def start(self) -> None:
        """Start the keepalive task (idempotent; ``current()`` starts it too)."""
        self._closed = False
        self._ensure_task()

    async def current(self, *, revalidate: bool = False) -> str:
        """A key that is valid as far as anyone can know: created, confirmed or replaced as needed.

        ``revalidate`` confirms the key with a PUT even when it was confirmed
        lately (a reconnect: the last connect may have been refused for it).
        Raises the REST error when no valid key can be had (the caller retries later).
        """
        if self._closed:
            raise ListenKeyClosed(f"{self.exchange}: the listenKey manager is closed")
        async with self._lock:
            if self._key is None or self._age() >= self.validity_seconds * 0.9:
                await self._create("initial" if self.created == 0 else "replaced")
            elif revalidate or self._age() >= self.revalidate_after_seconds:
                await self._confirm_for_connect()
            key = self._key
        assert key is not None
        self._ensure_task()
        return key

    def on_expired(self, listen_key: str | None = None) -> None:
        """``listenKeyExpired`` arrived: forget the key (unless the notice names an older one)."""
        if self._key is None:
            return  # already dropped (the protocol and the stream's ``on_notice`` may both report it)
        if listen_key and listen_key != self._key:
            log.info("listenKeyExpired for a replaced key ignored",
                     extra={"event": "listen_key_expired_stale", "exchange": self.exchange})
            return
        self.expired_notices += 1
        log.warning("listenKey expired", extra={"event": "listen_key_expired", "exchange": self.exchange})
        self._drop_key()

    async def close(self, *, delete: bool = False) -> None:
        """Stop the keepalive task; with ``delete`` also close the key on the venue. Idempotent."""
        self._closed = True
        await self._tasks.cancel_all(self._timeout)
        key, self._key = self._key, None
        self._confirmed_mono = self._created_mono = None
        if delete and key is not None:
            try:
                async with asyncio.timeout(self._timeout):
                    await self._api.close_listen_key(key)
            except Exception as e:  # best effort: it expires by itself within the hour
                log.warning("closing the listenKey failed", extra={"event": "listen_key_close_failed",
                                                                 "exchange": self.exchange, "error": type(e).__name__})

    @property
    def key(self) -> str | None:
        """The key held now (None when there is none); use ``current()`` to connect."""
        return self._key

    @property
    def key_age_seconds(self) -> float | None:
        """Seconds since the key was created or last kept alive (it expires at ``validity_seconds``)."""
        return None if self._key is None or self._confirmed_mono is None else self._age()

    def task_names(self) -> list[str]:
        return self._tasks.names()

    # -- key changes -----------------------------------------------------------------------------

    def _age(self) -> float:
        return self._clock() - self._confirmed_mono if self._confirmed_mono is not None else float("inf")

    def _age_for_metric(self) -> float:
        age = self.key_age_seconds
        return 0.0 if age is None else age

    def _drop_key(self) -> None:
        self._key = None
        self._confirmed_mono = self._created_mono = None
        self._wake.set()

    def _set_key(self, key: str, reason: str) -> bool:
        """Hold ``key`` as confirmed now; returns whether it differs from the key held before."""
        changed = key != self._key
        now = self._clock()
        if changed:
            self._created_mono = now
            log.info("listenKey obtained", extra={"event": "listen_key_obtained", "exchange": self.exchange,
                                                  "reason": reason})
        self._key = key
        self._confirmed_mono = now
        self._failures = 0
        self._retry_at = None
        self.last_error = None
        self._wake.set()
        return changed

    async def _create(self, reason: str) -> bool:
        """POST; returns whether the key changed. The stream's old key, if any, is no longer trusted."""
        async with asyncio.timeout(self._timeout):
            key = await self._api.create_listen_key()
        self.created += 1
        changed = self._set_key(key, reason)
        if self._renew_reason is not None:  # the keepalive had found the stream's key dead
            reason, self._renew_reason = self._renew_reason, None
            self._rotate(reason)
        return changed

    async def _confirm_for_connect(self) -> None:
        """Before a connect with a key not confirmed lately: PUT it; on -1125 create a new one."""
        assert self._key is not None
        try:
            async with asyncio.timeout(self._timeout):
                reported = await self._api.keepalive_listen_key(self._key)
        except ListenKeyNotFound:
            self._drop_key()
            await self._create("not_found")
            return
        except Exception as e:  # not known to be bad: connect with it while it is inside its validity
            self.last_error = f"keepalive: {type(e).__name__}"
            if self._age() >= self.validity_seconds * 0.9:
                raise  # the connect fails, and counts itself
            self._note_auth_refusal(e)
            return
        self.keepalives += 1
        self._set_key(reported or self._key, "keepalive")

    def _rotate(self, reason: str) -> None:
        self.rotations += 1
        log.warning("listenKey replaced; rotating the user data stream",
                    extra={"event": "listen_key_rotation", "exchange": self.exchange, "reason": reason})
        if self._on_rotate is not None:
            try:
                self._on_rotate(reason)
            except Exception:
                log.exception("rotation callback failed", extra={"event": "listen_key_rotation_callback_failed",
                                                                 "exchange": self.exchange})

    # -- keepalive task --------------------------------------------------------------------------

    def _ensure_task(self) -> None:
        if not self._closed and not self._tasks.running("keepalive"):
            self._tasks.spawn("keepalive", self._keepalive_loop())

    def _next_wait(self) -> float | None:
        """Seconds until the loop has work, or None to wait for a key."""
        now = self._clock()
        if self._retry_at is not None:
            return max(0.0, self._retry_at - now)
        if self._renew_reason is not None:
            return 0.0
        if self._key is None or self._confirmed_mono is None:
            return None
        return max(0.0, self._confirmed_mono + self.keepalive_seconds - now)

    async def _keepalive_loop(self) -> None:
        while True:
            self._wake.clear()
            wait = self._next_wait()
            try:
                # Not ``wait_for``: on 3.11 it swallows a cancel that lands as the event fires.
                async with asyncio.timeout(wait):
                    await self._wake.wait()
                continue  # the key changed: recompute the schedule
            except TimeoutError:
                pass
            async with self._lock:
                due = self._next_wait()
                if due is None or due > 0.001:  # the key changed while we waited for the lock
                    continue
                try:
                    await self._keepalive_once()
                except Exception as e:  # the loop outlives every failure; it retries with a growing delay
                    self._failed(e)

    async def _keepalive_once(self) -> None:
        if self._renew_reason is not None or self._key is None:
            await self._create(self._renew_reason or "replaced")
            return
        key = self._key
        try:
            async with asyncio.timeout(self._timeout):
                reported = await self._api.keepalive_listen_key(key)
        except ListenKeyNotFound:
            self._drop_key()
            self._renew_reason = "not_found"
            await self._create("not_found")
            return
        except Exception as e:
            self.last_error = f"keepalive: {type(e).__name__}"
            self._note_auth_refusal(e)
            log.warning("listenKey keepalive failed; asking for the active key",
                        extra={"event": "listen_key_keepalive_failed", "exchange": self.exchange,
                               "error": type(e).__name__})
            if await self._create("keepalive_failed"):
                self._rotate("keepalive_failed")
            return
        self.keepalives += 1
        if self._set_key(reported or key, "keepalive"):
            self._rotate("key_changed")

    def _note_auth_refusal(self, error: Exception) -> None:
        """A listenKey call refused for the API key (-2015, HTTP 401) is an auth failure of the private
        stream even when no connect fails with it (keepalive loop, the PUT before a connect that goes on
        with the still valid key): count it where the auth-failure health check reads. A refusal that
        fails a connect is counted by that connect, as ``auth_rejected``."""
        if isinstance(error, AuthError) and self._metrics is not None:
            self._metrics.ws_connects.labels(self.exchange, "private", "auth_rejected").inc()

    def _failed(self, error: Exception) -> None:
        self._note_auth_refusal(error)
        self._failures += 1
        delay = min(self._retry_max, self._retry_initial * 2 ** (self._failures - 1))
        self._retry_at = self._clock() + delay
        self.last_error = f"{type(error).__name__}"
        log.warning("listenKey renewal failed; retrying", extra={
            "event": "listen_key_renewal_failed", "exchange": self.exchange, "error": type(error).__name__,
            "retry_in_seconds": delay})
