"""The fault registry: what production does to clients, injected on purpose.

A fault has a venue, a kind (from an extensible registry of kinds), parameters, and a
lifetime: ``count`` matching uses, ``duration_seconds``, or until cleared. Kinds that
act on REST requests can be limited to one endpoint with ``endpoint`` (a path prefix
below the venue's base, e.g. ``/v5/position/list``); WebSocket kinds can be limited to
one stream with ``stream`` (``public``/``market`` or ``private``).
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

FAULT_VENUES = ("bybit", "binance")
# The price stream is Bybit's "public" and Binance's "market"; either name selects it.
_STREAM_NAMES = {"bybit": {"public": "public", "market": "public", "private": "private"},
                 "binance": {"public": "market", "market": "market", "private": "private"}}
_MALFORMED_MODES = ("invalid_json", "truncated", "missing_fields", "empty_numbers")
_AUTH_REASONS = ("key", "sign", "timestamp")


class FaultError(ValueError):
    """A fault request names an unknown kind, venue or parameter, or a bad value."""


@dataclass(frozen=True, slots=True)
class Param:
    """One parameter of a fault kind; ``kind`` is the Python type its value must have."""

    name: str
    kind: type | tuple[type, ...]
    required: bool = False
    choices: tuple[Any, ...] = ()
    doc: str = ""


@dataclass(frozen=True, slots=True)
class FaultKind:
    """A kind of fault: its name, parameters and which lifetime controls it accepts."""

    name: str
    doc: str
    params: tuple[Param, ...] = ()
    counted: bool = True
    endpoint_filter: bool = True
    stream_filter: bool = False
    timed: bool = True
    venues: tuple[str, ...] = FAULT_VENUES


# Lifetime and scope controls shared by kinds (validated separately from kind params).
_COMMON = ("count", "duration_seconds", "endpoint", "stream")

KINDS: dict[str, FaultKind] = {}


def register_kind(kind: FaultKind) -> FaultKind:
    """Add a fault kind to the registry (later issues add WebSocket kinds this way)."""
    if kind.name in KINDS:
        raise ValueError(f"fault kind {kind.name!r} is already registered")
    KINDS[kind.name] = kind
    return kind


register_kind(FaultKind(
    "rest_error", "Answer REST requests with an error instead of the real response.",
    (Param("status", int, required=True, doc="HTTP status: 200 (Bybit retCode error), 403, 418, 429, 5xx"),
     Param("code", int, doc="venue error code (Bybit retCode, Binance code); default by status"),
     Param("message", str, doc="error message; default by status"),
     Param("retry_after_seconds", int, doc="Retry-After header (Binance 418/429)"))))
register_kind(FaultKind(
    "clock_skew", "Shift the venue's server clock (time endpoints, response times, auth checks).",
    (Param("offset_ms", int, required=True, doc="milliseconds added to the server clock"),),
    counted=False, endpoint_filter=False))
register_kind(FaultKind(
    "reject_auth", "Refuse every signed request with the venue's auth error.",
    (Param("reason", str, choices=_AUTH_REASONS,
           doc="key (Bybit 10003 / Binance -2015, default), sign (10004 / -1022), timestamp (10002 / -1021)"),)))
register_kind(FaultKind(
    "malformed_rest", "Corrupt REST response bodies.",
    (Param("mode", str, required=True, choices=_MALFORMED_MODES),
     Param("fields", list, doc="fields to drop or blank; default: markPrice (drop) / every numeric field"),
     Param("all_rows", bool, doc="apply to every row, not only the first"))))
register_kind(FaultKind(
    "slow_rest", "Delay REST responses.",
    (Param("delay_seconds", (int, float), required=True),)))


@dataclass(slots=True)
class Fault:
    """One injected fault and how much of its life is left."""

    id: str
    venue: str
    kind: str
    params: dict[str, Any]
    endpoint: str | None = None
    remaining: int | None = None
    expires_at: float | None = None
    hits: int = 0
    created_at: float = field(default=0.0)
    stream: str | None = None

    def matches(self, venue: str, kind: str, endpoint: str | None, stream: str | None = None) -> bool:
        """True if this fault applies to a use of ``venue``/``kind`` on ``endpoint`` or ``stream``."""
        if self.venue != venue or self.kind != kind:
            return False
        if self.stream is not None and stream is not None and self.stream != stream:
            return False
        return self.endpoint is None or endpoint is None or endpoint.startswith(self.endpoint)

    @property
    def has_lifetime(self) -> bool:
        """True when the fault was given a ``count`` or a ``duration_seconds``."""
        return self.remaining is not None or self.expires_at is not None

    def to_json(self, now: float) -> dict[str, Any]:
        """JSON-ready description, with the seconds left when it has a duration."""
        left = None if self.expires_at is None else round(max(0.0, self.expires_at - now), 3)
        return {"id": self.id, "venue": self.venue, "kind": self.kind, "params": dict(self.params),
                "endpoint": self.endpoint, "stream": self.stream, "remaining_count": self.remaining,
                "remaining_seconds": left, "hits": self.hits}


class FaultRegistry:
    """Active faults of one simulator: inject, clear, list, and take on use."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._faults: dict[str, Fault] = {}
        self._ids = itertools.count(1)
        self._listeners: list[Callable[[Fault], None]] = []

    def add_listener(self, callback: Callable[[Fault], None]) -> None:
        """Call ``callback(fault)`` for every fault just injected (kinds that act at once use this)."""
        self._listeners.append(callback)

    def inject(self, venue: str, kind: str, **params: Any) -> str:
        """Activate a fault; returns its id. Raises FaultError on a bad request."""
        spec = KINDS.get(kind)
        if spec is None:
            raise FaultError(f"unknown fault kind {kind!r}; known: {sorted(KINDS)}")
        venues = spec.venues if venue == "all" else (venue,)
        if venues[0] not in FAULT_VENUES:
            raise FaultError(f"unknown venue {venue!r}; known: {list(FAULT_VENUES)} or 'all'")
        if venues[0] not in spec.venues:
            raise FaultError(f"{kind} applies to {list(spec.venues)} only, not {venue!r}")
        stream = self._stream(spec, params)
        count, duration, endpoint = self._lifetime(spec, params)
        kind_params = _validate_params(spec, params)
        now = self._clock()
        fault_id = f"fault-{next(self._ids)}"
        created = []
        for v in venues:
            # "all" makes one fault per venue sharing the id prefix, so each venue counts its own uses.
            fid = fault_id if len(venues) == 1 else f"{fault_id}-{v}"
            fault = Fault(fid, v, kind, kind_params, endpoint, count, None if duration is None else now + duration,
                          created_at=now, stream=None if stream is None else _STREAM_NAMES[v][stream])
            self._faults[fid] = fault
            created.append(fault)
        for fault in created:
            for callback in list(self._listeners):
                callback(fault)
        return fault_id

    def clear(self, fault_id: str | None = None) -> int:
        """Remove one fault (or every fault when None); returns how many were removed."""
        if fault_id is None:
            n = len(self._faults)
            self._faults.clear()
            return n
        ids = [fid for fid in self._faults if fid == fault_id or fid.startswith(fault_id + "-")]
        for fid in ids:
            del self._faults[fid]
        return len(ids)

    def active(self) -> list[Fault]:
        """Faults still in force, oldest first."""
        self._expire()
        return list(self._faults.values())

    def describe(self) -> list[dict[str, Any]]:
        """JSON-ready list of the active faults."""
        now = self._clock()
        return [f.to_json(now) for f in self.active()]

    def peek(self, venue: str, kind: str, endpoint: str | None = None, *,
             stream: str | None = None) -> Fault | None:
        """The oldest matching fault, without using it up."""
        self._expire()
        for fault in self._faults.values():
            if fault.matches(venue, kind, endpoint, stream):
                return fault
        return None

    def take(self, venue: str, kind: str, endpoint: str | None = None, *,
             stream: str | None = None) -> Fault | None:
        """The oldest matching fault, counting one use of it (a counted fault ends at zero)."""
        fault = self.peek(venue, kind, endpoint, stream=stream)
        if fault is None:
            return None
        fault.hits += 1
        if fault.remaining is not None:
            fault.remaining -= 1
            if fault.remaining <= 0:
                del self._faults[fault.id]
        return fault

    def clock_offset_ms(self, venue: str) -> int:
        """Sum of the active ``clock_skew`` offsets of a venue."""
        self._expire()
        return sum(int(f.params["offset_ms"]) for f in self._faults.values()
                   if f.venue == venue and f.kind == "clock_skew")

    def _expire(self) -> None:
        now = self._clock()
        for fid in [fid for fid, f in self._faults.items() if f.expires_at is not None and f.expires_at <= now]:
            del self._faults[fid]

    @staticmethod
    def _stream(spec: FaultKind, params: dict[str, Any]) -> str | None:
        stream = params.pop("stream", None)
        if stream is None:
            return None
        if not spec.stream_filter:
            raise FaultError(f"{spec.name} does not take stream")
        if stream not in ("public", "market", "private"):
            raise FaultError(f"stream must be 'public', 'market' or 'private', was {stream!r}")
        return str(stream)

    @staticmethod
    def _lifetime(spec: FaultKind, params: dict[str, Any]) -> tuple[int | None, float | None, str | None]:
        count = params.pop("count", None)
        duration = params.pop("duration_seconds", None)
        endpoint = params.pop("endpoint", None)
        if duration is not None and not spec.timed:
            raise FaultError(f"{spec.name} acts once and takes no duration_seconds")
        if count is not None:
            if not spec.counted:
                raise FaultError(f"{spec.name} does not take count; use duration_seconds")
            if isinstance(count, bool) or not isinstance(count, int) or count < 1:
                raise FaultError(f"count must be an integer >= 1, was {count!r}")
        if duration is not None:
            if isinstance(duration, bool) or not isinstance(duration, (int, float)) or duration <= 0:
                raise FaultError(f"duration_seconds must be a number > 0, was {duration!r}")
            duration = float(duration)
        if endpoint is not None:
            if not spec.endpoint_filter:
                raise FaultError(f"{spec.name} does not take endpoint")
            if not isinstance(endpoint, str) or not endpoint:
                raise FaultError(f"endpoint must be a path such as '/v5/position/list', was {endpoint!r}")
            endpoint = endpoint if endpoint.startswith("/") else "/" + endpoint
        return count, duration, endpoint


def _validate_params(spec: FaultKind, params: dict[str, Any]) -> dict[str, Any]:
    known = {p.name: p for p in spec.params}
    unknown = set(params) - set(known)
    if unknown:
        raise FaultError(f"{spec.name} does not take {sorted(unknown)}; it takes "
                         f"{sorted(known) + list(_COMMON)}")
    for p in spec.params:
        if p.name not in params:
            if p.required:
                raise FaultError(f"{spec.name} needs {p.name!r}")
            continue
        value = params[p.name]
        # bool is an int in Python; a JSON true must not pass as a status code.
        if (isinstance(value, bool) and p.kind is not bool) or not isinstance(value, p.kind):
            raise FaultError(f"{spec.name}.{p.name} has the wrong type: {value!r}")
        if p.choices and value not in p.choices:
            raise FaultError(f"{spec.name}.{p.name} must be one of {list(p.choices)}, was {value!r}")
    return dict(params)


def kinds_json() -> dict[str, Any]:
    """The registered kinds and their parameters, for ``GET /_sim/faults/kinds``."""
    return {k.name: {"doc": k.doc, "counted": k.counted, "endpoint_filter": k.endpoint_filter,
                     "stream_filter": k.stream_filter, "timed": k.timed, "venues": list(k.venues),
                     "params": {p.name: {"required": p.required, "choices": list(p.choices), "doc": p.doc}
                                for p in k.params}}
            for k in KINDS.values()}
