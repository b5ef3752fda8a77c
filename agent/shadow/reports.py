"""Scheduled shadow reports: one HTML, Markdown and JSON file per period under ``state_dir/reports``."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.interval import IntervalTrigger

from agent import __version__
from agent.config.models import FeedAgentConfig
from agent.shadow.report import build_report, render_html, render_json, render_markdown
from agent.shadow.store import ShadowStore

log = logging.getLogger("agent.shadow.reports")

FORMATS = {"json": render_json, "md": render_markdown, "html": render_html}
_JOB_ID = "agent/shadow-reports"


class ReportWriter:
    """Writes reports of every exchange with shadow data on a schedule; keeps the newest ``keep`` sets."""

    def __init__(self, store: ShadowStore, directory: Path, *, config_sha256: str, keep: int = 48) -> None:
        self.store = store
        self.directory = directory
        self.config_sha256 = config_sha256
        self.keep = keep
        self._since_seconds = 3600.0
        self._passes_to_promote = 3

    def schedule(self, scheduler: AsyncIOScheduler, config: FeedAgentConfig) -> None:
        """(Re)schedule the job at the shortest ``shadow.report_interval_seconds`` of the exchanges."""
        shadows = [e.shadow for e in config.exchanges.values()]
        interval = min(s.report_interval_seconds for s in shadows)
        self._since_seconds = max(interval, max(s.window_seconds for s in shadows) * 2)
        self._passes_to_promote = max(e.rollback.promote_after_passing_windows for e in config.exchanges.values())
        scheduler.add_job(self._write_job, IntervalTrigger(seconds=interval), id=_JOB_ID, name=_JOB_ID,
                          replace_existing=True, coalesce=True, max_instances=1, misfire_grace_time=None)

    async def _write_job(self) -> None:
        try:
            await asyncio.to_thread(self.write)
        except Exception:  # noqa: BLE001 - a report failure must not stop the schedule
            log.exception("scheduled report failed", extra={"event": "report_failed"})

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
