"""The shadow report as Markdown for a chat message or a ticket: headline, compact table, top examples."""

from __future__ import annotations

import re
from typing import Any

from agent.shadow.report_fmt import ACTION_WORDS, VERDICT_GLYPH, bp, num, pct, seconds, utc_short

_SYMBOL_ROWS = 10
_EXAMPLE_ROWS = 5
# Characters that start Markdown or HTML syntax anywhere in a line; ``_`` only matters outside a word.
_SPECIAL = re.compile(r"([\\`*\[\]<>|~&]|(?<![0-9A-Za-z])_|_(?![0-9A-Za-z]))")


def md(text: object) -> str:
    """Text safe inside Markdown (and a table cell): specials escaped, one line."""
    return _SPECIAL.sub(r"\\\1", " ".join(str(text).split()))


def _code(text: object) -> str:
    return "`" + str(text).replace("`", "'").replace("\n", " ") + "`"


def render_markdown(report: dict[str, Any]) -> str:
    """Headline first, then per exchange its why, a compact symbol table and the top examples."""
    meta = report["metadata"]
    lines = [f"**{md(report['subject'])}**", ""]
    if not report["exchanges"]:
        lines.append(f"No shadow samples or windows between {utc_short(meta['since_ms'])} and "
                     f"{utc_short(meta['until_ms'])}. No data is not a pass: hold.")
    for section in report["exchanges"]:
        lines.extend(_exchange(section, several=len(report["exchanges"]) > 1))
    lines += ["", f"_{md(utc_short(meta['since_ms']))} → {md(utc_short(meta['until_ms']))} · agent "
                  f"{md(meta['agent_version'])} · config {_code(meta['config_sha256'][:12])}_"]
    return "\n".join(lines).rstrip() + "\n"


def _exchange(s: dict[str, Any], *, several: bool) -> list[str]:
    head, c = s["headline"], s["counts"]
    out = [f"### {md(head['subject'])}"] if several else []
    action = ACTION_WORDS[head["next_action"]]
    verdict = "NO DATA" if head["no_data"] else f"{VERDICT_GLYPH[head['verdict']]} {head['verdict']}"
    out += [f"Next action: **{action}** · verdict {md(verdict)} · {md(head['why'])}", ""]
    floor = s["noise_floor"]
    tau = _tolerances(floor)
    out.append(
        f"{num(c['samples'])} samples · {num(c['mismatched'])} mismatched ({pct(c['mismatch_ratio'])}) · "
        f"{num(c['ignored'])} ignored · {num(c['errors'])} errors · windows {c['windows']['pass']}/"
        f"{c['windows']['total']} pass · {md(tau)} · WS lead p50 "
        f"{seconds(s['lead_lag']['ws_lead_seconds']['p50_seconds'])}")
    out.append("")
    for note in head["notes"]:
        out += [f"> {md(note)}", ">"]
    if head["notes"]:
        out[-1] = ""
    if s["symbols"]:
        out += ["| symbol | samples | mismatched | rate | kinds | max divergence |",
                "|---|---:|---:|---:|---|---:|"]
        for r in s["symbols"][:_SYMBOL_ROWS]:
            kinds = ", ".join(f"{k} {n}" for k, n in r["mismatched_by_kind"].items()) or "—"
            out.append(f"| {md(r['symbol'])} | {num(r['samples'])} | {num(r['mismatched'])} | "
                       f"{pct(r['mismatch_ratio'])} | {md(kinds)} | {bp(r['max_divergence_bp'])} |")
        if len(s["symbols"]) > _SYMBOL_ROWS:
            out.append(f"\n…and {len(s['symbols']) - _SYMBOL_ROWS} more symbols.")
        out.append("")
    items = s["examples"]["items"][:_EXAMPLE_ROWS]
    if items:
        out.append(f"Top examples ({len(items)} of {s['examples']['stored']:,} stored):")
        for e in items:
            crit = " **critical**" if e["critical"] else ""
            values = (f" REST {_code(e['rest_value'])} WS {_code(e['ws_value'])}"
                      if e["rest_value"] or e["ws_value"] else "")
            div = f" ({bp(e['divergence_bp'])})" if e["divergence_bp"] is not None else ""
            detail = f" {md(e['detail'])}" if e["detail"] else ""
            trace = f" trace {_code(e['trace_id'])}" if e["trace_id"] else ""
            out.append(f"- {utc_short(e['ts_ms'])} {_code(e['kind'])}{crit} {md(e['symbol'])}"
                       f"{values}{div}{detail}{trace}")
        out.append("")
    return out


def _tolerances(floor: dict[str, Any]) -> str:
    """The price tolerance per symbol as used: one tick plus the noise floor."""
    rows = [f"{sym} {bp(t)}" + (f" (tick {floor['tick_size_by_symbol'][sym]})"
                                if sym in floor.get("tick_size_by_symbol", {}) else " (tick unknown)")
            for sym, t in floor["tolerance_bp_by_symbol"].items()]
    calibrated = f"REST-vs-REST q99 {bp(floor['calibration_q99_bp'])}" if floor["calibrated"] else "uncalibrated"
    return f"tolerance {', '.join(rows) or 'unknown'}; {calibrated}"
