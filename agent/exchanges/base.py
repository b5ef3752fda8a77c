"""What every venue adapter offers the venue-neutral parts of the agent."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from decimal import Decimal
from dataclasses import dataclass, field
from typing import Protocol

from agent.core.observations import MarkPriceObs, PositionObs


@dataclass(frozen=True)
class ApiCredentials:
    """An API key pair. The secret never shows in ``repr`` (logs, tracebacks)."""

    api_key: str
    api_secret: str = field(repr=False)

    def __repr__(self) -> str:
        return f"ApiCredentials(api_key={redact(self.api_key)!r}, api_secret='***')"


def redact(value: str) -> str:
    """Show enough of a key to recognise it, never enough to use it."""
    return value[:4] + "***" if len(value) > 8 else "***"


@dataclass(frozen=True)
class ResolvedEndpoints:
    """The URLs one exchange pipeline talks to, after environment defaults and overrides.

    ``ws_public_url`` is Bybit's full category URL or Binance's routed ``/market`` base.
    """

    rest_url: str
    ws_public_url: str
    ws_private_url: str


@dataclass
class RestApiStatus:
    """What ``/status`` shows of a venue's REST side."""

    clock_offset_ms: float = 0.0
    rate_limit_remaining_ratio: float | None = None
    backoff_until_unix_s: float = 0.0
    last_error: str | None = None  # kept after a success, with its time: the last failure's cause
    last_error_unix_s: float | None = None
    # Rows skipped as malformed in the last position fetch: a snapshot with
    # skipped rows is not complete, so absence from it does not mean flat.
    last_positions_malformed_rows: int = 0
    # Requests the venue refused for their key or signature, ever (the owner may read the secret again).
    auth_failures: int = 0


class VenueRestApi(Protocol):
    """REST access to one account on one venue. Raises ``agent.transport.errors.RestError`` subclasses."""

    venue: str
    status: RestApiStatus

    async def start(self) -> None:
        """Open the HTTP session and measure the server-time offset."""

    async def close(self) -> None:
        """Close the HTTP session; safe to call twice or without ``start``."""

    async def sync_clock(self) -> float:
        """Measure and store the server-time offset; returns it in milliseconds."""

    def set_credentials(self, credentials: ApiCredentials | None) -> None:
        """Sign every later request with ``credentials`` (a rotated key pair)."""

    async def fetch_positions(self) -> list[PositionObs]:
        """A complete snapshot of the account's positions (all pages); flat rows may be omitted."""

    async def fetch_mark_prices(self, symbols: Sequence[str]) -> list[MarkPriceObs]:
        """Mark prices of ``symbols`` (every symbol of the category when empty)."""

    async def tick_sizes(self, symbols: Collection[str] = ()) -> dict[str, Decimal]:
        """Price tick size per symbol (Bybit ``priceFilter.tickSize``, Binance ``PRICE_FILTER.tickSize``),
        cached and refreshed daily; symbols the venue does not list are left out."""
