"""Helpers shared by the venues' pure parse functions: the one place where wire values are judged.

Numbers stay the strings the exchange sent; these helpers check that a string
is a plain decimal within the bounds below, turn ``""`` into None, check that a
timestamp is a plausible epoch time, decode JSON without ever letting deep
nesting raise ``RecursionError``, and decode a list of raw rows one by one, so
one malformed row is counted and skipped instead of failing the batch.

Why bounds: a value that parses as a Decimal can still break the arithmetic
downstream. ``1e999999`` is a finite Decimal, but ``(mark - entry) * size``
overflows the default context (Emax 999999) and raises; ``0e999999`` formats
as a million zeros. Every price, size, PnL, rate
and leverage therefore passes ``to_decimal`` at the edge, for both venues,
REST and WebSocket alike.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from decimal import Decimal, InvalidOperation
from typing import Any, Generic, Protocol, TypeVar

import msgspec

R = TypeVar("R")
O = TypeVar("O")
T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)

# -- bounds (one place for both venues) ------------------------------------------------------------

MAX_DECIMAL_CHARS = 64
"""Longest number text accepted; real prices and sizes have under 25 characters."""
MAX_ABS_DECIMAL = Decimal("1e15")
"""Exclusive bound on ``|value|`` of every price, size, PnL, rate and leverage. Bitcoin at 1e5 USD leaves ten
orders of magnitude; the product of two such values keeps far inside the default context."""
MIN_DECIMAL_EXPONENT = -30
"""At most 30 digits after the point, far more than venues send; also bounds the exponent of a zero."""
MAX_DECIMAL_EXPONENT = 15
"""Largest exponent accepted: with ``MAX_ABS_DECIMAL`` it only matters for a zero (``0e999999``)."""
MIN_EPOCH_MS = 1_420_070_400_000
"""2015-01-01T00:00:00Z: an exchange time before it is not a real one (both venues' APIs are younger)."""
MAX_EPOCH_MS = 4_102_444_800_000
"""2100-01-01T00:00:00Z: an exchange time after it is garbage, not clock skew (that is ``TimestampCheck``'s job)."""

# ASCII digits only: Decimal() also takes "1_000", "١٢" and " 1 ", which must not reach the event stream.
_DECIMAL_TEXT = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")


class MalformedRow(ValueError):
    """One row of a response cannot be turned into an observation."""


class Decoder(Protocol[T_co]):
    """What the parse functions need of a decoder (``BoundedDecoder``, ``msgspec.json.Decoder``)."""

    def decode(self, data: Any) -> T_co: ...


class BoundedDecoder(Generic[T]):
    """A ``msgspec.json.Decoder`` whose nesting too deep for it is a ``msgspec.DecodeError``.

    msgspec (like ``json``) bounds nesting by the interpreter's recursion limit
    (about a thousand levels) and raises ``RecursionError`` past it; real frames
    nest fewer than ten levels. Turned into a ``DecodeError`` (a ``ValueError``)
    the frame or response is malformed like any other broken JSON, and every
    existing handler counts it instead of letting it end a task.
    """

    __slots__ = ("_decoder",)

    def __init__(self, type_: Any) -> None:
        self._decoder: msgspec.json.Decoder[T] = msgspec.json.Decoder(type_)

    def decode(self, data: Any) -> T:
        """``decoder.decode(data)``; raises ``msgspec.DecodeError``/``ValidationError`` only."""
        try:
            return self._decoder.decode(data)
        except RecursionError:
            raise msgspec.DecodeError("JSON is nested too deeply") from None


def optional_decimal(value: str | None, field: str) -> str | None:
    """The decimal text as sent, ``None`` for ``""``/missing; junk raises ``MalformedRow``."""
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    to_decimal(text, field)
    return text


def required_decimal(value: str | None, field: str) -> str:
    """Like ``optional_decimal`` but a blank value is malformed too."""
    text = optional_decimal(value, field)
    if text is None:
        raise MalformedRow(f"{field} is missing or empty")
    return text


def positive_decimal(value: str | None, field: str) -> Decimal:
    """A required decimal that must be > 0 (a tick size, a step), as ``Decimal``; else ``MalformedRow``."""
    number = to_decimal(required_decimal(value, field), field)
    if number <= 0:
        raise MalformedRow(f"{field} is not positive: {value!r}")
    return number


def to_decimal(text: str, field: str) -> Decimal:
    """``Decimal(text)`` of a plain decimal within the bounds above; anything else raises ``MalformedRow``.

    Refuses junk, NaN, sNaN, infinities, ``|x| >= MAX_ABS_DECIMAL`` and an
    exponent outside ``MIN_DECIMAL_EXPONENT..MAX_DECIMAL_EXPONENT``.
    """
    if len(text) > MAX_DECIMAL_CHARS:
        raise MalformedRow(f"{field} is {len(text)} characters long (at most {MAX_DECIMAL_CHARS})")
    if _DECIMAL_TEXT.fullmatch(text) is None:  # also refuses NaN, sNaN and Infinity
        raise MalformedRow(f"{field} is not a decimal number: {text[:40]!r}")
    try:
        number = Decimal(text)
    except (InvalidOperation, ValueError):
        raise MalformedRow(f"{field} is not a number: {text[:40]!r}") from None
    exponent = number.as_tuple().exponent
    if not isinstance(exponent, int) or not MIN_DECIMAL_EXPONENT <= exponent <= MAX_DECIMAL_EXPONENT:
        raise MalformedRow(f"{field} has an exponent out of range: {text[:40]!r}")
    if abs(number) >= MAX_ABS_DECIMAL:
        raise MalformedRow(f"{field} is out of range (|x| < {MAX_ABS_DECIMAL:g}): {text[:40]!r}")
    return number


def optional_ms(value: str | int | None) -> int | None:
    """A positive integer sent as int or string; ``""``, 0 and junk give None.

    For sequence numbers (Bybit ``cs``) and times read leniently on purpose
    (``listenKeyExpired``). Exchange times that go on an observation go
    through ``optional_epoch_ms``, which refuses the implausible.
    """
    if value is None or value == "":
        return None
    try:
        ms = int(value)
    except (TypeError, ValueError):
        return None
    return ms if ms > 0 else None


def optional_epoch_ms(value: str | int | None, field: str) -> int | None:
    """An exchange time in Unix ms, sent as int or digit string; ``""``, None and 0 mean unknown (None).

    Anything else outside ``MIN_EPOCH_MS..MAX_EPOCH_MS`` (seconds instead of
    ms, a negative or absurd number, junk) raises ``MalformedRow``: a frame
    that carries it is not to be trusted with the rest of its fields either.
    """
    if value is None or value == "" or value == 0:
        return None
    if isinstance(value, bool):
        raise MalformedRow(f"{field} is not a timestamp: {value!r}")
    if isinstance(value, str):
        text = value.strip()
        if not text.isascii() or not text.isdigit() or len(text) > 16:
            raise MalformedRow(f"{field} is not a timestamp: {value[:40]!r}")
        value = int(text)
        if value == 0:
            return None
    if not isinstance(value, int) or not MIN_EPOCH_MS <= value < MAX_EPOCH_MS:
        raise MalformedRow(f"{field} is not a plausible time in ms: {str(value)[:40]!r}")
    return value


def parse_rows(rows: Iterable[msgspec.Raw], decoder: Decoder[R],
               parse: Callable[[R], O | None]) -> tuple[list[O], int]:
    """Decode and parse each raw row; returns the observations and the number of malformed rows.

    ``parse`` returns None for a row that is fine but not wanted (filtered out).
    """
    out: list[O] = []
    malformed = 0
    for raw in rows:
        try:
            obs = parse(decoder.decode(raw))
        except (msgspec.DecodeError, msgspec.ValidationError, MalformedRow):
            malformed += 1
            continue
        if obs is not None:
            out.append(obs)
    return out, malformed


# Recorded and replayed payloads carry timestamps years old, and a bad clock can produce ones far ahead:
# a timestamp more than this beyond the (server-corrected) receive time is not trusted.
DEFAULT_MAX_FUTURE_MS = 60_000


class TimestampCheck:
    """Is an exchange timestamp plausible: not beyond ``max_future_ms`` of the receive time (server-corrected)?"""

    def __init__(self, max_future_ms: int = DEFAULT_MAX_FUTURE_MS,
                 clock_offset_ms: Callable[[], float] | None = None) -> None:
        self.max_future_ms = max_future_ms
        self._offset = clock_offset_ms

    def __call__(self, ts_ms: int | None, received_ms: int | None) -> bool:
        if ts_ms is None or received_ms is None:
            return True
        offset = self._offset() if self._offset is not None else 0.0
        return ts_ms <= received_ms + offset + self.max_future_ms
