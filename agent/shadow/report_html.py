"""The shadow report as one self-contained HTML page: inline CSS and SVG, no scripts, no URLs.

The page leads with the decision: per exchange a banner whose largest words are
the next action, then the verdict, the one-sentence why and the last windows,
then a row of key numbers. Evidence follows, most telling first: the verdict
timeline with mode changes, the worst symbols, the divergence and lead/lag
charts, mismatch examples with trace ids, and the noise floor and counts.
Every string from the report is escaped (``charts.esc``).
"""

from __future__ import annotations

from typing import Any

from agent.shadow.charts import (
    VERDICT_COLOUR,
    Bar,
    Mark,
    Span,
    bar_chart,
    butterfly_chart,
    esc,
    timeline_chart,
    verdict_legend,
)
from agent.shadow.report_fmt import (
    ACTION_WORDS,
    VERDICT_GLYPH,
    VERDICT_LABEL,
    bp,
    num,
    pct,
    seconds,
    utc_short,
)

_ACTION_GLYPH = {"promote": "↑", "hold": "‖", "roll_back": "↩"}
_MAX_SYMBOL_ROWS = 20
_EXAMPLES_OPEN = 10

_CSS = """
:root{--fg:#1f2328;--muted:#59636e;--line:#d1d9e0;--bg:#fff;--soft:#f6f8fa}
*{box-sizing:border-box}
body{margin:0;background:var(--soft);color:var(--fg);font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,
"Helvetica Neue",Arial,sans-serif}
.top{display:flex;flex-wrap:wrap;gap:.4rem 1.5rem;padding:.6rem 1.5rem;background:#24292f;color:#fff;font-size:13px}
.top b{font-size:14px}
main{max-width:1080px;margin:0 auto;padding:1rem 1.5rem 3rem}
section.exchange{background:var(--bg);border:1px solid var(--line);border-radius:10px;margin:0 0 2rem;overflow:hidden}
.banner{display:flex;align-items:stretch;border-bottom:1px solid var(--line)}
.banner .action{flex:0 0 270px;display:flex;flex-direction:column;justify-content:center;padding:1.1rem 1.3rem;
color:#fff}
.action-label{font-size:12px;text-transform:uppercase;letter-spacing:.08em;opacity:.9}
.action-word{font-size:34px;font-weight:800;line-height:1.1;letter-spacing:.01em;white-space:nowrap}
.banner .body{flex:1;padding:1rem 1.4rem}
.banner h2{margin:0 0 .35rem;font-size:22px;line-height:1.25}
.banner .why{margin:.2rem 0 .55rem;font-size:16px}
.act-roll_back .action{background:#cf222e}.act-roll_back .body{background:#ffebe9}
.act-hold .action{background:#9a6700}.act-hold .body{background:#fff8c5}
.act-promote .action{background:#1a7f37}.act-promote .body{background:#dafbe1}
.verdict-line{font-weight:600;margin:0}
.chips{margin:0;font-size:13px;color:var(--muted)}.mode-line{margin:0 0 .4rem;font-size:14px}
.chip{display:inline-block;min-width:1.5em;padding:0 .3em;margin-right:2px;border-radius:4px;color:#fff;
text-align:center;font-weight:700}
.tiles{display:grid;grid-template-columns:repeat(auto-fit,minmax(150px,1fr));gap:0;margin:0;
border-bottom:1px solid var(--line)}
.tiles div{padding:.7rem 1.1rem;border-right:1px solid var(--line)}
.tiles dt{font-size:12.5px;color:var(--muted);font-weight:600}
.tiles dd{margin:0;font-size:20px;font-weight:700}
.tiles dd small{display:block;font-size:12px;font-weight:400;color:var(--muted)}
.content{padding:.4rem 1.4rem 1.2rem}
h3{font-size:16px;margin:1.3rem 0 .5rem}
.notes{margin:.8rem 0 0;padding-left:1.2rem;color:#6f4e00}
.legend{font-size:13px;color:var(--muted);margin:.3rem 0}
.key{margin-right:1rem;white-space:nowrap}
.sw{display:inline-block;width:1.3em;height:1.1em;margin-right:.3em;border-radius:3px;color:#fff;text-align:center;
font-size:12px;font-weight:700;vertical-align:-2px;line-height:1.1em}
.sw.mode{border:1px solid #8c959f}.sep{margin-right:.5rem}
.grid2{display:grid;grid-template-columns:repeat(auto-fit,minmax(440px,1fr));gap:1.2rem}
figure{margin:0}figcaption{font-size:13px;color:var(--muted);margin-top:.2rem}
svg.chart{max-width:100%;height:auto;font-size:12px}
svg .lbl{fill:#1f2328;font-size:12px}svg .num{fill:#1f2328;font-size:12px;font-weight:600}
svg .axis{fill:#59636e;font-size:12px}svg .glyph{fill:#fff;font-size:16px;font-weight:700}
svg .mark{fill:#1f2328;font-size:12px;font-weight:600}
table{border-collapse:collapse;width:100%;font-size:13.5px}
th,td{text-align:left;padding:.3rem .55rem;border-bottom:1px solid var(--line);vertical-align:top}
td.t,th.t{white-space:nowrap}.scroll{overflow-x:auto}td.trace{white-space:nowrap}
caption{text-align:left;font-weight:600;padding:.6rem 0 .3rem}
th{background:var(--soft);font-weight:600}
td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}
tr.bad td{background:#fff5f5}
code{font:12px ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;overflow-wrap:anywhere}
.badge{display:inline-block;padding:0 .35em;border-radius:4px;font-size:12px;font-weight:700;color:#fff;
background:#cf222e}
.muted{color:var(--muted)}
details summary{cursor:pointer;font-weight:600;margin:1.2rem 0 .5rem}
.summary{background:var(--bg);border:1px solid var(--line);border-radius:10px;padding:.8rem 1.2rem;margin-bottom:1.2rem}
.summary h1{font-size:20px;margin:0 0 .5rem}.summary ul{margin:0;padding:0;list-style:none}
.summary li{margin:.25rem 0}.summary a{color:var(--fg)}
.pill{display:inline-block;min-width:8.5em;padding:.05rem .5rem;border-radius:4px;color:#fff;font-weight:700;
font-size:13px}.pill.act-roll_back{background:#cf222e}.pill.act-hold{background:#9a6700}
.pill.act-promote{background:#1a7f37}
footer{font-size:12px;color:var(--muted)}
@media print{body{background:#fff}.banner .action,.chip,.sw,.badge{-webkit-print-color-adjust:exact;
print-color-adjust:exact}}
"""


def render_html(report: dict[str, Any]) -> str:
    """One self-contained HTML document for ``report`` (see ``agent.shadow.report.build_report``)."""
    meta = report["metadata"]
    sections = report["exchanges"]
    parts = [
        '<!doctype html><html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{esc(report['subject'])} · FeedAgent shadow report</title><style>{_CSS}</style></head><body>",
        f'<header class="top"><b>FeedAgent shadow report</b>'
        f"<span>{esc(utc_short(meta['since_ms']))} → {esc(utc_short(meta['until_ms']))}</span>"
        f"<span>agent {esc(meta['agent_version'])}</span>"
        f"<span>config sha256 <code>{esc(meta['config_sha256'][:12])}</code></span></header><main>",
    ]
    if not sections:
        parts.append(_empty(report))
    if len(sections) > 1:
        items = "".join(
            f'<li><span class="pill act-{esc(s["headline"]["next_action"])}">'
            f'{_ACTION_GLYPH[s["headline"]["next_action"]]} {esc(ACTION_WORDS[s["headline"]["next_action"]].upper())}'
            f'</span> <a href="#ex-{i}">{esc(s["headline"]["subject"])}</a></li>' for i, s in enumerate(sections))
        parts.append(f'<nav class="summary" aria-label="Summary"><h1>{esc(report["subject"])}</h1>'
                     f"<ul>{items}</ul></nav>")
    parts.extend(_exchange(f"ex-{i}", s, meta, single=len(sections) == 1) for i, s in enumerate(sections))
    parts.append(_footer(meta, report))
    parts.append("</main></body></html>\n")
    return "".join(parts)


def _empty(report: dict[str, Any]) -> str:
    meta = report["metadata"]
    return (
        '<section class="exchange"><div class="banner act-hold" role="status">'
        '<div class="action"><span class="action-label">Next action</span>'
        f'<span class="action-word">{_ACTION_GLYPH["hold"]} HOLD</span></div><div class="body">'
        f'<h1 class="subject">{esc(report["subject"])}</h1><p class="verdict-line">Verdict: NO DATA</p>'
        f"<p class=\"why\">No shadow samples or windows were recorded between {esc(utc_short(meta['since_ms']))}"
        f" and {esc(utc_short(meta['until_ms']))}. No data is not a pass: keep the current mode, check that"
        " shadow mode is running.</p></div></div></section>")


def _exchange(uid: str, s: dict[str, Any], meta: dict[str, Any], *, single: bool) -> str:
    head = s["headline"]
    action = head["next_action"]
    tag = "h1" if single else "h2"
    return "".join([
        f'<section class="exchange" id="{uid}" aria-labelledby="{uid}-h">',
        f'<div class="banner act-{esc(action)}" role="status"><div class="action">'
        f'<span class="action-label">Next action</span>'
        f'<span class="action-word">{_ACTION_GLYPH[action]} {esc(ACTION_WORDS[action].upper())}</span></div>'
        f'<div class="body"><{tag} class="subject" id="{uid}-h">{esc(head["subject"])}</{tag}>'
        f'<p class="verdict-line">{_verdict_line(head)}</p>'
        f'<p class="why">{esc(head["why"])}</p>{_mode_line(head)}{_chips(head)}</div></div>',
        _tiles(s),
        '<div class="content">',
        _notes(head),
        _timeline(uid, s, meta),
        _symbols(s),
        _charts(uid, s),
        _examples(s, meta),
        _floor_counts(s),
        _windows(s),
        "</div></section>",
    ])


def _verdict_line(head: dict[str, Any]) -> str:
    if head["no_data"]:
        text = "Verdict: NO DATA"
    else:
        v = head["verdict"]
        text = f"{VERDICT_GLYPH[v]} Verdict: {VERDICT_LABEL[v]}"
        if head["critical_total"]:
            text += f" · {head['critical_total']} critical"
        if v == "pass":
            text += f" · {head['consecutive_passes']} of {head['consecutive_passes_to_promote']} passes to promote"
        w = head["latest_window"]
        text += f" · latest window {utc_short(w['start_ms'])} – {utc_short(w['end_ms'], with_date=False)}"
    return esc(text)


def _mode_line(head: dict[str, Any]) -> str:
    mode = head["mode"]
    if not mode:
        return ""
    how = "automatically" if mode["automatic"] else "by an operator"
    return (f'<p class="mode-line">Mode now: <b>{esc(mode["current"])}</b>, switched from {esc(mode["from"])} '
            f'{how} at {esc(utc_short(mode["since_ms"]))} ({esc(mode["reason"])}).</p>')


def _chips(head: dict[str, Any]) -> str:
    if not head["recent_verdicts"]:
        return ""
    chips = "".join(
        f'<span class="chip" style="background:{VERDICT_COLOUR[v]}" title="{esc(v)}">{esc(VERDICT_GLYPH[v])}</span>'
        for v in head["recent_verdicts"])
    return f'<p class="chips">Last {len(head["recent_verdicts"])} windows, oldest first: {chips}</p>'


def _tiles(s: dict[str, Any]) -> str:
    c, floor, lead = s["counts"], s["noise_floor"], s["lead_lag"]
    windows = s["timeline"]["windows"]
    limit = windows[-1]["max_mismatch_ratio"] if windows else None
    worst = s["symbols"][0] if s["symbols"] and s["symbols"][0]["mismatched"] else None
    if worst and worst["critical"]:
        kinds = ", ".join(k for k in worst["mismatched_by_kind"] if k in ("missed_close", "ghost"))
        worst_sub = f"{worst['critical']} critical ({kinds})"
    elif worst:
        worst_sub = f"{pct(worst['mismatch_ratio'])} mismatched"
    else:
        worst_sub = "no mismatches"
    tolerances = [t for t in floor["tolerance_bp_by_symbol"].values() if t is not None]
    span = (bp(min(tolerances)) if min(tolerances) == max(tolerances)
            else f"{bp(min(tolerances))}–{bp(max(tolerances))}") if tolerances else "unknown"
    if floor["calibrated"]:
        tau = (span, f"1 tick + REST-vs-REST q99 {bp(floor['calibration_q99_bp'])}")
    else:
        tau = (span, "1 tick, not calibrated") if floor["source"] != "none" else ("unknown", "no noise floor")
    tiles = [
        ("Samples", num(c["samples"]), f"{num(c['mismatched'])} mismatched · {num(c['ignored'])} ignored"
                                        f" · {num(c['errors'])} errors"),
        ("Mismatch rate (range)", pct(c["mismatch_ratio"]),
         f"limit {pct(limit)} per window" if limit is not None else "no window"),
        ("Windows passed", f"{c['windows']['pass']} / {c['windows']['total']}",
         f"{c['windows']['fail']} fail · {c['windows']['inconclusive']} inconclusive · {c['windows']['error']} error"),
        ("Price tolerance", *tau),
        ("WS lead (p50)", seconds(lead["ws_lead_seconds"]["p50_seconds"]),
         f"WS first in {pct(lead['ws_first_ratio'], 0)} of changes"),
        ("Worst symbol", worst["symbol"] if worst else "none", worst_sub),
    ]
    cells = "".join(f"<div><dt>{esc(k)}</dt><dd>{esc(v)}<small>{esc(sub)}</small></dd></div>" for k, v, sub in tiles)
    return f'<dl class="tiles">{cells}</dl>'


def _notes(head: dict[str, Any]) -> str:
    if not head["notes"]:
        return ""
    return '<ul class="notes">' + "".join(f"<li>{esc(n)}</li>" for n in head["notes"]) + "</ul>"


def _timeline(uid: str, s: dict[str, Any], meta: dict[str, Any]) -> str:
    windows, transitions = s["timeline"]["windows"], s["timeline"]["transitions"]
    start, end = meta["since_ms"], meta["until_ms"]
    if windows:  # zoom to the data: a few minutes of windows in a day-long range would be a sliver
        first = min([w["start_ms"] for w in windows] + [t["ts_ms"] for t in transitions])
        span_ms = max(end - first, 1)
        start = max(start, first - span_ms // 20)
    spans = [Span(w["start_ms"], w["end_ms"], w["verdict"],
                  f"{utc_short(w['start_ms'])} – {utc_short(w['end_ms'], with_date=False)}: "
                  f"{VERDICT_LABEL[w['verdict']]} — {w['reason']}") for w in windows]
    marks = [Mark(t["ts_ms"], f"→ {t['to']}",
                  f"{utc_short(t['ts_ms'])}: {t['from']} → {t['to']} ({t['reason']}, "
                  f"{'automatic' if t['automatic'] else 'manual'})") for t in transitions]
    mode = s["headline"]["mode"]
    modes: list[tuple[int, int, str]] = []
    cursor = start
    current = transitions[0]["from"] if transitions else (mode["current"] if mode else None)
    for t in transitions:
        if current:
            modes.append((cursor, t["ts_ms"], current))
        cursor, current = t["ts_ms"], t["to"]
    if current:
        modes.append((cursor, end, current))
    counts = s["counts"]["windows"]
    desc = (f"{counts['total']} windows from {utc_short(start)} to {utc_short(end)}: {counts['pass']} pass, "
            f"{counts['fail']} fail, {counts['inconclusive']} inconclusive, {counts['error']} error; "
            f"{len(transitions)} mode changes.")
    chart = timeline_chart(f"{uid}-tl", title=f"Verdict timeline of {s['exchange']}", desc=desc,
                           start_ms=start, end_ms=end, spans=spans, marks=marks, modes=modes)
    rows = "".join(
        f"<tr><td class=\"t\">{esc(utc_short(t['ts_ms']))}</td><td>{esc(t['from'])} → {esc(t['to'])}</td>"
        f"<td>{esc(t['reason'])}</td><td>{'automatic' if t['automatic'] else 'manual'}</td></tr>"
        for t in transitions)
    table = ("<table><caption>Mode changes</caption><thead><tr><th>Time</th><th>Mode</th>"
             f"<th>Reason</th><th>By</th></tr></thead><tbody>{rows}</tbody></table>") if transitions else ""
    return f"<h3>Verdict timeline</h3><figure>{chart}{verdict_legend()}</figure>{table}"


def _symbols(s: dict[str, Any]) -> str:
    rows = s["symbols"]
    if not rows:
        return '<h3>Symbols, worst first</h3><p class="muted">No samples in this range.</p>'
    body = []
    for r in rows[:_MAX_SYMBOL_ROWS]:
        kinds = ", ".join(f"{k} {n:,}" for k, n in r["mismatched_by_kind"].items())
        crit = f' <span class="badge">{r["critical"]} critical</span>' if r["critical"] else ""
        body.append(
            f'<tr class="{"bad" if r["mismatched"] else ""}"><td><b>{esc(r["symbol"])}</b>{crit}</td>'
            f'<td class="n">{num(r["samples"])}</td><td class="n">{num(r["mismatched"])}</td>'
            f'<td class="n">{pct(r["mismatch_ratio"])}</td><td>{esc(kinds) or "—"}</td>'
            f'<td class="n">{esc(bp(r["p99_divergence_bp"]))}</td><td class="n">{esc(bp(r["max_divergence_bp"]))}</td>'
            f'<td class="n">{num(r["ignored"])}</td><td class="n">{num(r["errors"])}</td></tr>')
    more = (f'<p class="muted">{len(rows) - _MAX_SYMBOL_ROWS} more symbols in the JSON report.</p>'
            if len(rows) > _MAX_SYMBOL_ROWS else "")
    return ("<h3>Symbols, worst first</h3><table><thead><tr><th>Symbol</th><th class=\"n\">Samples</th>"
            "<th class=\"n\">Mismatched</th><th class=\"n\">Rate</th><th>Kinds</th><th class=\"n\">p99 divergence</th>"
            "<th class=\"n\">Max divergence</th><th class=\"n\">Ignored</th><th class=\"n\">Errors</th></tr></thead>"
            f"<tbody>{''.join(body)}</tbody></table>{more}")


def _bucket_label(gt: float | None, le: float | None, unit: str) -> str:
    """``0 bp``, ``0–0.1 bp``, ``> 100 bp``; ``≤ 100 ms``, ``0.1–0.25 s``, ``> 10 s``."""
    if gt is None:
        return f"0 {unit}" if le == 0 else (f"≤ {le * 1000:g} ms" if unit == "s" and le is not None and le < 1
                                           else f"≤ {le:g} {unit}")
    return f"> {gt:g} {unit}" if le is None else f"{gt:g}–{le:g} {unit}"


def _charts(uid: str, s: dict[str, Any]) -> str:
    div = s["divergence"]
    bars = [Bar(_bucket_label(b["gt_bp"], b["le_bp"], "bp"), b["count"], b["mismatched"]) for b in div["buckets"]]
    hist = bar_chart(
        f"{uid}-div", title=f"Price divergence WS vs REST, {s['exchange']}", bars=bars, part_label="mismatched",
        value_label="price samples per divergence bucket",
        desc=(f"{div['count']:,} price samples; median {bp(div['p50_bp'])}, p99 {bp(div['p99_bp'])}, "
              f"max {bp(div['max_bp'])}. Hatched red: beyond the noise floor (mismatch)."))
    lead, lag = s["lead_lag"]["ws_lead_seconds"], s["lead_lag"]["ws_lag_seconds"]
    labels = [_bucket_label(b["gt_seconds"], b["le_seconds"], "s") for b in lead["buckets"]]
    fly = butterfly_chart(
        f"{uid}-ll", title=f"WebSocket lead and lag over REST, {s['exchange']}", labels=labels,
        left=[b["count"] for b in lead["buckets"]], right=[b["count"] for b in lag["buckets"]],
        left_title="WS earlier (lead)", right_title="WS later (lag)",
        desc=(f"{lead['count']:,} price changes WS showed first (median {seconds(lead['p50_seconds'])}, p99 "
              f"{seconds(lead['p99_seconds'])}); {lag['count']:,} it showed later (median "
              f"{seconds(lag['p50_seconds'])}, p99 {seconds(lag['p99_seconds'])})."))
    return (
        '<div class="grid2"><figure><h3>Price divergence (WS vs REST)</h3>'
        f"{hist}<figcaption>{div['count']:,} price samples · median {esc(bp(div['p50_bp']))} · "
        f"p99 {esc(bp(div['p99_bp']))} · max {esc(bp(div['max_bp']))}</figcaption></figure>"
        f"<figure><h3>WebSocket lead / lag over REST</h3>{fly}<figcaption>lead p50 {seconds(lead['p50_seconds'])},"
        f" p99 {seconds(lead['p99_seconds'])} · lag p50 {seconds(lag['p50_seconds'])},"
        f" p99 {seconds(lag['p99_seconds'])}</figcaption></figure></div>")


def _examples(s: dict[str, Any], meta: dict[str, Any]) -> str:
    ex = s["examples"]
    if not ex["items"]:
        return '<h3>Mismatch examples</h3><p class="muted">No mismatch examples in this range.</p>'
    one_day = utc_short(meta["since_ms"])[:10] == utc_short(meta["until_ms"])[:10]
    rows = []
    for e in ex["items"]:
        kind = esc(e["kind"]) + (' <span class="badge">critical</span>' if e["critical"] else "")
        idx = f" #{e['position_idx']}" if e["position_idx"] is not None else ""
        values = f"{e['rest_value'] or '—'} → {e['ws_value'] or '—'}"
        rows.append(
            f"<tr><td class=\"t\">{esc(utc_short(e['ts_ms'], with_date=not one_day))}</td><td>{kind}</td>"
            f"<td class=\"t\">{esc(e['symbol'])}{esc(idx)}</td><td class=\"n t\">{esc(values)}</td>"
            f"<td class=\"n t\">{esc(bp(e['divergence_bp']))}</td>"
            f"<td class=\"t\"><code>{esc(e['trace_id'] or '—')}</code></td><td>{esc(e['detail'])}</td></tr>")
    day = f"; times UTC on {utc_short(meta['since_ms'])[:10]}" if one_day else ""
    head = ("<div class=\"scroll\"><table><thead><tr><th>Time (UTC)</th><th>Kind</th><th>Symbol</th>"
            "<th class=\"n\">REST → WS</th><th class=\"n\">Divergence</th><th>Trace id</th><th>Detail</th>"
            "</tr></thead>")
    more = ""
    if len(rows) > _EXAMPLES_OPEN:
        more = (f"<details><summary>{len(rows) - _EXAMPLES_OPEN} more examples</summary>{head}"
                f"<tbody>{''.join(rows[_EXAMPLES_OPEN:])}</tbody></table></div></details>")
    return (f"<h3>Mismatch examples <span class=\"muted\">({ex['shown']:,} shown of {ex['stored']:,} stored,"
            f" critical first, then newest{esc(day)})</span></h3>{head}<tbody>{''.join(rows[:_EXAMPLES_OPEN])}</tbody>"
            f"</table></div>{more}")


def _kv(rows: list[tuple[str, str]]) -> str:
    return "<table><tbody>" + "".join(f"<tr><th>{esc(k)}</th><td class=\"n\">{esc(v)}</td></tr>"
                                      for k, v in rows) + "</tbody></table>"


def _floor_counts(s: dict[str, Any]) -> str:
    f, c, st = s["noise_floor"], s["counts"], s["staleness"]
    floor_rows = [
        ("Source", {"window": "latest window", "calibration": "latest calibration", "none": "none"}[f["source"]]),
        ("Calibrated at", utc_short(f["calibrated_at_ms"]) if f["calibrated_at_ms"] else "not calibrated"),
        ("REST-vs-REST q50", bp(f["calibration_q50_bp"])), ("REST-vs-REST q99", bp(f["calibration_q99_bp"])),
        ("Calibration samples", num(f["calibration_samples"])),
    ] + [(f"Tolerance {sym} (tick {f.get('tick_size_by_symbol', {}).get(sym, 'unknown')} = "
          f"{bp(f['tick_bp_by_symbol'].get(sym))}, + noise {bp(f.get('noise_bp_by_symbol', {}).get(sym))})", bp(t))
         for sym, t in f["tolerance_bp_by_symbol"].items()]
    count_rows = [("Samples", num(c["samples"])), ("Matched", num(c["matched"])),
                  ("Mismatched", num(c["mismatched"]))]
    count_rows += [(f"↳ {k}", num(n)) for k, n in c["mismatched_by_kind"].items()]
    count_rows += [("Ignored", num(c["ignored"]))] + [(f"↳ rule {k}", num(n)) for k, n in c["ignored_by_rule"].items()]
    count_rows += [("Errors", num(c["errors"]))]
    stale_rows = [(f"{src.upper()} p50 / p99", f"{seconds(q['p50_seconds'])} / {seconds(q['p99_seconds'])}")
                  for src, q in (("ws", st["ws"]), ("rest", st["rest"]))]
    stale_rows += [(f"{src.upper()} max ({num(q['count'])} samples)", seconds(q["max_seconds"]))
                   for src, q in (("ws", st["ws"]), ("rest", st["rest"]))]
    return ('<div class="grid2"><div><h3>Noise floor</h3>' + _kv(floor_rows) + "</div><div><h3>Sample counts</h3>"
            + _kv(count_rows) + "<h3>Staleness (receive time − exchange time)</h3>" + _kv(stale_rows) + "</div></div>")


def _windows(s: dict[str, Any]) -> str:
    windows = s["timeline"]["windows"]
    if not windows:
        return ""
    rows = "".join(
        f"<tr><td class=\"t\">{esc(utc_short(w['start_ms']))} – {esc(utc_short(w['end_ms'], with_date=False))}</td>"
        f"<td class=\"t\">{esc(VERDICT_GLYPH[w['verdict']])} {esc(VERDICT_LABEL[w['verdict']])}</td>"
        f"<td class=\"n\">{num(w['samples'])}</td><td class=\"n\">{num(w['mismatches'])}</td>"
        f"<td class=\"n\">{pct(w['mismatch_ratio'])}</td>"
        f"<td class=\"n t\">{pct(w['wilson_low'], 1)} – {pct(w['wilson_high'], 1)}</td>"
        f"<td>{esc(w['reason'])}</td></tr>"
        for w in reversed(windows))
    open_ = " open" if len(windows) <= 12 else ""
    return (f"<details{open_}><summary>All {len(windows):,} windows, newest first</summary><table><thead><tr>"
            "<th>Window (UTC)</th><th>Verdict</th><th class=\"n\">Samples</th><th class=\"n\">Mismatches</th>"
            f"<th class=\"n\">Rate</th><th class=\"n\">{windows[-1]['confidence'] * 100:g}% interval</th>"
            "<th>Reason</th></tr></thead>"
            f"<tbody>{rows}</tbody></table></details>")


def _footer(meta: dict[str, Any], report: dict[str, Any]) -> str:
    return (f"<footer><p>Report schema {esc(report['schema'])} v{esc(report['schema_version'])} · "
            f"generated {esc(utc_short(meta['generated_at_ms']))} · agent {esc(meta['agent_version'])} · "
            f"config sha256 <code>{esc(meta['config_sha256'])}</code> · promote after "
            f"{esc(meta['consecutive_passes_to_promote'])} consecutive passing windows · "
            f"exchanges: {esc(', '.join(meta['exchanges']) or 'none')}</p></footer>")
