"""Window verdicts (pure): Kayenta's critical metrics, Argo's inconclusive, Wilson gating.

In order, for the samples of one window:

1. a confirmed critical mismatch (``missed_close``, ``ghost``) fails the window at once;
2. ``ws_silent`` fails it (WebSocket silence while REST moves is a failure, not missing data);
3. only errors, or more than half errors: ``error`` (the comparison itself could not be made);
4. fewer than ``min_samples`` judged samples: ``inconclusive`` (holds, never promotes);
5. Wilson interval on k mismatches of n judged samples (ignored and errors left out):
   low > max: ``fail``; high <= max and at least ``min_samples`` clean samples: ``pass``;
   else ``inconclusive``.

Requiring ``min_samples`` *clean* samples to pass (ops.md §1.3: "n ≥ 300 clean
samples") keeps the verdict monotone: adding mismatches never improves it.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Iterable

from agent.shadow.model import CRITICAL_KINDS, NoiseFloor, Sample, SymbolStats, WindowVerdict
from agent.shadow.stats import quantile, wilson_interval

_VERDICT_RANK = {"pass": 0, "inconclusive": 1, "fail": 2}
_WHAT = {
    "price_divergence": "price divergences",
    "ws_silent": "WebSocket silences",
    "missed_open": "missed opens",
    "missed_close": "missed closes",
    "size_mismatch": "size mismatches",
    "ghost": "ghost positions",
}


def judge_window(samples: Iterable[Sample], *, exchange: str, window_start_ms: int, window_end_ms: int,
                 min_samples: int, max_mismatch_ratio: float, confidence: float = 0.95,
                 noise_floor: NoiseFloor | None = None, primary: str = "rest") -> WindowVerdict:
    """The verdict of one window from its samples (those of ``exchange`` with start <= ts_ms < end)."""
    chosen = [s for s in samples if s.exchange == exchange and window_start_ms <= s.ts_ms < window_end_ms]
    judged = [s for s in chosen if s.result in ("match", "mismatch")]
    mismatched = [s for s in judged if s.result == "mismatch"]
    errors = sum(1 for s in chosen if s.result == "error")
    ignored = [s for s in chosen if s.result == "ignored"]
    n, k = len(judged), len(mismatched)
    by_kind = Counter(s.mismatch_kind or "unknown" for s in mismatched)
    critical = {kind: count for kind, count in by_kind.items() if kind in CRITICAL_KINDS}
    low, high = wilson_interval(k, n, confidence) if n else (None, None)
    floor = noise_floor or NoiseFloor()
    verdict, reason = _decide(chosen, judged, mismatched, errors, critical, by_kind, low, high,
                              min_samples=min_samples, max_ratio=max_mismatch_ratio, confidence=confidence,
                              floor=floor)
    lead = [s.ws_lead_seconds for s in chosen if s.ws_lead_seconds is not None]
    lag = [s.ws_lag_seconds for s in chosen if s.ws_lag_seconds is not None]
    return WindowVerdict(
        exchange=exchange, window_start_ms=window_start_ms, window_end_ms=window_end_ms, verdict=verdict,
        reason=reason, samples=n, mismatches=k, ignored=len(ignored), errors=errors,
        mismatch_ratio=k / n if n else None, wilson_low=low, wilson_high=high,
        max_mismatch_ratio=max_mismatch_ratio, min_samples=min_samples, critical=critical,
        mismatches_by_kind=dict(by_kind), ignored_by_rule=dict(Counter(s.ignored_by or "?" for s in ignored)),
        symbols=symbol_stats(chosen), noise_floor=floor, primary=primary, confidence=confidence,
        ws_lead_p50_seconds=quantile(lead, 0.5), ws_lag_p99_seconds=quantile(lag, 0.99),
        ws_staleness_p99_seconds=quantile((s.ws_staleness_seconds for s in judged
                                           if s.kind == "price" and s.ws_staleness_seconds is not None), 0.99),
        rest_staleness_p99_seconds=quantile((s.rest_staleness_seconds for s in judged
                                             if s.kind == "price" and s.rest_staleness_seconds is not None), 0.99))


def _decide(chosen: list[Sample], judged: list[Sample], mismatched: list[Sample], errors: int,
            critical: dict[str, int], by_kind: Counter[str], low: float | None, high: float | None, *,
            min_samples: int, max_ratio: float, confidence: float, floor: NoiseFloor) -> tuple[str, str]:
    if critical:
        parts = [f"{count} {kind} ({_where(mismatched, kind)})" for kind, count in sorted(critical.items())]
        return "fail", f"critical: {'; '.join(parts)}; one confirmed occurrence fails the window"
    if by_kind.get("ws_silent"):
        return "fail", (f"WebSocket silent while REST moved: {by_kind['ws_silent']} of {len(judged)} samples "
                        f"({_where(mismatched, 'ws_silent')})")
    if errors and errors * 2 > len(chosen):
        return "error", (f"the comparison itself could not be made: {errors} of {len(chosen)} samples "
                         "were REST errors")
    n, k = len(judged), len(mismatched)
    if n < min_samples:
        return "inconclusive", f"only {n} samples (min_samples {min_samples}); no data is not a pass"
    assert low is not None and high is not None
    rate = (f"{_describe(judged, mismatched, floor)} ({_pct(k / n)}, {confidence * 100:g}% CI "
            f"{_pct(low, sign=False, unlike=max_ratio)}–{_pct(high, unlike=max_ratio)})")
    limit = _pct(max_ratio)
    if low > max_ratio:
        return "fail", f"{rate} > {limit}; worst: {_worst(judged)}"
    if high <= max_ratio and n - k >= min_samples:
        return "pass", f"{rate} <= {limit}"
    if high <= max_ratio:
        return "inconclusive", f"{rate} <= {limit} but only {n - k} clean samples (min_samples {min_samples})"
    return "inconclusive", f"{rate}: the interval straddles {limit}"


def symbol_stats(samples: Iterable[Sample]) -> list[SymbolStats]:
    """Per-symbol counts and divergence, worst first (critical, then mismatch ratio, count, divergence)."""
    groups: dict[str, list[Sample]] = defaultdict(list)
    for sample in samples:
        groups[sample.symbol].append(sample)
    table = []
    for symbol, group in groups.items():
        divergences = [s.divergence_ratio for s in group if s.divergence_ratio is not None and s.result != "error"]
        kinds = Counter(s.mismatch_kind or "unknown" for s in group if s.result == "mismatch")
        table.append(SymbolStats(
            symbol=symbol, samples=sum(1 for s in group if s.result in ("match", "mismatch")),
            mismatches=sum(kinds.values()), ignored=sum(1 for s in group if s.result == "ignored"),
            max_divergence_ratio=max(divergences, default=None), p99_divergence_ratio=quantile(divergences, 0.99),
            errors=sum(1 for s in group if s.result == "error"), mismatches_by_kind=dict(kinds)))
    table.sort(key=_worst_first)
    return table


def _worst_first(row: SymbolStats) -> tuple[int, float, int, float, str]:
    critical = sum(n for kind, n in row.mismatches_by_kind.items() if kind in CRITICAL_KINDS)
    ratio = row.mismatches / row.samples if row.samples else 0.0
    return (-critical, -ratio, -row.mismatches, -(row.max_divergence_ratio or 0.0), row.symbol)


def fails_already(mismatches: int, judged: int, *, decisive: bool, expected: int, max_mismatch_ratio: float,
                  confidence: float = 0.95) -> bool:
    """Whether a window still open can only end in ``fail``, so it may close now (curtailment).

    ``decisive``: it holds a confirmed critical mismatch or a WebSocket silence (rules 1 and 2 fail it
    whatever else comes). Otherwise: ``mismatches`` of ``judged`` so far fail it even if every sample
    still to come matched, up to 1.5 x the ``expected`` count of the whole window.
    """
    if decisive:
        return True
    if mismatches == 0:
        return False
    low, _ = wilson_interval(mismatches, max(judged, math.ceil(1.5 * expected)), confidence)
    return low > max_mismatch_ratio


def verdict_rank(verdict: str) -> int | None:
    """Order of goodness, pass 0 < inconclusive 1 < fail 2; ``None`` for error (not on that scale)."""
    return _VERDICT_RANK.get(verdict)


def _describe(judged: list[Sample], mismatched: list[Sample], floor: NoiseFloor) -> str:
    n, k = len(judged), len(mismatched)
    sample_kinds = {s.kind for s in judged}
    what = f"{next(iter(sample_kinds))} samples" if len(sample_kinds) == 1 else "samples"
    kinds = Counter(s.mismatch_kind for s in mismatched)
    if sample_kinds == {"price"} and set(kinds) <= {"price_divergence"}:
        tolerances = [s.tolerance_ratio for s in judged if s.tolerance_ratio is not None]
        bound = max(tolerances, default=None)
        if bound is None:
            bound = max((floor.tolerance_ratio(s) for s in floor.tick_ratio_by_symbol), default=None)
        beyond = f" beyond {_bp(bound)}" if bound is not None else ""
        return f"{k} of {n} {what} diverged{beyond}"
    parts = ", ".join(f"{count} {_WHAT.get(str(kind), kind)}" for kind, count in kinds.most_common())
    return f"{k} of {n} {what} mismatched" + (f" ({parts})" if parts else "")


def _where(mismatched: list[Sample], kind: str, limit: int = 3) -> str:
    places = sorted({s.symbol if s.position_idx is None else f"{s.symbol}/{s.position_idx}"
                     for s in mismatched if s.mismatch_kind == kind})
    more = f" and {len(places) - limit} more" if len(places) > limit else ""
    return ", ".join(places[:limit]) + more


def _worst(judged: list[Sample], limit: int = 3) -> str:
    rows = [r for r in symbol_stats(judged) if r.mismatches][:limit]
    return ", ".join(f"{r.symbol} {r.mismatches} of {r.samples}" for r in rows)


def _pct(ratio: float, *, sign: bool = True, unlike: float | None = None) -> str:
    """A percentage with two significant digits (three from 10 %), or more when needed to differ from ``unlike``."""
    value = ratio * 100
    digits = 2 if abs(value) < 10 else 3
    text = f"{value:.{digits}g}"
    while unlike is not None and ratio != unlike and text == f"{unlike * 100:.{digits}g}" and digits < 6:
        digits += 1
        text = f"{value:.{digits}g}"
    return f"{text}%" if sign else text


def _bp(ratio: float) -> str:
    return f"{ratio * 1e4:.2g} bp"
