"""The shadow report: one documented JSON document built from the ShadowStore, and its renderings.

``build_report`` reads the store and returns plain data (``docs/shadow-report.md``
documents every field; ``REPORT_SCHEMA_VERSION`` changes only on a breaking
change). ``render_json``, ``render_markdown`` and ``render_html`` turn it into
text; they read only the document, so a report can be re-rendered from its JSON.

The decision per exchange (the headline) follows ``reference/ops.md`` §1:
roll back when the latest window failed or saw a critical mismatch; promote
only after ``consecutive_passes_to_promote`` passing windows in a row since the
last mode change; otherwise hold. No window in the range is not a pass: hold.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

from agent.shadow.model import CRITICAL_KINDS, SHADOW_SCHEMA_VERSION, NoiseFloor, Sample, WindowVerdict
from agent.shadow.promotion import promotion
from agent.shadow.sizing import samples_to_pass
from agent.shadow.report_fmt import ACTION_WORDS, VERDICT_LABEL, finite, utc, utc_short
from agent.shadow.report_html import render_html
from agent.shadow.report_md import render_markdown
from agent.shadow.store import ModeTransition, ShadowStore, schema_version

__all__ = ["REPORT_SCHEMA", "REPORT_SCHEMA_VERSION", "build_report", "render_html", "render_json", "render_markdown"]

REPORT_SCHEMA = "feedagent.shadow-report"
REPORT_SCHEMA_VERSION = 1

# Histogram upper bounds (Prometheus ``le`` style: a bucket holds gt < v <= le; None is +Inf).
DIVERGENCE_LE_BP: tuple[float | None, ...] = (0.0, 0.1, 0.5, 1, 2, 5, 10, 25, 50, 100, None)
LEAD_LAG_LE_SECONDS: tuple[float | None, ...] = (0.1, 0.25, 0.5, 1, 2, 5, 10, None)
RECENT_VERDICTS = 12
_ACTION_RANK = {"roll_back": 0, "hold": 1, "promote": 2}
_VERDICT_RANK = {"fail": 0, "error": 1, "inconclusive": 2, "pass": 3}


def build_report(
    store: ShadowStore,
    *,
    exchange: str | None,
    since_ms: int,
    now_ms: int,
    agent_version: str,
    config_sha256: str,
    consecutive_passes_to_promote: int,
    max_examples: int = 50,
) -> dict[str, Any]:
    """The report of ``exchange`` (every stored exchange when None) over ``[since_ms, now_ms]``."""
    names = [exchange] if exchange is not None else store.exchanges()
    sections = [_exchange_report(store, name, since_ms, now_ms, consecutive_passes_to_promote, max_examples)
                for name in names]
    if exchange is None:    # an exchange with nothing in the range (not shadowing then) is left out
        sections = [s for s in sections if s["timeline"]["windows"] or s["counts"]["samples"]
                    or s["timeline"]["transitions"]]
    sections.sort(key=lambda s: (_ACTION_RANK[s["headline"]["next_action"]], s["exchange"]))
    heads = [s["headline"] for s in sections]
    critical_total = sum(h["critical_total"] for h in heads)
    if not sections:
        subject, verdict, action = "No shadow data — hold", "inconclusive", "hold"
    else:
        verdict = min((h["verdict"] for h in heads), key=_VERDICT_RANK.__getitem__)
        action = min((h["next_action"] for h in heads), key=_ACTION_RANK.__getitem__)
        if len(sections) > 1 and action == "promote":
            subject = f"All {len(sections)} exchanges passed — promote"
        else:
            subject = " · ".join(h["subject"] for h in heads)
    return {
        "schema": REPORT_SCHEMA,
        "schema_version": REPORT_SCHEMA_VERSION,
        "subject": subject,
        "decision": {"verdict": verdict, "next_action": action, "critical_total": critical_total,
                     "no_data": all(h["no_data"] for h in heads)},
        "metadata": {
            "generated_at_ms": now_ms, "generated_at_utc": utc(now_ms),
            "since_ms": since_ms, "since_utc": utc(since_ms), "until_ms": now_ms, "until_utc": utc(now_ms),
            "exchanges": [s["exchange"] for s in sections],
            "agent_version": agent_version, "config_sha256": config_sha256,
            "consecutive_passes_to_promote": consecutive_passes_to_promote,
            "store_schema_version": schema_version(), "record_schema_version": SHADOW_SCHEMA_VERSION,
        },
        "exchanges": sections,
    }


def render_json(report: dict[str, Any]) -> str:
    """The report as indented JSON (UTF-8 text, no NaN), newline-terminated."""
    return json.dumps(report, indent=2, ensure_ascii=False, allow_nan=False) + "\n"


# -- ONE EXCHANGE ---------------------------------------------------------------------------------

def _exchange_report(store: ShadowStore, exchange: str, since_ms: int, now_ms: int,
                     n_promote: int, max_examples: int) -> dict[str, Any]:
    windows = store.windows(exchange, since_ms, now_ms)
    samples = store.samples(exchange, since_ms, now_ms)
    all_transitions = store.transitions(exchange, None, now_ms)
    last_change = all_transitions[-1] if all_transitions else None
    streak_from = last_change.ts_ms if last_change else None
    recent = [w for w in store.windows(exchange, streak_from, now_ms, limit=max(n_promote, 1))
              if streak_from is None or w.window_start_ms >= streak_from]
    examples = store.examples(exchange, since_ms, max_examples, until_ms=now_ms, critical_first=True)
    floor, floor_source = _noise_floor(store, exchange, windows, now_ms)
    counts = _counts(samples, windows)
    floor_json = _floor_json(floor, floor_source, {s.symbol for s in samples})
    headline = _headline(exchange, windows, recent, samples, counts, examples, floor_json,
                         last_change, since_ms, now_ms, n_promote)
    return {
        "exchange": exchange,
        "primary": windows[-1].primary if windows else None,
        "window_range": ({"first_start_ms": windows[0].window_start_ms,
                          "first_start_utc": utc(windows[0].window_start_ms),
                          "last_end_ms": windows[-1].window_end_ms, "last_end_utc": utc(windows[-1].window_end_ms),
                          "windows": len(windows)} if windows else None),
        "headline": headline,
        "noise_floor": floor_json,
        "counts": counts,
        "divergence": _divergence(samples),
        "lead_lag": {
            "ws_lead_seconds": _distribution([s.ws_lead_seconds for s in samples]),
            "ws_lag_seconds": _distribution([s.ws_lag_seconds for s in samples]),
            "ws_first_ratio": _ratio(sum(1 for s in samples if _pos(s.ws_lead_seconds)),
                                     sum(1 for s in samples if _pos(s.ws_lead_seconds) or _pos(s.ws_lag_seconds))),
        },
        "staleness": {  # price samples only: a position row's time is its last change, not its age
            "rest": _quantiles([s.rest_staleness_seconds for s in samples if s.kind == "price"]),
            "ws": _quantiles([s.ws_staleness_seconds for s in samples if s.kind == "price"]),
        },
        "timeline": {
            "windows": [_window_json(w) for w in windows],
            "transitions": [_transition_json(t) for t in all_transitions if t.ts_ms >= since_ms],
        },
        "symbols": _symbols(samples),
        "examples": {
            "stored": store.count_examples(exchange, since_ms, now_ms),
            "shown": len(examples),
            "items": [_example_json(e) for e in examples],
        },
    }


def _headline(exchange: str, windows: list[WindowVerdict], recent: list[WindowVerdict], samples: list[Sample],
              counts: dict[str, Any], examples: Sequence[Any], floor: dict[str, Any],
              last_change: ModeTransition | None, since_ms: int, now_ms: int, n_promote: int) -> dict[str, Any]:
    rule = promotion(recent, n_promote)
    streak = rule.streak
    head: dict[str, Any] = {
        "subject": "", "verdict": "inconclusive", "next_action": "hold", "why": "",
        "no_data": not windows, "critical": {}, "critical_total": 0,
        "consecutive_passes": streak, "consecutive_passes_to_promote": n_promote,
        "recent_verdicts": [w.verdict for w in windows[-RECENT_VERDICTS:]],
        "latest_window": None,
        "mode": ({"current": last_change.to_mode, "since_ms": last_change.ts_ms, "since_utc": utc(last_change.ts_ms),
                  "from": last_change.from_mode, "reason": last_change.reason, "automatic": last_change.automatic}
                 if last_change else None),
        "notes": _notes(windows, samples, counts, floor, now_ms),
    }
    if not windows:
        so_far = f" ({len(samples):,} samples so far)" if samples else ""
        head.update(verdict="inconclusive", next_action="hold", subject=f"{exchange}: NO DATA — hold",
                    why=f"No shadow window closed between {utc_short(since_ms)} and {utc_short(now_ms)}{so_far};"
                        " no data is not a pass.")
        return head
    latest = windows[-1]
    reason = latest.reason.strip().rstrip(".")
    critical = {k: n for k, n in sorted(latest.critical.items()) if n > 0}
    head["critical"], head["critical_total"] = critical, sum(critical.values())
    head["verdict"] = latest.verdict
    head["latest_window"] = {"start_ms": latest.window_start_ms, "start_utc": utc(latest.window_start_ms),
                             "end_ms": latest.window_end_ms, "end_utc": utc(latest.window_end_ms),
                             "reason": latest.reason}
    label = VERDICT_LABEL[latest.verdict]
    # the action comes from the one promotion rule (agent.shadow.promotion); the words here only explain it
    action = rule.action
    if not recent or recent[-1].window_end_ms != latest.window_end_ms:
        # the latest window predates the last mode change: no streak since; a failure still says roll back
        action = "roll_back" if promotion([latest], n_promote).action == "roll_back" else "hold"
    if critical:
        kinds = ", ".join(f"{n} {k}" for k, n in critical.items())
        symbols = sorted({e.symbol for e in examples
                          if e.kind in critical and e.window_start_ms == latest.window_start_ms})
        on = f" on {', '.join(symbols)}" if symbols else ""
        label = f"{head['critical_total']} critical"
        why = f"Critical mismatch in the latest window: {kinds}{on}; one confirmed occurrence means roll back."
    elif action == "roll_back":
        why = f"The latest window failed: {reason}."
    elif action == "promote":
        why = f"{streak} consecutive passing windows ({n_promote} needed); latest: {reason}."
    elif latest.verdict == "pass":
        since = f" since the change to {last_change.to_mode}" if last_change else ""
        why = f"{streak} of {n_promote} consecutive passing windows needed to promote{since}; latest: {reason}."
        label = f"PASS ({streak}/{n_promote})"
    elif latest.verdict == "error":
        why = f"The latest window errored: {reason}."
    else:
        why = f"The latest window was inconclusive: {reason}."
    head.update(next_action=action, why=why, subject=f"{exchange}: {label} — {ACTION_WORDS[action]}")
    return head


def _notes(windows: list[WindowVerdict], samples: list[Sample], counts: dict[str, Any],
           floor: dict[str, Any], now_ms: int) -> list[str]:
    notes = []
    if windows:
        latest = windows[-1]
        quiet_ms = now_ms - latest.window_end_ms
        if quiet_ms > 2 * max(latest.window_end_ms - latest.window_start_ms, 1):
            notes.append(f"No window has closed for {quiet_ms / 60_000:.0f} min (the latest ended "
                         f"{utc_short(latest.window_end_ms)}): is shadow mode still running?")
    if counts["ignored"]:
        rules = ", ".join(f"{rule} ({n:,})" for rule, n in counts["ignored_by_rule"].items())
        notes.append(f"{counts['ignored']:,} samples ignored by rule: {rules}."
                     " Ignored samples are not evidence of a match.")
    if counts["errors"]:
        notes.append(f"{counts['errors']:,} samples were errors (REST failed); errors never count toward a pass.")
    if floor["source"] == "none":
        notes.append("No noise floor recorded: the tolerance of a price match is unknown.")
    elif not floor["calibrated"]:
        notes.append("No REST-vs-REST calibration: a price matches within one tick only.")
    priced = sorted({s.symbol for s in samples if s.kind == "price"})
    unticked = [s for s in priced if s not in floor["tick_size_by_symbol"]]
    if floor["source"] != "none" and unticked:
        notes.append(f"Tick size unknown for {', '.join(unticked)} (the venue's instrument list was not read): "
                     "their price tolerance is the noise floor alone.")
    if windows and windows[-1].samples < samples_to_pass(windows[-1].max_mismatch_ratio, windows[-1].confidence):
        need = samples_to_pass(windows[-1].max_mismatch_ratio, windows[-1].confidence)
        notes.append(f"The latest window had {windows[-1].samples:,} samples; at least {need:,} are needed to show a "
                     f"mismatch rate ≤ {windows[-1].max_mismatch_ratio:.2%} at {windows[-1].confidence:.0%}: such a "
                     "window can never pass. Lengthen shadow.window_seconds (or leave it unset).")
    if windows and not samples:
        notes.append("No samples retained for this range: distributions and the symbol table are empty.")
    elif windows and samples[0].ts_ms > windows[0].window_end_ms:
        notes.append(f"Samples before {utc_short(samples[0].ts_ms)} were pruned by retention;"
                     " distributions cover the retained samples only.")
    return notes


def _noise_floor(store: ShadowStore, exchange: str, windows: list[WindowVerdict],
                 now_ms: int) -> tuple[NoiseFloor, str]:
    if windows:
        return windows[-1].noise_floor, "window"
    calibrations = store.calibrations(exchange, None, now_ms)
    if calibrations:
        return calibrations[-1].noise_floor, "calibration"
    return NoiseFloor(), "none"


def _floor_json(floor: NoiseFloor, source: str, symbols: Iterable[str]) -> dict[str, Any]:
    names = sorted(set(floor.tick_ratio_by_symbol) | set(symbols))
    return {
        "source": source,
        "calibrated": floor.calibration_q99_ratio is not None,
        "calibrated_at_ms": floor.calibrated_at_ms, "calibrated_at_utc": utc(floor.calibrated_at_ms),
        "calibration_q50_bp": _bp(floor.calibration_q50_ratio),
        "calibration_q99_bp": _bp(floor.calibration_q99_ratio),
        "calibration_samples": floor.calibration_samples,
        "calibration_q99_bp_by_symbol": {s: _bp(r) for s, r in sorted(floor.calibration_q99_ratio_by_symbol.items())},
        "tick_bp_by_symbol": {s: _bp(r) for s, r in sorted(floor.tick_ratio_by_symbol.items())},
        "tick_size_by_symbol": dict(sorted(floor.tick_size_by_symbol.items())),
        "noise_bp_by_symbol": {s: _bp(floor.noise_ratio(s)) for s in names},
        "tolerance_bp_by_symbol": {s: _bp(floor.tolerance_ratio(s)) for s in names},
    }


def _counts(samples: list[Sample], windows: list[WindowVerdict]) -> dict[str, Any]:
    results = Counter(s.result for s in samples)
    matched, mismatched = results["match"], results["mismatch"]
    verdicts = Counter(w.verdict for w in windows)
    return {
        "samples": len(samples), "matched": matched, "mismatched": mismatched,
        "ignored": results["ignored"], "errors": results["error"],
        "mismatch_ratio": _ratio(mismatched, matched + mismatched),
        "ignored_by_rule": dict(Counter(s.ignored_by or "unnamed" for s in samples
                                        if s.result == "ignored").most_common()),
        "mismatched_by_kind": dict(Counter(s.mismatch_kind or "unknown" for s in samples
                                           if s.result == "mismatch").most_common()),
        "windows": {"total": len(windows), **{v: verdicts[v] for v in ("pass", "fail", "inconclusive", "error")}},
    }


def _divergence(samples: list[Sample]) -> dict[str, Any]:
    pairs = [(d * 1e4, s.result == "mismatch") for s in samples
             if s.kind == "price" and (d := finite(s.divergence_ratio)) is not None]
    buckets = _buckets([v for v, _ in pairs], DIVERGENCE_LE_BP, "bp")
    for bucket, bad in zip(buckets, _buckets([v for v, m in pairs if m], DIVERGENCE_LE_BP, "bp"), strict=True):
        bucket["mismatched"] = bad["count"]
    values = sorted(v for v, _ in pairs)
    return {"unit": "bp", "count": len(values), "p50_bp": _q(values, 0.5), "p99_bp": _q(values, 0.99),
            "max_bp": values[-1] if values else None, "buckets": buckets}


def _distribution(raw: Iterable[float | None]) -> dict[str, Any]:
    values = sorted(v for x in raw if (v := finite(x)) is not None and v >= 0)
    return {"count": len(values), "p50_seconds": _q(values, 0.5), "p99_seconds": _q(values, 0.99),
            "max_seconds": values[-1] if values else None,
            "buckets": _buckets(values, LEAD_LAG_LE_SECONDS, "seconds")}


def _quantiles(raw: Iterable[float | None]) -> dict[str, Any]:
    values = sorted(v for x in raw if (v := finite(x)) is not None)
    return {"count": len(values), "p50_seconds": _q(values, 0.5), "p99_seconds": _q(values, 0.99),
            "max_seconds": values[-1] if values else None}


def _buckets(values: list[float], bounds: Sequence[float | None], unit: str) -> list[dict[str, Any]]:
    counts = [0] * len(bounds)
    for v in values:
        for i, le in enumerate(bounds):
            if le is None or v <= le:
                counts[i] += 1
                break
    return [{f"gt_{unit}": bounds[i - 1] if i else None, f"le_{unit}": le, "count": counts[i]}
            for i, le in enumerate(bounds)]


def _symbols(samples: list[Sample]) -> list[dict[str, Any]]:
    by_symbol: dict[str, list[Sample]] = {}
    for s in samples:
        by_symbol.setdefault(s.symbol, []).append(s)
    rows: list[dict[str, Any]] = []
    for symbol, group in by_symbol.items():
        results = Counter(s.result for s in group)
        kinds = Counter(s.mismatch_kind or "unknown" for s in group if s.result == "mismatch")
        divergences = sorted(d * 1e4 for s in group if (d := finite(s.divergence_ratio)) is not None)
        rows.append({
            "symbol": symbol, "samples": len(group), "matched": results["match"],
            "mismatched": results["mismatch"], "ignored": results["ignored"], "errors": results["error"],
            "mismatch_ratio": _ratio(results["mismatch"], results["match"] + results["mismatch"]),
            "critical": sum(n for k, n in kinds.items() if k in CRITICAL_KINDS),
            "mismatched_by_kind": dict(kinds.most_common()),
            "max_divergence_bp": divergences[-1] if divergences else None,
            "p99_divergence_bp": _q(divergences, 0.99),
            "tolerance_bp": _q(sorted(t * 1e4 for s in group if (t := finite(s.tolerance_ratio)) is not None), 0.5),
        })
    rows.sort(key=lambda r: (-r["critical"], -(r["mismatch_ratio"] or 0), -r["mismatched"],
                             -(r["p99_divergence_bp"] or 0), r["symbol"]))
    return rows


def _window_json(w: WindowVerdict) -> dict[str, Any]:
    return {
        "start_ms": w.window_start_ms, "start_utc": utc(w.window_start_ms),
        "end_ms": w.window_end_ms, "end_utc": utc(w.window_end_ms),
        "verdict": w.verdict, "reason": w.reason,
        "samples": w.samples, "mismatches": w.mismatches, "ignored": w.ignored, "errors": w.errors,
        "mismatch_ratio": finite(w.mismatch_ratio), "wilson_low": finite(w.wilson_low),
        "wilson_high": finite(w.wilson_high), "confidence": w.confidence,
        "max_mismatch_ratio": finite(w.max_mismatch_ratio),
        "min_samples": w.min_samples, "critical": dict(w.critical), "mismatches_by_kind": dict(w.mismatches_by_kind),
    }


def _transition_json(t: ModeTransition) -> dict[str, Any]:
    return {"ts_ms": t.ts_ms, "ts_utc": utc(t.ts_ms), "from": t.from_mode, "to": t.to_mode,
            "reason": t.reason, "automatic": t.automatic}


def _example_json(e: Any) -> dict[str, Any]:
    return {
        "ts_ms": e.ts_ms, "ts_utc": utc(e.ts_ms),
        "window_start_ms": e.window_start_ms, "window_start_utc": utc(e.window_start_ms),
        "kind": e.kind, "critical": e.kind in CRITICAL_KINDS, "symbol": e.symbol, "position_idx": e.position_idx,
        "rest_value": e.rest_value, "ws_value": e.ws_value, "divergence_bp": _bp(e.divergence_ratio),
        "detail": e.detail, "trace_id": e.trace_id,
    }


def _bp(ratio: float | None) -> float | None:
    value = finite(ratio)
    return None if value is None else value * 1e4


def _ratio(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def _pos(value: float | None) -> bool:
    return value is not None and math.isfinite(value) and value > 0


def _q(sorted_values: Sequence[float], q: float) -> float | None:
    """Nearest-rank quantile of already sorted values."""
    if not sorted_values:
        return None
    return sorted_values[max(0, math.ceil(q * len(sorted_values)) - 1)]
