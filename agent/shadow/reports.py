"""Scheduled shadow reports: one HTML, Markdown and JSON file per period under ``state_dir/reports``.

Besides the period (``shadow.report_interval_seconds``, an hour by default) a first report is written as
soon as there is shadow data (a shadow exchange records its starting mode), and again once the first
window has closed: ``/v1/reports/latest`` answers from the start instead of 404 for the first hour.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import datetime, timezone
from pathlib import Path

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.interval import IntervalTrigger

from agent import __version__
from agent.config.models import FeedAgentConfig
from agent.shadow.report import build_report, render_html, render_json, render_markdown
from agent.shadow.sizing import window_sizing
from agent.shadow.store import ShadowStore

log = logging.getLogger("agent.shadow.reports")

FORMATS = {"json": render_json, "md": render_markdown, "html": render_html}
_JOB_ID = "agent/shadow-reports"
_FIRST_JOB_ID = "agent/shadow-reports-first"
#: How often to look for the data of a first report (a cheap query) until one with a window is written.
FIRST_REPORT_CHECK_SECONDS = 15.0


class ReportWriter:
    """Writes reports of every exchange with shadow data on a schedule; keeps the newest ``keep`` sets."""

    def __init__(self, store: ShadowStore, directory: Path, *, config_sha256: str, keep: int = 48) -> None:
        self.store = store
        self.directory = directory
        self.config_sha256 = config_sha256
        self.keep = keep
        self._since_seconds = 3600.0
        self._passes_to_promote = 3
        self._first_with_window = False
        self._scheduler: AsyncIOScheduler | None = None

    def schedule(self, scheduler: AsyncIOScheduler, config: FeedAgentConfig) -> None:
        """(Re)schedule the job at the shortest ``shadow.report_interval_seconds`` of the exchanges."""
        shadows = [e.shadow for e in config.exchanges.values()]
        interval = min(s.report_interval_seconds for s in shadows)
        longest = max(window_sizing(e).window_seconds for e in config.exchanges.values())
        self._since_seconds = max(interval, longest * 2)
        self._passes_to_promote = max(e.rollback.promote_after_passing_windows for e in config.exchanges.values())
        scheduler.add_job(self._write_job, IntervalTrigger(seconds=interval), id=_JOB_ID, name=_JOB_ID,
                          replace_existing=True, coalesce=True, max_instances=1, misfire_grace_time=None)
        self._scheduler = scheduler
        if not self._first_with_window:
            scheduler.add_job(self._first_job, IntervalTrigger(seconds=FIRST_REPORT_CHECK_SECONDS), id=_FIRST_JOB_ID,
                              name=_FIRST_JOB_ID, replace_existing=True, coalesce=True, max_instances=1,
                              misfire_grace_time=None, next_run_time=datetime.now(timezone.utc))

    async def _write_job(self) -> None:
        try:
            await asyncio.to_thread(self.write)
        except Exception:  # noqa: BLE001 - a report failure must not stop the schedule
            log.exception("scheduled report failed", extra={"event": "report_failed"})

    async def _first_job(self) -> None:
        try:
            done = await asyncio.to_thread(self.write_first)
        except Exception:  # noqa: BLE001 - a report failure must not stop the schedule
            log.exception("first report failed", extra={"event": "report_failed"})
            return
        if done and self._scheduler is not None and self._scheduler.get_job(_FIRST_JOB_ID) is not None:
            self._scheduler.remove_job(_FIRST_JOB_ID)

    def write_first(self, now_ms: int | None = None) -> bool:
        """Write the early reports: one as soon as there is shadow data, one once a window has closed.

        Returns True when nothing early is left to write (a report with a window exists).
        """
        has_window = bool(self.store.windows(limit=1))
        if self.latest() is None or (has_window and not self._first_with_window):
            if self.write(now_ms) is not None and has_window:
                self._first_with_window = True
        elif has_window:
            self._first_with_window = True
        return self._first_with_window

    def write(self, now_ms: int | None = None) -> Path | None:
        """Render the report of the last period into files; None when there is no shadow data at all."""
        now_ms = now_ms or int(time.time() * 1000)
        if not self.store.exchanges():
            return None
        report = build_report(self.store, exchange=None, since_ms=now_ms - int(self._since_seconds * 1000),
                              now_ms=now_ms, agent_version=__version__, config_sha256=self.config_sha256,
                              consecutive_passes_to_promote=self._passes_to_promote)
        self.directory.mkdir(parents=True, exist_ok=True)
        stem = time.strftime("shadow-%Y%m%dT%H%M%SZ", time.gmtime(now_ms / 1000))
        for ext, render in FORMATS.items():
            tmp = self.directory / f".{stem}.{ext}.tmp"
            tmp.write_text(render(report), encoding="utf-8")
            tmp.replace(self.directory / f"{stem}.{ext}")
        self._prune()
        log.info("shadow report written", extra={"event": "report_written", "path": str(self.directory / stem)})
        return self.directory / f"{stem}.html"

    def latest(self, ext: str = "json") -> Path | None:
        """The newest report file of that format."""
        files = sorted(self.directory.glob(f"shadow-*.{ext}"))
        return files[-1] if files else None

    def _prune(self) -> None:
        stems = sorted({p.name.split(".")[0] for p in self.directory.glob("shadow-*.*")})
        for stem in stems[:-self.keep]:
            for path in self.directory.glob(f"{stem}.*"):
                path.unlink(missing_ok=True)
