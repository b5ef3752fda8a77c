"""The HTML shadow report: structure (parsed), self-containment, escaping, and a real headless render."""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

from agent.shadow.model import MismatchExample, Sample
from agent.shadow.report import render_html, render_json, render_markdown
from agent.shadow.store import ShadowStore
from tests.conftest import require_tool
from tests.shadow.test_report_scenarios import (
    T0,
    WINDOW_MS,
    critical_run,
    fail_run,
    pass_run,
    populate,
    report_of,
)


class Page(HTMLParser):
    """Every element with its attributes, the text inside <svg><title>, and all text."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.elements: list[tuple[str, dict[str, str | None]]] = []
        self.stack: list[str] = []
        self.svg_titles: list[str] = []
        self.text: list[str] = []
        self.classes: set[str] = set()

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        self.elements.append((tag, attributes))
        self.classes.update((attributes.get("class") or "").split())
        self.stack.append(tag)

    def handle_endtag(self, tag):
        while self.stack:
            if self.stack.pop() == tag:
                break

    def handle_data(self, data):
        self.text.append(data)
        if self.stack[-2:] == ["svg", "title"]:
            self.svg_titles.append(data)

    def tags(self, name: str) -> list[dict[str, str | None]]:
        return [attrs for tag, attrs in self.elements if tag == name]

    @property
    def all_text(self) -> str:
        return "".join(self.text)


def parse(html_text: str) -> Page:
    page = Page()
    page.feed(html_text)
    page.close()
    return page


@pytest.fixture
def store(tmp_path: Path):
    with ShadowStore(tmp_path / "shadow.sqlite3") as s:
        yield s


def test_page_has_banner_charts_and_tables(store):
    fail_run(store)

    page = parse(render_html(report_of(store)))

    assert {"banner", "act-roll_back", "action-word", "tiles"} <= page.classes
    assert "ROLL BACK" in page.all_text and "bybit-main: FAIL — roll back" in page.all_text
    svgs = page.tags("svg")
    assert len(svgs) == 3 and all(s["role"] == "img" and s["aria-labelledby"] for s in svgs)
    assert page.svg_titles == ["Verdict timeline of bybit-main", "Price divergence WS vs REST, bybit-main",
                               "WebSocket lead and lag over REST, bybit-main"]
    headers = [t for t in page.text if t in ("Symbol", "Trace id", "Window (UTC)")]
    assert list(dict.fromkeys(headers)) == ["Symbol", "Trace id", "Window (UTC)"]   # symbols, examples, windows
    assert len(page.tags("table")) >= 6
    assert page.all_text.index("ETHUSDT") < page.all_text.index("BTCUSDT", page.all_text.index("Symbols, worst"))
    assert "REST-vs-REST q99" in page.all_text and "Sample counts" in page.all_text


def test_page_is_self_contained(store):
    critical_run(store)

    text = render_html(report_of(store))
    page = parse(text)

    assert not page.tags("script") and not page.tags("link") and not page.tags("img") and not page.tags("iframe")
    for _tag, attrs in page.elements:
        for name in ("src", "href", "xlink:href", "action"):
            value = attrs.get(name)
            assert value is None or value.startswith("#"), (name, value)
    assert "http" not in text and "//" not in text.replace("://", "")
    assert "@import" not in text and "@font-face" not in text


def test_critical_report_marks_the_example_and_the_mode_change(store):
    critical_run(store)

    page = parse(render_html(report_of(store)))

    text = page.all_text
    assert "1 critical" in text and "missed_close" in text and "4bf92f3577b34da6a3ce929d0e0e4736" in text
    assert "shadow → rest" in text and "shadow_critical" in text and "automatic" in text
    assert "→ rest" in "".join(page.text)                       # the timeline marker's label


def test_pass_and_empty_reports_render(store, tmp_path):
    pass_run(store)
    assert "act-promote" in parse(render_html(report_of(store))).classes

    with ShadowStore(tmp_path / "empty.sqlite3") as empty:
        page = parse(render_html(report_of(empty, exchange=None)))
    assert "act-hold" in page.classes and "NO DATA" in page.all_text and "No data is not a pass" in page.all_text


NASTY_EXCHANGE = '<script>alert("x")</script>'
NASTY_SYMBOL = '"><img src=x onerror=alert(1)>'
NASTY_REASON = "</title></svg><script>alert(2)</script>"


def test_every_string_is_escaped(store):
    populate(store, [("fail", NASTY_REASON, {"BTCUSDT": 9.0})], exchange=NASTY_EXCHANGE)
    store.add_samples([Sample(exchange=NASTY_EXCHANGE, kind="price", symbol=NASTY_SYMBOL, ts_ms=T0 + 5,
                              result="mismatch", mismatch_kind="price_divergence", divergence_ratio=0.01)])
    store.add_examples([MismatchExample(exchange=NASTY_EXCHANGE, window_start_ms=T0, ts_ms=T0 + 5,
                                        kind="price_divergence", symbol=NASTY_SYMBOL, rest_value="<b>1</b>",
                                        ws_value="2&amp;", detail="<iframe>", trace_id="'onmouseover='x")])
    store.add_transition(exchange=NASTY_EXCHANGE, from_mode="shadow", to_mode="<i>rest</i>",
                         reason=NASTY_REASON, automatic=True, ts_ms=T0 + WINDOW_MS)

    page = parse(render_html(report_of(store, exchange=None)))

    assert {tag for tag, _ in page.elements} <= {
        "html", "head", "meta", "title", "style", "body", "header", "b", "span", "code", "main", "section", "div",
        "h1", "h2", "h3", "p", "dl", "dt", "dd", "small", "ul", "li", "figure", "figcaption", "svg", "desc",
        "defs", "pattern", "rect", "line", "text", "g", "table", "caption", "thead", "tbody", "tr", "th", "td",
        "details", "summary", "footer", "nav", "a"}
    assert not any(name.startswith("on") for _, attrs in page.elements for name in attrs)
    text = page.all_text
    for raw in (NASTY_EXCHANGE, NASTY_SYMBOL, NASTY_REASON, "<b>1</b>", "2&amp;", "<iframe>", "<i>rest</i>"):
        assert raw in text, raw


def _png_size(path: Path) -> tuple[int, int]:
    header = path.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", header[16:24])


@pytest.mark.tool
def test_headless_chromium_renders_the_verdict(store, tmp_path):
    chromium = require_tool("chromium")
    critical_run(store)
    page = tmp_path / "report.html"
    page.write_text(render_html(report_of(store)), encoding="utf-8")
    shot = tmp_path / "report.png"
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'profile'}", "--hide-scrollbars"]

    subprocess.run([chromium, *flags, "--window-size=1280,1600", f"--screenshot={shot}", page.as_uri()],
                   check=True, timeout=120, capture_output=True)
    dom = subprocess.run([chromium, *flags, "--dump-dom", page.as_uri()],
                         check=True, timeout=120, capture_output=True, text=True).stdout

    assert _png_size(shot) == (1280, 1600) and shot.stat().st_size > 20_000
    assert "ROLL BACK" in dom and "bybit-main: 1 critical — roll back" in dom
    assert "<svg" in dom and "missed_close" in dom
    if keep := os.environ.get("FEEDAGENT_SHADOW_SCREENSHOT"):
        shutil.copyfile(shot, keep)


def test_an_archived_json_report_renders_the_same(store):
    fail_run(store)
    report = report_of(store)

    again = json.loads(render_json(report))

    assert render_html(again) == render_html(report)
    assert render_markdown(again) == render_markdown(report)
