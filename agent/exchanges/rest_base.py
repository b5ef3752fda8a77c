"""What the venues' REST adapters share: the client's lifecycle, credentials, malformed-row counting."""

from __future__ import annotations

from agent.config.models import ExchangeConfig
from agent.exchanges.base import ApiCredentials, RestApiStatus
from agent.telemetry.metrics import Metrics
from agent.transport.errors import AuthError
from agent.transport.rest import RestClient


class VenueRestBase:
    """Lifecycle and bookkeeping common to ``BybitRestApi`` and ``BinanceRestApi``."""

    venue = ""

    def __init__(self, exchange: str, config: ExchangeConfig, credentials: ApiCredentials | None,
                 metrics: Metrics) -> None:
        self.exchange = exchange
        self.config = config
        self.status = RestApiStatus()
        self._credentials = credentials
        self._metrics = metrics
        self._client: RestClient  # set by the venue's __init__

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
