"""A venue-neutral REST client: one aiohttp session per exchange.

Every request runs under a timeout, through the back-off gate and the
rate-limit budget, and is counted in ``feedagent_rest_requests_total`` with
its outcome. The venue adapter supplies what is venue-specific: how to sign
(``sign``), how to read the rate-limit headers (``RateLimitRule``), how to
fetch server time (``ServerTimeEndpoint``) and how to turn a response into a
value or a ``RestError`` (``decode``). API keys, secrets and signatures never
reach an exception message, a log line or a metric label: the signed query is
scrubbed from transport errors, and decode functions scrub venue messages.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

import aiohttp
from yarl import URL

from agent.telemetry import tracing
from agent.transport.backoff import BackoffGate
from agent.transport.clock import SYSTEM_CLOCK, Clock, ServerClock
from agent.transport.errors import (
    AuthError, Banned, ClockSkew, ExchangeUnavailable, MalformedResponse, RateLimited, RestError,
)
from agent.transport.ratelimit import RateLimitBudget, RateLimitRule

if TYPE_CHECKING:  # transport sits below the adapters; it only fills in their status object
    from agent.exchanges.base import RestApiStatus
    from agent.telemetry.metrics import Metrics

log = logging.getLogger(__name__)

T = TypeVar("T")

_MAX_MESSAGE_CHARS = 200


@dataclass(frozen=True)
class RestResponse:
    """What came back: the raw body plus the timing the venue decoders may need."""

    endpoint: str
    status: int
    headers: Mapping[str, str]
    body: bytes
    sent_wall_ms: float
    rtt_ms: float
    received_server_ms: float


Signer = Callable[[int], tuple[str, Mapping[str, str]]]
"""``server_now_ms -> (query string, headers)``; called right before each send, so a retry is re-signed."""

Decoder = Callable[[RestResponse], T]
"""Turns a response into a value, or raises a ``RestError`` (msgspec errors become ``MalformedResponse``)."""


@dataclass(frozen=True)
class ServerTimeEndpoint:
    """The venue's public server-time call; ``decode`` returns server time in ms."""

    path: str
    decode: Callable[[RestResponse], int]


def retry_after_seconds(headers: Mapping[str, str]) -> float | None:
    """The ``Retry-After`` header in seconds, when present as a number (the HTTP-date form is ignored)."""
    value = headers.get("Retry-After")
    if value is None:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        return None
    return seconds if math.isfinite(seconds) and seconds >= 0 else None


def scrub(text: str, secrets: Iterable[str]) -> str:
    """``text`` without any of ``secrets``, cut to a length fit for a log line or an error."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    if len(text) > _MAX_MESSAGE_CHARS:
        text = text[:_MAX_MESSAGE_CHARS] + "…"
    return text


class RestClient:
    """HTTP access to one exchange, with timeouts, back-off, rate-limit budget and clock offset."""

    def __init__(self, *, exchange: str, base_url: str, metrics: Metrics, status: RestApiStatus,
                 timeout_seconds: float, server_time: ServerTimeEndpoint,
                 rate_limit: RateLimitRule | None = None, resync_interval_seconds: float = 300.0,
                 clock: Clock = SYSTEM_CLOCK, secrets: Iterable[str] = ()) -> None:
        self.exchange = exchange
        self.status = status
        self.server_clock = ServerClock(clock)
        self._base_url = base_url.rstrip("/")
        base = URL(self._base_url)
        self._server_address, self._server_port = base.host or "", base.port or 0
        self._metrics = metrics
        self._timeout_s = timeout_seconds
        self._server_time = server_time
        self._budget = RateLimitBudget(rate_limit) if rate_limit is not None else None
        self._resync_interval_s = resync_interval_seconds
        self._clock = clock
        self._gate = BackoffGate(clock)
        self._secrets = tuple(s for s in secrets if s)
        self._session: aiohttp.ClientSession | None = None
        self._last_sync_attempt_mono_s: float | None = None

    # -- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        """Open the session and try one clock sync; a failed sync is retried lazily."""
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self._timeout_s))
        try:
            await self.sync_clock()
        except RestError as e:
            log.warning("clock sync failed at start", extra={"event": "clock_sync_failed", "exchange": self.exchange,
                                                             "when": "start", "error": str(e)})

    async def close(self) -> None:
        """Close the session; safe twice and before ``start``."""
        session, self._session = self._session, None
        if session is not None and not session.closed:
            await session.close()

    def scrub_also(self, secrets: Iterable[str]) -> None:
        """Keep ``secrets`` out of errors too (a rotated key pair: the old ones stay hidden as well)."""
        self._secrets = tuple(dict.fromkeys((*self._secrets, *(s for s in secrets if s))))

    # -- clock -----------------------------------------------------------------------------------

    async def sync_clock(self) -> float:
        """Measure server time minus local time (RTT midpoint); returns it in ms."""
        self._last_sync_attempt_mono_s = self._clock.monotonic_s()
        decode = self._server_time.decode
        server_ms, sent_wall_ms, rtt_ms = await self._send(
            "GET", self._server_time.path, endpoint=f"GET {self._server_time.path}",
            decode=lambda r: (decode(r), r.sent_wall_ms, r.rtt_ms))
        offset_ms = self.server_clock.record(server_ms, sent_wall_ms, rtt_ms)
        self.status.clock_offset_ms = offset_ms
        self._metrics.clock_offset.labels(self.exchange).set(offset_ms / 1000.0)
        return offset_ms

    def _sync_due(self) -> bool:
        last = self._last_sync_attempt_mono_s
        return last is None or self._clock.monotonic_s() - last >= self._resync_interval_s

    # -- requests --------------------------------------------------------------------------------

    async def request(self, method: str, path: str, *, decode: Decoder[T], query: str = "",
                      sign: Signer | None = None, headers: Mapping[str, str] | None = None,
                      data: bytes | None = None, endpoint: str | None = None) -> T:
        """Send one request and decode it.

        A signed request whose timestamp the venue refuses (``ClockSkew``) is
        retried once after a fresh clock sync. ``query`` must already be
        percent-encoded: it is sent byte for byte as signed.
        """
        endpoint = endpoint or f"{method} {path}"
        if sign is not None and self._sync_due():
            try:
                await self.sync_clock()
            except RestError as e:
                log.warning("periodic clock sync failed", extra={
                    "event": "clock_sync_failed", "exchange": self.exchange, "when": "periodic", "error": str(e)})
        send = functools.partial(self._send, method, path, endpoint=endpoint, decode=decode, query=query,
                                 sign=sign, headers=headers, data=data)
        try:
            return await send()
        except ClockSkew:
            if sign is None:
                raise
            log.warning("timestamp refused; resyncing clock and retrying once",
                        extra={"event": "timestamp_refused", "exchange": self.exchange, "endpoint": endpoint})
            await self.sync_clock()
            return await send()

    async def _send(self, method: str, path: str, *, endpoint: str, decode: Decoder[T], query: str = "",
                    sign: Signer | None = None, headers: Mapping[str, str] | None = None,
                    data: bytes | None = None) -> T:
        # HTTP client span (semconv names); never the URL's query, which carries the signature.
        with tracing.start_span(endpoint, kind=tracing.SpanKind.CLIENT, attributes={
                "http.request.method": method, "server.address": self._server_address,
                "server.port": self._server_port, "feedagent.exchange": self.exchange,
                "feedagent.rest.endpoint": endpoint}):
            self._hold_if_needed()
            await self._wait_for_budget(endpoint)
            all_headers = dict(headers or {})
            if sign is not None:
                query, signed_headers = sign(self.server_clock.server_now_ms())
                all_headers.update(signed_headers)
            response = await self._exchange_bytes(method, path, endpoint, query, all_headers, data)
            try:
                value = self._decode(response, decode)
            except RestError as e:
                self._finish(response, e)
                raise
            self._finish(response, None)
            return value

    async def _exchange_bytes(self, method: str, path: str, endpoint: str, query: str,
                              headers: Mapping[str, str], data: bytes | None) -> RestResponse:
        session = self._session
        if session is None or session.closed:
            raise RestError(f"{self.exchange} {endpoint}: the REST client is not started")
        url = URL(self._base_url + path + ("?" + query if query else ""), encoded=True)
        sent_wall_ms = self._clock.wall_s() * 1000.0
        started = self._clock.monotonic_s()
        try:
            async with asyncio.timeout(self._timeout_s):
                async with session.request(method, url, headers=headers, data=data,
                                           allow_redirects=False) as resp:
                    body = await resp.read()
                    status, resp_headers = resp.status, resp.headers
        except (aiohttp.ClientError, TimeoutError, OSError) as e:
            rtt_ms = (self._clock.monotonic_s() - started) * 1000.0
            # Transport errors can quote the URL, and the URL carries the signature.
            detail = scrub(str(e), (*self._secrets, query)) if str(e) else ""
            err = ExchangeUnavailable(
                f"{self.exchange} {endpoint}: {type(e).__name__}" + (f": {detail}" if detail else ""))
            self._record(endpoint, rtt_ms / 1000.0, err)
            raise err from None
        rtt_ms = (self._clock.monotonic_s() - started) * 1000.0
        return RestResponse(endpoint=endpoint, status=status, headers=resp_headers, body=body,
                            sent_wall_ms=sent_wall_ms, rtt_ms=rtt_ms,
                            received_server_ms=self.server_clock.server_now_ms())

    def _decode(self, response: RestResponse, decode: Decoder[T]) -> T:
        if self._budget is not None:
            self._budget.record(response.endpoint, response.headers, response.received_server_ms)
            ratio = self._budget.remaining_ratio(response.received_server_ms)
            self.status.rate_limit_remaining_ratio = ratio
            if ratio is not None:
                self._metrics.rest_rate_limit_remaining_ratio.labels(self.exchange).set(ratio)
        if response.status >= 500:
            raise ExchangeUnavailable(f"{self.exchange} {response.endpoint}: HTTP {response.status}",
                                      status=response.status)
        try:
            return decode(response)
        except ValueError as e:  # msgspec, json and unicode decode errors are all ValueErrors
            raise MalformedResponse(f"{self.exchange} {response.endpoint}: undecodable body "
                                    f"(HTTP {response.status}): {scrub(str(e), self._secrets)}",
                                    status=response.status) from None

    def _finish(self, response: RestResponse, error: RestError | None) -> None:
        self._record(response.endpoint, response.rtt_ms / 1000.0, error, response.status)
        if isinstance(error, (RateLimited, Banned)) and error.retry_after_seconds > 0:
            until = self._gate.close(error, error.retry_after_seconds)
            self._show_backoff(until)
            log.warning("venue refused calls; holding REST calls back",
                        extra={"event": "rest_calls_held", "exchange": self.exchange, "endpoint": response.endpoint,
                               "outcome": error.outcome, "until_unix_s": until})

    def _record(self, endpoint: str, duration_s: float, error: RestError | None,
                status: int | None = None) -> None:
        outcome = "ok" if error is None else error.outcome
        span = tracing.current_span()  # the request's span (a no-op one while tracing is off)
        if status is not None:
            span.set_attribute("http.response.status_code", status)
        span.set_attribute("feedagent.rest.outcome", outcome)
        if error is not None:
            tracing.set_error(span, outcome)  # before the observation: its exemplar needs the kept trace
        self._metrics.rest_requests.labels(self.exchange, endpoint, outcome).inc()
        self._metrics.rest_request_duration.labels(self.exchange, endpoint).observe(
            duration_s, exemplar=tracing.exemplar())
        if error is not None:  # a success does not erase it: compare last_error_unix_s with the last success
            self.status.last_error = f"{type(error).__name__}: {error}"
            self.status.last_error_unix_s = self._clock.wall_s()
        if isinstance(error, AuthError):
            self.status.auth_failures += 1

    # -- back-off and budget ---------------------------------------------------------------------

    def _hold_if_needed(self) -> None:
        try:
            self._gate.check()
        except RestError as e:
            self._metrics.rest_requests_held.labels(self.exchange, e.outcome).inc()
            raise
        if self.status.backoff_until_unix_s:
            self._show_backoff(0.0)

    def _show_backoff(self, until_unix_s: float) -> None:
        self.status.backoff_until_unix_s = until_unix_s
        self._metrics.rest_backoff_until.labels(self.exchange).set(until_unix_s)

    async def _wait_for_budget(self, endpoint: str) -> None:
        if self._budget is None:
            return
        wait_s = self._budget.seconds_until_allowed(endpoint, self.server_clock.server_now_ms())
        if wait_s <= 0:
            return
        if wait_s <= self._budget.rule.max_wait_seconds:
            await asyncio.sleep(wait_s)
            return
        self._metrics.rest_requests_held.labels(self.exchange, "budget").inc()
        raise RateLimited(f"{self.exchange} {endpoint}: rate-limit budget spent; refills in {wait_s:.1f}s",
                          retry_after_seconds=wait_s)

    @property
    def backoff_remaining_seconds(self) -> float:
        """Seconds until calls are allowed again after a venue refusal (0 when allowed)."""
        return self._gate.remaining_s()
