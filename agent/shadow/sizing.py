"""How large a shadow window must be for a healthy venue to reach ``pass`` (pure arithmetic).

A window passes when the upper end of the Wilson interval of its mismatch rate is at most
``max_mismatch_ratio`` (``verdict.py``). With k = 0 mismatches of n samples that upper end is
``z² / (n + z²)``, so the smallest n that can pass is ``ceil(z² (1 − r) / r)``: 381 for r = 1 % at
95 % confidence (z = 1.96), 3,838 for r = 0.1 %. That is the default ``min_samples``.

A healthy feed still shows a stray mismatch now and then (a poll that lands on a price change
and a WebSocket frame that takes longer than usual). One mismatch needs 563 samples to pass at 1 %,
two need 726, three 878: the default window is long enough for ``HEADROOM`` × ``min_samples``
expected price samples (762 at 1 %: up to two stray mismatches still pass), at one sample per
followed symbol per REST price poll, rounded up to a whole minute. Position samples (one per
open position per poll) come on top.

    window = ceil(HEADROOM × min_samples × prices_interval_seconds / symbols / 60) × 60

Defaults (prices every 5 s, 2 symbols, 1 %, 95 %): 381 samples, 1,920 s (32 min) windows, three
passing windows to promote: 96 min of probation. Polling every second: 420 s windows.
"""

from __future__ import annotations

import math
from typing import NamedTuple

from agent.config.models import ExchangeConfig
from agent.shadow.stats import z_score

#: Expected samples per window over the minimum that can pass (2: up to two stray mismatches at 1 %).
HEADROOM = 2.0
MIN_WINDOW_SECONDS = 60.0
MAX_WINDOW_SECONDS = 86_400.0
MAX_MIN_SAMPLES = 1_000_000


class WindowSizing(NamedTuple):
    """The window length and sample minimum in force for one exchange, and where they come from."""

    window_seconds: float
    min_samples: int
    expected_samples: int       # price samples per window at the configured poll rate and symbols
    samples_to_pass: int        # the fewest samples (all matches) that can pass at this ratio and confidence
    window_derived: bool        # window_seconds was not configured
    min_samples_derived: bool   # min_samples was not configured


def samples_to_pass(max_mismatch_ratio: float, confidence: float) -> int:
    """The smallest n for which 0 mismatches of n pass: ``ceil(z² (1 − r) / r)`` (381 at 1 %, 95 %)."""
    if max_mismatch_ratio <= 0:
        return MAX_MIN_SAMPLES  # no rate can be shown to be at most 0 %
    if max_mismatch_ratio >= 1:
        return 1
    z2 = z_score(confidence) ** 2
    n = math.ceil(z2 * (1 - max_mismatch_ratio) / max_mismatch_ratio - 1e-9)
    return max(1, min(n, MAX_MIN_SAMPLES))


def window_sizing(config: ExchangeConfig) -> WindowSizing:
    """The effective ``window_seconds`` and ``min_samples`` of an exchange's shadow comparison."""
    shadow = config.shadow
    needed = samples_to_pass(shadow.max_mismatch_ratio, shadow.confidence)
    min_samples = shadow.min_samples if shadow.min_samples is not None else needed
    per_second = max(1, len(config.symbols)) / config.rest.prices_interval_seconds
    if shadow.window_seconds is not None:
        window = shadow.window_seconds
    else:
        seconds = HEADROOM * max(min_samples, needed) / per_second
        window = min(max(math.ceil(seconds / 60) * 60, MIN_WINDOW_SECONDS), MAX_WINDOW_SECONDS)
    return WindowSizing(window_seconds=float(window), min_samples=min_samples,
                        expected_samples=math.floor(window * per_second), samples_to_pass=needed,
                        window_derived=shadow.window_seconds is None,
                        min_samples_derived=shadow.min_samples is None)
