"""Errors of the REST transport, by what the caller should do about them."""

from __future__ import annotations


class RestError(Exception):
    """A REST call failed. ``retry_after_seconds`` is how long to leave the venue alone."""

    outcome = "error"

    def __init__(self, message: str, *, status: int | None = None, code: int | None = None,
                 retry_after_seconds: float = 0.0) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.retry_after_seconds = retry_after_seconds


class RateLimited(RestError):
    """The venue asked us to slow down (Bybit retCode 10006 / HTTP 429, Binance 429)."""

    outcome = "rate_limited"


class Banned(RestError):
    """The IP is banned (Binance 418, Bybit HTTP 403): no request until the ban ends."""

    outcome = "banned"


class AuthError(RestError):
    """The key, signature or permissions were refused; retrying will not help."""

    outcome = "auth_error"


class ClockSkew(RestError):
    """The request timestamp fell outside the receive window (Bybit 10002, Binance -1021)."""

    outcome = "clock_skew"


class ExchangeUnavailable(RestError):
    """Transport failure, timeout or 5xx: retry later with backoff."""

    outcome = "unavailable"


class MalformedResponse(RestError):
    """The response could not be decoded into what the endpoint promises."""

    outcome = "malformed"


class ListenKeyNotFound(RestError):
    """Binance -1125: the listenKey is gone (expired or closed); create a new one and reconnect."""

    outcome = "listen_key_not_found"
