"""Configuration of the exchange simulator; every field has a default."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from agent.simulator.instruments import DEFAULT_BINANCE_SYMBOLS, DEFAULT_BYBIT_SYMBOLS, SymbolSpec

# Bybit's per-UID, per-endpoint limits (requests per rolling second) for the private
# endpoints served here; /v5/position/list is 50/s on the real venue.
DEFAULT_BYBIT_PRIVATE_LIMITS: Mapping[str, int] = {
    "/v5/position/list": 50,
    "/v5/account/info": 50,
    "/v5/user/query-api": 10,
}


@dataclass(frozen=True, kw_only=True)
class SimulatorConfig:
    """How the simulator behaves.

    Parameters
    ----------
    seed
        Seeds the price walk and the autopilot; ``None`` picks a random seed.
    bybit_api_key, bybit_api_secret, binance_api_key, binance_api_secret
        Credentials the simulator accepts; generated per instance when ``None``.
    bybit_symbols, binance_symbols
        Listed instruments per venue.
    bybit_hedge_symbols
        Bybit symbols that start in hedge mode (positionIdx 1/2); others are one-way.
    binance_dual_side_position
        Binance account-wide hedge mode (LONG/SHORT) instead of BOTH.
    price_tick_interval_seconds
        Period of the mark-price random walk; 0 disables it.
    position_change_interval_seconds
        Period of the autopilot's random open/resize/close; 0 disables it.
    initial_positions_per_venue
        Positions the autopilot opens on each venue at start, so that a fresh
        agent sees ``opened`` events at once (a demo that starts flat shows nothing).
    max_price_step_ratio
        Largest relative mark-price move per tick.
    price_band_ratio
        The walk stays within this ratio of each symbol's start price.
    binance_mark_price_update_interval_seconds
        Binance computes its mark price once a second (``premiumIndex`` ``time`` sits on the
        second): the walk moves Binance prices at most this often, so REST and the ``@markPrice@1s``
        stream show the same computed values, as on the venue. 0 moves them on every walk step.
    autopilot_max_positions_per_venue
        The autopilot opens no more positions than this per venue.
    bybit_private_limits_per_second, bybit_default_private_limit_per_second
        Per-endpoint rolling one-second limits of Bybit private endpoints: overrides of
        ``DEFAULT_BYBIT_PRIVATE_LIMITS``, then the default for paths in neither.
    bybit_ip_limit_requests, bybit_ip_limit_window_seconds, bybit_ip_ban_seconds
        Bybit's IP limit (real: 600 requests per 5 s) and the HTTP 403 ban after it.
    binance_weight_limit_per_minute
        Binance request-weight limit per minute (real: 2400).
    binance_429s_before_ban
        How many HTTP 429 answers a client gets in one minute before the HTTP 418 ban.
    binance_ban_seconds
        Length of the Binance 418 ban.
    listen_key_validity_seconds
        Lifetime of a Binance listenKey after its creation or last keepalive.
    bybit_ws_ticker_interval_seconds
        Push period of Bybit ``tickers.{symbol}`` deltas (real: 100 ms).
    bybit_ws_private_idle_timeout_seconds
        A Bybit private connection that sends no ``{"op":"ping"}`` for this long is cut
        (real: 10 minutes); ``?max_active_time=`` (30 s to 600 s) overrides it per connection.
    bybit_ws_public_args_max_chars
        Budget of the ``args`` subscribed on one Bybit public connection, in characters (real: 21,000).
    binance_ws_mark_price_fast_interval_seconds, binance_ws_mark_price_interval_seconds
        Push periods of ``@markPrice@1s`` (real: 1 s) and ``@markPrice`` (real: 3 s).
    binance_ws_ping_interval_seconds, binance_ws_pong_timeout_seconds
        Binance sends a ping frame this often (real: 3 min) and cuts a connection that has
        not answered a ping with a pong for the timeout (real: 10 min).
    binance_ws_max_incoming_per_second
        Incoming messages (text, ping, pong) per rolling second a Binance connection may send;
        more disconnects it (real: 10).
    binance_ws_max_streams_per_connection
        Streams one Binance connection may hold (real: 1024).
    binance_ws_max_connection_age_seconds
        Every Binance connection is cut at this age (real: 24 h).
    ws_frames_recorded_per_connection
        Sent and received frames each WebSocket connection keeps for inspection (the newest).
    """

    seed: int | None = None
    bybit_api_key: str | None = None
    bybit_api_secret: str | None = None
    binance_api_key: str | None = None
    binance_api_secret: str | None = None
    bybit_symbols: tuple[SymbolSpec, ...] = DEFAULT_BYBIT_SYMBOLS
    binance_symbols: tuple[SymbolSpec, ...] = DEFAULT_BINANCE_SYMBOLS
    bybit_hedge_symbols: tuple[str, ...] = ()
    binance_dual_side_position: bool = False
    price_tick_interval_seconds: float = 0.1
    position_change_interval_seconds: float = 2.0
    initial_positions_per_venue: int = 0
    max_price_step_ratio: float = 0.0004
    price_band_ratio: float = 0.10
    binance_mark_price_update_interval_seconds: float = 1.0
    autopilot_max_positions_per_venue: int = 6
    bybit_private_limits_per_second: Mapping[str, int] = field(default_factory=dict)
    bybit_default_private_limit_per_second: int = 10
    bybit_ip_limit_requests: int = 600
    bybit_ip_limit_window_seconds: float = 5.0
    bybit_ip_ban_seconds: float = 600.0
    binance_weight_limit_per_minute: int = 2400
    binance_429s_before_ban: int = 1
    binance_ban_seconds: float = 120.0
    listen_key_validity_seconds: float = 3600.0
    bybit_ws_ticker_interval_seconds: float = 0.1
    bybit_ws_private_idle_timeout_seconds: float = 600.0
    bybit_ws_public_args_max_chars: int = 21_000
    binance_ws_mark_price_fast_interval_seconds: float = 1.0
    binance_ws_mark_price_interval_seconds: float = 3.0
    binance_ws_ping_interval_seconds: float = 180.0
    binance_ws_pong_timeout_seconds: float = 600.0
    binance_ws_max_incoming_per_second: int = 10
    binance_ws_max_streams_per_connection: int = 1024
    binance_ws_max_connection_age_seconds: float = 86_400.0
    ws_frames_recorded_per_connection: int = 256

    def __post_init__(self) -> None:
        for name in ("price_tick_interval_seconds", "position_change_interval_seconds",
                     "binance_mark_price_update_interval_seconds"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, was {getattr(self, name)}")
        positive = ("max_price_step_ratio", "price_band_ratio", "autopilot_max_positions_per_venue",
                    "bybit_default_private_limit_per_second", "bybit_ip_limit_requests",
                    "bybit_ip_limit_window_seconds", "bybit_ip_ban_seconds",
                    "binance_weight_limit_per_minute", "binance_ban_seconds",
                    "listen_key_validity_seconds", "bybit_ws_ticker_interval_seconds",
                    "bybit_ws_private_idle_timeout_seconds", "bybit_ws_public_args_max_chars",
                    "binance_ws_mark_price_fast_interval_seconds", "binance_ws_mark_price_interval_seconds",
                    "binance_ws_ping_interval_seconds", "binance_ws_pong_timeout_seconds",
                    "binance_ws_max_incoming_per_second", "binance_ws_max_streams_per_connection",
                    "binance_ws_max_connection_age_seconds")
        for name in positive:
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0, was {getattr(self, name)}")
        if self.initial_positions_per_venue < 0:
            raise ValueError(f"initial_positions_per_venue must be >= 0, was {self.initial_positions_per_venue}")
        if self.ws_frames_recorded_per_connection < 0:
            raise ValueError("ws_frames_recorded_per_connection must be >= 0, "
                             f"was {self.ws_frames_recorded_per_connection}")
        if self.binance_429s_before_ban < 0:
            raise ValueError(f"binance_429s_before_ban must be >= 0, was {self.binance_429s_before_ban}")
        for venue, specs in (("bybit", self.bybit_symbols), ("binance", self.binance_symbols)):
            names = [s.symbol for s in specs]
            if not names or len(set(names)) != len(names):
                raise ValueError(f"{venue}_symbols must be non-empty and unique, was {names}")
        unknown = set(self.bybit_hedge_symbols) - {s.symbol for s in self.bybit_symbols}
        if unknown:
            raise ValueError(f"bybit_hedge_symbols names unlisted symbols: {sorted(unknown)}")

    def symbols(self, venue: str) -> tuple[SymbolSpec, ...]:
        """The instruments of one venue."""
        if venue == "bybit":
            return self.bybit_symbols
        if venue == "binance":
            return self.binance_symbols
        raise ValueError(f"unknown venue {venue!r}")

    def bybit_limit_per_second(self, path: str) -> int:
        """The per-endpoint limit of a Bybit private path."""
        if path in self.bybit_private_limits_per_second:
            return self.bybit_private_limits_per_second[path]
        return DEFAULT_BYBIT_PRIVATE_LIMITS.get(path, self.bybit_default_private_limit_per_second)
