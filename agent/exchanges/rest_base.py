"""What the venues' REST adapters share: the client's lifecycle, credentials, malformed-row counting,
and the cached tick sizes."""

from __future__ import annotations

import logging
from collections.abc import Collection
from decimal import Decimal

from agent.config.models import ExchangeConfig
from agent.exchanges.base import ApiCredentials, RestApiStatus
from agent.telemetry.metrics import Metrics
from agent.transport.clock import SYSTEM_CLOCK, Clock
from agent.transport.errors import AuthError, RestError
from agent.transport.rest import RestClient

log = logging.getLogger("agent.exchanges")

#: Tick sizes change rarely (a venue announces them): fetch once, then once a day.
TICK_SIZES_REFRESH_SECONDS = 86_400.0
#: A symbol the cache does not know (newly followed) triggers a fetch, at most this often.
TICK_SIZES_MISSING_RETRY_SECONDS = 300.0


class VenueRestBase:
    """Lifecycle and bookkeeping common to ``BybitRestApi`` and ``BinanceRestApi``."""

    venue = ""

    def __init__(self, exchange: str, config: ExchangeConfig, credentials: ApiCredentials | None,
                 metrics: Metrics, clock: Clock = SYSTEM_CLOCK) -> None:
        self.exchange = exchange
        self.config = config
        self.status = RestApiStatus()
        self._credentials = credentials
        self._metrics = metrics
        self._clock = clock
        self._client: RestClient  # set by the venue's __init__
        self._ticks: dict[str, Decimal] = {}
        self._ticks_fetched_mono_s: float | None = None
        self._ticks_tried_mono_s: float | None = None

    @property
    def client(self) -> RestClient:
        """The underlying REST client (clock, back-off state)."""
        return self._client

    async def start(self) -> None:
        """Open the HTTP session and measure the server-time offset."""
        await self._client.start()

    async def close(self) -> None:
        """Close the HTTP session; safe to call twice or without ``start``."""
        await self._client.close()

    async def sync_clock(self) -> float:
        """Measure and store the server-time offset; returns it in milliseconds."""
        return await self._client.sync_clock()

    def set_credentials(self, credentials: ApiCredentials | None) -> None:
        """Sign every later request with ``credentials`` (a rotated key pair); errors hide both pairs."""
        self._credentials = credentials
        self._client.scrub_also(self._secrets())

    async def tick_sizes(self, symbols: Collection[str] = ()) -> dict[str, Decimal]:
        """The price tick size of ``symbols`` (every listed symbol when empty), from a cache.

        The venue's instrument list is fetched on first use, again after
        ``TICK_SIZES_REFRESH_SECONDS``, and when a requested symbol is not in the cache
        (at most every ``TICK_SIZES_MISSING_RETRY_SECONDS``). A failed refresh keeps the
        cached sizes; with nothing cached it raises the ``RestError``. Symbols the venue
        does not list are left out.
        """
        now = self._clock.monotonic_s()
        fetched, tried = self._ticks_fetched_mono_s, self._ticks_tried_mono_s
        stale = fetched is None or now - fetched >= TICK_SIZES_REFRESH_SECONDS
        missing = any(s not in self._ticks for s in symbols)
        retry = tried is None or now - tried >= TICK_SIZES_MISSING_RETRY_SECONDS
        if stale and (fetched is None or retry) or missing and retry:
            self._ticks_tried_mono_s = now
            try:
                self._ticks = await self._fetch_tick_sizes()
                self._ticks_fetched_mono_s = now
            except RestError as e:
                if not self._ticks:
                    raise
                log.warning("tick sizes not refreshed; keeping the cached ones", extra={
                    "event": "tick_sizes_refresh_failed", "exchange": self.exchange, "error": str(e)})
        wanted = symbols or self._ticks
        return {s: self._ticks[s] for s in wanted if s in self._ticks}

    async def _fetch_tick_sizes(self) -> dict[str, Decimal]:
        """Every listed symbol's tick size, from the venue (one call or all pages)."""
        raise NotImplementedError

    def _secrets(self) -> tuple[str, ...]:
        creds = self._credentials
        return () if creds is None else (creds.api_key, creds.api_secret)

    def _require_credentials(self, what: str) -> ApiCredentials:
        if self._credentials is None:
            raise AuthError(f"{self.exchange}: {what} needs API credentials, and none are configured "
                            f"(set exchanges.{self.exchange}.credentials)")
        return self._credentials

    def _count_malformed(self, rows: int) -> None:
        if rows:
            self._metrics.messages_malformed.labels(self.exchange, "rest").inc(rows)
