"""Structured logs: one JSON object per line on stderr, a stable ``event`` name per record,
every registered secret masked wherever it appears, and the ``trace_id``/``span_id`` of
the current span on every record emitted inside one (how events correlate with traces).
"""

from __future__ import annotations

import json
import logging
import re
import sys
import threading
import time
from typing import Any

from opentelemetry import trace

_STANDARD_ATTRS = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime", "taskName"}
# scheme://user:password@host: the user info of any URL (a collector or proxy password, a token as user name)
_URL_USERINFO = re.compile(r"\b([A-Za-z][A-Za-z0-9+.-]*://)[^\s/?#\"']+@")


def mask_url_credentials(text: str) -> str:
    """``text`` with the user info of every URL in it replaced: ``https://***@host/path``."""
    return _URL_USERINFO.sub(r"\1***@", text)


class SecretMasker:
    """Holds secret values (API keys, tokens) and replaces them in any text."""

    def __init__(self) -> None:
        self._secrets: set[str] = set()
        self._lock = threading.Lock()

    def add(self, *values: str | None) -> None:
        """Register values that must never be printed (short ones are ignored: they would mask noise)."""
        with self._lock:
            self._secrets.update(v for v in values if v and len(v) >= 6)

    def mask(self, text: str) -> str:
        """``text`` with every registered secret, and credentials written into URLs, replaced by ``***``."""
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, "***")
        return mask_url_credentials(text)


MASKER = SecretMasker()


def trace_fields() -> dict[str, str]:
    """``trace_id`` and ``span_id`` (hex) of the current span; empty outside a span.

    Formatters call this while handling the record, on the caller's thread and
    context (the handlers here are synchronous), so the span is the emitter's.
    """
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return {}
    return {"trace_id": format(context.trace_id, "032x"), "span_id": format(context.span_id, "016x")}


def event_name(record: logging.LogRecord) -> str:
    """The stable name the code gave the record (``extra={"event": ...}``), never one built from its text.

    Every call in ``agent/`` gives one (tests/telemetry/test_log_events.py); records of
    libraries (aiohttp, apscheduler, opentelemetry) are ``library_log``, told apart by ``logger``.
    """
    event = getattr(record, "event", None)
    if isinstance(event, str) and event:
        return event
    return "unnamed" if record.name == "agent" or record.name.startswith("agent.") else "library_log"


class JsonFormatter(logging.Formatter):
    """``{"ts", "level", "logger", "event", "msg", ...extra}`` per line, secrets masked."""

    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": event_name(record),
            "msg": record.getMessage(),
            **trace_fields(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD_ATTRS and key != "event" and not key.startswith("_"):
                payload[key] = value
        if record.exc_info:
            payload["exception"] = self.formatException(record.exc_info)
        return MASKER.mask(json.dumps(payload, default=str, separators=(",", ":")))


class TextFormatter(logging.Formatter):
    """Human-readable lines for a terminal, secrets masked."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        extras = {**trace_fields(),
                  **{k: v for k, v in vars(record).items() if k not in _STANDARD_ATTRS and not k.startswith("_")}}
        line = super().format(record)
        if extras:
            line += " " + " ".join(f"{k}={v}" for k, v in extras.items())
        return MASKER.mask(line)


def configure_logging(fmt: str = "json", level: str = "info") -> None:
    """Send every log record to stderr in ``fmt`` (json|text); stdout is kept for events."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    for noisy in ("apscheduler", "aiohttp.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # The OTLP exporter warns at every retry while a collector is down; its final failure per batch is an error.
    logging.getLogger("opentelemetry.exporter").setLevel(logging.ERROR)
