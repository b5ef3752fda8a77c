"""The shadow comparison's records: samples, mismatch examples, window verdicts (schema version 1).

Ratios are plain floats (divergence is a statistic, not a price); prices keep
their decimal strings. Times are Unix milliseconds (``*_ms``) or seconds
(``*_seconds``) as named.
"""

from __future__ import annotations

from typing import Literal

import msgspec

SHADOW_SCHEMA_VERSION = 1

SampleKind = Literal["price", "position"]
SampleResult = Literal["match", "mismatch", "ignored", "error"]
MismatchKind = Literal["price_divergence", "ws_silent", "missed_open", "missed_close", "size_mismatch", "ghost"]
Verdict = Literal["pass", "fail", "inconclusive", "error"]
NextAction = Literal["promote", "hold", "roll_back"]

# Mismatch kinds that fail a window at once, whatever the rate (Kayenta's critical metrics).
CRITICAL_KINDS: frozenset[str] = frozenset({"missed_close", "ghost"})


class Sample(msgspec.Struct, frozen=True, kw_only=True):
    """One REST observation of one symbol (price) or one position key, joined "as of" its
    receive time with the WebSocket state."""

    exchange: str
    kind: SampleKind
    symbol: str
    position_idx: int | None = None
    ts_ms: int                                  # REST receive time (the join time)
    result: SampleResult
    mismatch_kind: MismatchKind | None = None
    ignored_by: str | None = None               # name of the ignore rule that matched
    rest_value: str | None = None               # price or size as REST gave it
    ws_value: str | None = None                 # price or size of the WS state as of ts_ms
    divergence_ratio: float | None = None       # |p_ws - p_rest| / p_rest
    tolerance_ratio: float | None = None        # the noise floor this sample was judged with
    rest_staleness_seconds: float | None = None # REST receive time - exchange time
    ws_staleness_seconds: float | None = None   # WS receive time - exchange time, as of ts_ms
    ws_lead_seconds: float | None = None        # WS showed this REST price change earlier (>= 0)
    ws_lag_seconds: float | None = None         # WS showed it later (>= 0)
    trace_id: str | None = None
    detail: str | None = None                   # short context: sides of a position, why an error


class MismatchExample(msgspec.Struct, frozen=True, kw_only=True):
    """A capped sample of a mismatch with its context, for the report (Scientist's published mismatch)."""

    exchange: str
    window_start_ms: int
    ts_ms: int
    kind: MismatchKind
    symbol: str
    position_idx: int | None = None
    rest_value: str | None = None
    ws_value: str | None = None
    divergence_ratio: float | None = None
    detail: str = ""
    trace_id: str | None = None


class NoiseFloor(msgspec.Struct, frozen=True, kw_only=True):
    """How much difference is noise: one tick plus (when calibrated) the REST-vs-REST q99."""

    tick_ratio_by_symbol: dict[str, float] = {}     # one tick over the price
    tick_size_by_symbol: dict[str, str] = {}        # the venue's tick size (instruments-info / exchangeInfo)
    calibration_q50_ratio: float | None = None
    calibration_q99_ratio: float | None = None
    calibration_samples: int = 0
    calibrated_at_ms: int | None = None
    calibration_q99_ratio_by_symbol: dict[str, float] = {}  # per symbol where calibrated; else the overall q99

    def noise_ratio(self, symbol: str) -> float:
        """The calibrated noise floor of ``symbol`` (its own q99, else the overall one; 0 uncalibrated)."""
        calibrated = self.calibration_q99_ratio_by_symbol.get(symbol, self.calibration_q99_ratio)
        return calibrated if calibrated is not None and 0 <= calibrated < float("inf") else 0.0

    def tolerance_ratio(self, symbol: str) -> float:
        """The largest divergence still counted as a match for ``symbol``: one tick plus the noise floor."""
        return self.tick_ratio_by_symbol.get(symbol, 0.0) + self.noise_ratio(symbol)


class SymbolStats(msgspec.Struct, frozen=True, kw_only=True):
    """Per-symbol aggregates of one window (the report's worst-first table)."""

    symbol: str
    samples: int
    mismatches: int
    ignored: int
    max_divergence_ratio: float | None
    p99_divergence_ratio: float | None
    errors: int = 0
    mismatches_by_kind: dict[str, int] = {}


class WindowVerdict(msgspec.Struct, frozen=True, kw_only=True):
    """The verdict of one comparison window, with the evidence behind it."""

    exchange: str
    window_start_ms: int
    window_end_ms: int
    verdict: Verdict
    reason: str
    samples: int                                # n of the rate test: matches + mismatches (not ignored, not errors)
    mismatches: int
    ignored: int
    errors: int
    mismatch_ratio: float | None
    wilson_low: float | None
    wilson_high: float | None
    max_mismatch_ratio: float
    min_samples: int
    critical: dict[str, int] = {}               # critical mismatch kinds seen, by kind
    mismatches_by_kind: dict[str, int] = {}
    ignored_by_rule: dict[str, int] = {}
    symbols: list[SymbolStats] = []
    noise_floor: NoiseFloor = NoiseFloor()
    primary: str = "rest"
    confidence: float = 0.95                    # of the Wilson interval
    ws_lead_p50_seconds: float | None = None
    ws_lag_p99_seconds: float | None = None
    ws_staleness_p99_seconds: float | None = None
    rest_staleness_p99_seconds: float | None = None
