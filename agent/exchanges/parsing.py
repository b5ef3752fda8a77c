"""Helpers shared by the venues' pure parse functions.

Numbers stay the strings the exchange sent; these helpers only check that a
string is a finite decimal, turn ``""`` into None and decode a list of raw rows
one by one, so one malformed row is counted and skipped instead of failing
the batch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from decimal import Decimal, InvalidOperation
from typing import TypeVar

import msgspec

R = TypeVar("R")
O = TypeVar("O")


class MalformedRow(ValueError):
    """One row of a response cannot be turned into an observation."""


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


def to_decimal(text: str, field: str) -> Decimal:
    """``Decimal(text)``, refusing junk, NaN and infinities."""
    try:
        number = Decimal(text)
    except (InvalidOperation, ValueError):
        raise MalformedRow(f"{field} is not a number: {text[:40]!r}") from None
    if not number.is_finite():
        raise MalformedRow(f"{field} is not finite: {text[:40]!r}")
    return number


def optional_ms(value: str | int | None) -> int | None:
    """A millisecond timestamp sent as int or string; ``""``, 0 and junk give None."""
    if value is None or value == "":
        return None
    try:
        ms = int(value)
    except (TypeError, ValueError):
        return None
    return ms if ms > 0 else None


def parse_rows(rows: Iterable[msgspec.Raw], decoder: msgspec.json.Decoder[R],
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
