"""Inline SVG charts for the shadow report: plain strings, no JavaScript, no external resources.

Every chart is ``role="img"`` with a ``<title>`` and ``<desc>`` (read by screen
readers and shown by browsers), prints its numbers as text next to the marks,
and never relies on colour alone: mismatches are hatched, verdicts carry a
glyph, modes are written out. Every string that reaches the markup goes through
``esc``; ``uid`` (chosen by the caller, never user data) keeps element ids unique
when a page holds several exchanges.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass

from agent.shadow.report_fmt import VERDICT_GLYPH, VERDICT_LABEL, utc_short

VERDICT_COLOUR = {"pass": "#1a7f37", "fail": "#cf222e", "inconclusive": "#bf8700", "error": "#8250df"}
MODE_COLOUR = {"rest": "#d0d7de", "shadow": "#b6e3ff", "hybrid": "#aceebb"}
MATCH_COLOUR = "#8c959f"
MISMATCH_COLOUR = "#cf222e"
LEAD_COLOUR = "#1a7f37"
LAG_COLOUR = "#bc4c00"


def esc(value: object) -> str:
    """HTML-escape anything for text and attribute values."""
    return html.escape(str(value), quote=True)


@dataclass(frozen=True)
class Bar:
    """One row of a horizontal bar chart; ``part`` of ``value`` is drawn hatched (e.g. mismatched)."""

    label: str
    value: int
    part: int = 0


@dataclass(frozen=True)
class Span:
    """A window on the timeline."""

    start_ms: int
    end_ms: int
    verdict: str
    tip: str


@dataclass(frozen=True)
class Mark:
    """A mode transition on the timeline."""

    ts_ms: int
    label: str
    tip: str


def _open(uid: str, title: str, desc: str, width: int, height: int) -> str:
    return (f'<svg class="chart" role="img" aria-labelledby="{uid}-t {uid}-d" viewBox="0 0 {width} {height}"'
            f' width="{width}" height="{height}" preserveAspectRatio="xMinYMin meet">'
            f'<title id="{uid}-t">{esc(title)}</title><desc id="{uid}-d">{esc(desc)}</desc>')


def _hatch(uid: str, colour: str) -> str:
    return (f'<defs><pattern id="{uid}-h" width="6" height="6" patternUnits="userSpaceOnUse"'
            f' patternTransform="rotate(45)"><rect width="6" height="6" fill="{colour}"/>'
            f'<line x1="0" y1="0" x2="0" y2="6" stroke="#fff" stroke-width="2"/></pattern></defs>')


def _length(value: int, top: int, room: float) -> float:
    if value <= 0 or top <= 0:
        return 0.0
    return max(2.0, room * value / top)


def bar_chart(uid: str, *, title: str, desc: str, bars: Sequence[Bar], part_label: str,
              value_label: str, width: int = 520) -> str:
    """Horizontal bars with counts written out; the hatched red share is ``part`` (mismatched)."""
    row, left, right = 22, 92, 150
    height = 30 + row * len(bars) + 24
    room = width - left - right
    top = max((b.value for b in bars), default=0)
    out = [_open(uid, title, desc, width, height), _hatch(uid, MISMATCH_COLOUR)]
    out.append(f'<text x="{left}" y="14" class="axis">{esc(value_label)}</text>')
    for i, bar in enumerate(bars):
        y = 24 + i * row
        whole = _length(bar.value, top, room)
        part = _length(bar.part, top, room) if bar.part else 0.0
        part = min(part, whole)
        tip = f"{bar.label}: {bar.value:,} samples" + (f", {bar.part:,} {part_label}" if bar.part else "")
        out.append(f'<g><title>{esc(tip)}</title>')
        out.append(f'<text x="{left - 6}" y="{y + 14}" text-anchor="end" class="lbl">{esc(bar.label)}</text>')
        if whole:
            out.append(f'<rect x="{left}" y="{y + 3}" width="{whole - part:.1f}" height="{row - 7}"'
                       f' fill="{MATCH_COLOUR}"/>')
        if part:
            out.append(f'<rect x="{left + whole - part:.1f}" y="{y + 3}" width="{part:.1f}" height="{row - 7}"'
                       f' fill="url(#{uid}-h)" stroke="{MISMATCH_COLOUR}"/>')
        text = f"{bar.value:,}"
        if bar.part:
            text += f" (all {part_label})" if bar.part == bar.value else f" ({bar.part:,} {part_label})"
        out.append(f'<text x="{left + whole + 5:.1f}" y="{y + 14}" class="num">{esc(text)}</text></g>')
    y = 24 + len(bars) * row + 14
    out.append(f'<rect x="{left}" y="{y - 9}" width="12" height="10" fill="{MATCH_COLOUR}"/>'
               f'<text x="{left + 16}" y="{y}" class="lbl">within noise floor</text>'
               f'<rect x="{left + 140}" y="{y - 9}" width="12" height="10" fill="url(#{uid}-h)"'
               f' stroke="{MISMATCH_COLOUR}"/><text x="{left + 156}" y="{y}" class="lbl">{esc(part_label)}</text>')
    out.append("</svg>")
    return "".join(out)


def butterfly_chart(uid: str, *, title: str, desc: str, labels: Sequence[str], left: Sequence[int],
                    right: Sequence[int], left_title: str, right_title: str, width: int = 520) -> str:
    """Two non-negative distributions back to back around shared bucket labels (lead | lag)."""
    row, centre_w = 22, 104
    height = 36 + row * len(labels) + 8
    half = (width - centre_w) / 2
    room = half - 56
    top = max([*left, *right, 0])
    cx_l, cx_r = half, half + centre_w
    out = [_open(uid, title, desc, width, height)]
    out.append(f'<text x="{cx_l - 4}" y="16" text-anchor="end" class="axis">◀ {esc(left_title)}</text>')
    out.append(f'<text x="{cx_r + 4}" y="16" class="axis">{esc(right_title)} ▶</text>')
    for i, label in enumerate(labels):
        y = 26 + i * row
        lw, rw = _length(left[i], top, room), _length(right[i], top, room)
        out.append(f'<g><title>{esc(f"{label}: {left[i]:,} {left_title}, {right[i]:,} {right_title}")}</title>')
        out.append(f'<text x="{width / 2:.1f}" y="{y + 14}" text-anchor="middle" class="lbl">{esc(label)}</text>')
        if lw:
            out.append(f'<rect x="{cx_l - lw:.1f}" y="{y + 3}" width="{lw:.1f}" height="{row - 7}"'
                       f' fill="{LEAD_COLOUR}"/>')
        if rw:
            out.append(f'<rect x="{cx_r}" y="{y + 3}" width="{rw:.1f}" height="{row - 7}" fill="{LAG_COLOUR}"/>')
        out.append(f'<text x="{cx_l - lw - 4:.1f}" y="{y + 14}" text-anchor="end" class="num">{left[i]:,}</text>')
        out.append(f'<text x="{cx_r + rw + 4:.1f}" y="{y + 14}" class="num">{right[i]:,}</text></g>')
    out.append("</svg>")
    return "".join(out)


def _ticks(start_ms: int, end_ms: int, count: int = 6) -> list[int]:
    span = max(end_ms - start_ms, 1)
    steps = [60_000 * m for m in (1, 2, 5, 10, 15, 30, 60, 120, 180, 360, 720, 1440, 2880, 10080)]
    step = next((s for s in steps if span / s <= count), steps[-1])
    first = -(-start_ms // step) * step
    return list(range(first, end_ms + 1, step))


def timeline_chart(uid: str, *, title: str, desc: str, start_ms: int, end_ms: int, spans: Sequence[Span],
                   marks: Sequence[Mark], modes: Sequence[tuple[int, int, str]], width: int = 1000) -> str:
    """Windows as coloured blocks with verdict glyphs, the mode as a band below, transitions as lines."""
    left, right, top = 70, 20, 34
    height = top + 34 + 10 + 22 + 30
    room = width - left - right
    span_ms = max(end_ms - start_ms, 1)

    def x(ms: int) -> float:
        return left + room * (min(max(ms, start_ms), end_ms) - start_ms) / span_ms

    out = [_open(uid, title, desc, width, height)]
    win_y, mode_y = top, top + 44
    out.append(f'<text x="{left - 6}" y="{win_y + 21}" text-anchor="end" class="lbl">windows</text>')
    out.append(f'<text x="{left - 6}" y="{mode_y + 15}" text-anchor="end" class="lbl">mode</text>')
    out.append(f'<rect x="{left}" y="{win_y}" width="{room}" height="32" fill="#f6f8fa" stroke="#d0d7de"/>')
    for s in spans:
        x0, x1 = x(s.start_ms), x(s.end_ms)
        w = max(x1 - x0 - 1, 1.5)
        colour = VERDICT_COLOUR.get(s.verdict, "#57606a")
        out.append(f'<g><title>{esc(s.tip)}</title><rect x="{x0:.1f}" y="{win_y}" width="{w:.1f}" height="32"'
                   f' fill="{colour}"/>')
        if w >= 13:
            out.append(f'<text x="{x0 + w / 2:.1f}" y="{win_y + 21}" text-anchor="middle" class="glyph">'
                       f'{esc(VERDICT_GLYPH.get(s.verdict, "·"))}</text>')
        out.append("</g>")
    for m_start, m_end, mode in modes:
        x0, x1 = x(m_start), x(m_end)
        out.append(f'<g><title>{esc(f"mode {mode}: {utc_short(m_start)} – {utc_short(m_end)}")}</title>'
                   f'<rect x="{x0:.1f}" y="{mode_y}" width="{max(x1 - x0, 1):.1f}" height="22"'
                   f' fill="{MODE_COLOUR.get(mode, "#eaeef2")}" stroke="#fff"/>')
        if x1 - x0 > 8 * len(mode) + 6:
            out.append(f'<text x="{(x0 + x1) / 2:.1f}" y="{mode_y + 15}" text-anchor="middle" class="lbl">'
                       f'{esc(mode)}</text>')
        out.append("</g>")
    for i, m in enumerate(marks):
        mx = x(m.ts_ms)
        ly = 12 if i % 2 == 0 else 26
        anchor = "end" if mx > left + room * 0.8 else "start"
        dx = -4 if anchor == "end" else 4
        out.append(f'<g><title>{esc(m.tip)}</title><line x1="{mx:.1f}" y1="{ly - 8}" x2="{mx:.1f}"'
                   f' y2="{mode_y + 22}" stroke="#24292f" stroke-width="2" stroke-dasharray="4 2"/>'
                   f'<text x="{mx + dx:.1f}" y="{ly}" text-anchor="{anchor}" class="mark">{esc(m.label)}</text></g>')
    axis_y = mode_y + 22
    with_date = end_ms - start_ms > 86_400_000
    for tick in _ticks(start_ms, end_ms):
        tx = x(tick)
        out.append(f'<line x1="{tx:.1f}" y1="{axis_y}" x2="{tx:.1f}" y2="{axis_y + 5}" stroke="#57606a"/>'
                   f'<text x="{tx:.1f}" y="{axis_y + 18}" text-anchor="middle" class="axis">'
                   f'{esc(utc_short(tick, with_date=with_date)[:16 if with_date else 5])}</text>')
    out.append(f'<text x="{width - right}" y="{axis_y + 30}" text-anchor="end" class="axis">UTC</text>')
    out.append("</svg>")
    return "".join(out)


def verdict_legend() -> str:
    """The timeline's key: colour, glyph and word for each verdict."""
    items = "".join(
        f'<span class="key"><span class="sw" style="background:{VERDICT_COLOUR[v]}">{esc(VERDICT_GLYPH[v])}</span>'
        f'{esc(VERDICT_LABEL[v].lower())}</span>' for v in ("pass", "fail", "inconclusive", "error"))
    modes = "".join(f'<span class="key"><span class="sw mode" style="background:{c}"></span>{esc(m)}</span>'
                    for m, c in MODE_COLOUR.items())
    return f'<p class="legend">{items}<span class="sep">mode:</span>{modes}<span class="key">┆ mode change</span></p>'
