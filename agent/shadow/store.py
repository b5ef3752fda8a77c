"""ShadowStore: the shadow comparison's samples, windows, examples and mode transitions in SQLite.

One file under ``state_dir`` (``state_dir/shadow.sqlite3``), WAL mode, schema
versioned with ``PRAGMA user_version``: the migrations below run in order on
open, and a file written by a newer agent is refused rather than guessed at.

Every public write is one transaction, so a batch is all there or not at all,
and a crash never loses a committed batch (WAL with ``synchronous=NORMAL``
survives a process crash; a power cut may lose the last few commits).

The calls block. They are meant to be made rarely and in batches, off the hot
path: the comparator buffers samples and hands a window's worth at once
(``record_window``), from ``asyncio.to_thread`` or a scheduled job. The
connection is shared across threads behind a lock, so that is safe.

Samples keep one column per field of :class:`~agent.shadow.model.Sample`; a
field the model gains later and the table does not yet have is kept in the
``extra`` JSON column until a migration gives it a column. Windows, examples
and calibrations are stored as msgspec JSON next to the columns they are
queried by.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import msgspec

from agent.shadow.model import CRITICAL_KINDS, MismatchExample, NoiseFloor, Sample, WindowVerdict

STORE_FILENAME = "shadow.sqlite3"


class ShadowStoreError(RuntimeError):
    """The shadow database cannot be used (newer schema, corrupt file)."""


class ModeTransition(msgspec.Struct, frozen=True, kw_only=True):
    """A data-source mode change of one exchange, for the report's timeline."""

    exchange: str
    from_mode: str
    to_mode: str
    reason: str
    automatic: bool
    ts_ms: int


class Calibration(msgspec.Struct, frozen=True, kw_only=True):
    """A noise floor as measured at ``ts_ms``."""

    exchange: str
    ts_ms: int
    noise_floor: NoiseFloor


# -- SCHEMA ---------------------------------------------------------------------------------------

_V1 = """
CREATE TABLE samples (
    id INTEGER PRIMARY KEY, exchange TEXT NOT NULL, ts_ms INTEGER NOT NULL, kind TEXT NOT NULL,
    symbol TEXT NOT NULL, position_idx INTEGER, result TEXT NOT NULL, mismatch_kind TEXT, ignored_by TEXT,
    rest_value TEXT, ws_value TEXT, divergence_ratio REAL, tolerance_ratio REAL, rest_staleness_seconds REAL,
    ws_staleness_seconds REAL, ws_lead_seconds REAL, ws_lag_seconds REAL, trace_id TEXT, detail TEXT,
    extra TEXT  -- JSON: Sample fields without a column yet
);
CREATE INDEX samples_exchange_ts ON samples (exchange, ts_ms);
CREATE TABLE windows (
    exchange TEXT NOT NULL, window_start_ms INTEGER NOT NULL, window_end_ms INTEGER NOT NULL,
    verdict TEXT NOT NULL, body TEXT NOT NULL,  -- body: the WindowVerdict as JSON
    PRIMARY KEY (exchange, window_start_ms)
);
CREATE INDEX windows_exchange_end ON windows (exchange, window_end_ms);
CREATE TABLE examples (
    id INTEGER PRIMARY KEY, exchange TEXT NOT NULL, window_start_ms INTEGER NOT NULL, ts_ms INTEGER NOT NULL,
    kind TEXT NOT NULL, critical INTEGER NOT NULL, symbol TEXT NOT NULL, body TEXT NOT NULL
);
CREATE INDEX examples_exchange_ts ON examples (exchange, ts_ms);
CREATE INDEX examples_window_kind ON examples (exchange, window_start_ms, kind);
CREATE TABLE transitions (
    id INTEGER PRIMARY KEY, exchange TEXT NOT NULL, ts_ms INTEGER NOT NULL, from_mode TEXT NOT NULL,
    to_mode TEXT NOT NULL, reason TEXT NOT NULL, automatic INTEGER NOT NULL
);
CREATE INDEX transitions_exchange_ts ON transitions (exchange, ts_ms);
CREATE TABLE calibrations (
    id INTEGER PRIMARY KEY, exchange TEXT NOT NULL, ts_ms INTEGER NOT NULL, body TEXT NOT NULL
);
CREATE INDEX calibrations_exchange_ts ON calibrations (exchange, ts_ms);
"""


def _script(sql: str) -> Callable[[sqlite3.Connection], None]:
    def apply(conn: sqlite3.Connection) -> None:
        for statement in sql.split(";"):
            if statement.strip():
                conn.execute(statement)
    return apply


# Migration i takes the file from user_version i to i + 1. Append only; never edit a shipped one.
_MIGRATIONS: list[Callable[[sqlite3.Connection], None]] = [_script(_V1)]

_SAMPLE_COLUMNS = (
    "exchange", "ts_ms", "kind", "symbol", "position_idx", "result", "mismatch_kind", "ignored_by",
    "rest_value", "ws_value", "divergence_ratio", "tolerance_ratio", "rest_staleness_seconds",
    "ws_staleness_seconds", "ws_lead_seconds", "ws_lag_seconds", "trace_id", "detail",
)
_SAMPLE_SELECT = "SELECT " + ", ".join(_SAMPLE_COLUMNS) + ", extra FROM samples"
_SAMPLE_INSERT = (
    "INSERT INTO samples (" + ", ".join(_SAMPLE_COLUMNS) + ", extra) VALUES ("
    + ", ".join("?" * (len(_SAMPLE_COLUMNS) + 1)) + ")"
)


def schema_version() -> int:
    """The store schema version this agent writes (``PRAGMA user_version``)."""
    return len(_MIGRATIONS)


class ShadowStore:
    """Samples, window verdicts, mismatch examples, mode transitions and calibrations of the shadow mode.

    Parameters
    ----------
    path
        The SQLite file (created with its parent folder if missing).
    retain_samples_seconds
        Samples older than this, counted back from the newest sample of the same
        exchange, are deleted whenever a batch is added. Windows, transitions and
        calibrations are kept.
    max_samples_per_exchange
        At most this many samples per exchange; the oldest go first.
    max_examples_per_kind_per_window
        Mismatch examples kept per (exchange, window, kind); later ones are dropped.
    max_examples_per_exchange
        Examples kept per exchange in total; the oldest go first.
    """

    def __init__(
        self,
        path: Path,
        *,
        retain_samples_seconds: float = 2 * 86_400,
        max_samples_per_exchange: int = 500_000,
        max_examples_per_kind_per_window: int = 50,
        max_examples_per_exchange: int = 5_000,
    ) -> None:
        self.path = Path(path)
        self.retain_samples_ms = int(retain_samples_seconds * 1000)
        self.max_samples_per_exchange = max_samples_per_exchange
        self.max_examples_per_kind_per_window = max_examples_per_kind_per_window
        self.max_examples_per_exchange = max_examples_per_exchange
        self._lock = threading.Lock()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._conn: sqlite3.Connection | None = sqlite3.connect(
            self.path, isolation_level=None, check_same_thread=False, timeout=5.0)
        try:
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=NORMAL")
            self._migrate()
        except BaseException:
            self._conn.close()
            self._conn = None
            raise

    # -- LIFECYCLE --------------------------------------------------------------------------------

    def close(self) -> None:
        """Checkpoint and close; idempotent."""
        with self._lock:
            if self._conn is None:
                return
            try:
                self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            finally:
                self._conn.close()
                self._conn = None

    def __enter__(self) -> ShadowStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def user_version(self) -> int:
        """The schema version of the open file."""
        with self._lock:
            return int(self._db().execute("PRAGMA user_version").fetchone()[0])

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise ShadowStoreError(f"{self.path}: the shadow store is closed")
        return self._conn

    def _migrate(self) -> None:
        conn = self._db()
        current = int(conn.execute("PRAGMA user_version").fetchone()[0])
        target = len(_MIGRATIONS)
        if current > target:
            raise ShadowStoreError(
                f"{self.path}: shadow database schema version {current} is newer than this agent "
                f"supports ({target}); run a newer feedagent, or move the file aside to start afresh")
        for version in range(current, target):
            conn.execute("BEGIN IMMEDIATE")
            try:
                _MIGRATIONS[version](conn)
                conn.execute(f"PRAGMA user_version = {version + 1}")
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            conn = self._db()
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    @contextmanager
    def _reading(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            yield self._db()

    # -- WRITES -----------------------------------------------------------------------------------

    def add_samples(self, samples: Iterable[Sample]) -> int:
        """Add a batch of samples in one transaction, then prune; returns how many were added."""
        with self._transaction() as conn:
            return self._insert_samples(conn, samples)

    def add_window(self, verdict: WindowVerdict) -> None:
        """Add (or replace, same exchange and start) one window verdict."""
        with self._transaction() as conn:
            self._insert_window(conn, verdict)

    def add_examples(self, examples: Iterable[MismatchExample]) -> int:
        """Add mismatch examples within the caps; returns how many were kept."""
        with self._transaction() as conn:
            return self._insert_examples(conn, examples)

    def record_window(
        self, verdict: WindowVerdict, samples: Iterable[Sample] = (), examples: Iterable[MismatchExample] = (),
    ) -> None:
        """A closed window with its samples and examples, in one transaction (the comparator's call)."""
        with self._transaction() as conn:
            self._insert_samples(conn, samples)
            self._insert_examples(conn, examples)
            self._insert_window(conn, verdict)

    def add_transition(
        self, *, exchange: str, from_mode: str, to_mode: str, reason: str, automatic: bool, ts_ms: int,
    ) -> None:
        """Record a mode transition (shown on the report's timeline)."""
        with self._transaction() as conn:
            conn.execute(
                "INSERT INTO transitions (exchange, ts_ms, from_mode, to_mode, reason, automatic)"
                " VALUES (?, ?, ?, ?, ?, ?)", (exchange, ts_ms, from_mode, to_mode, reason, int(automatic)))

    def add_calibration(self, exchange: str, noise_floor: NoiseFloor, *, ts_ms: int | None = None) -> None:
        """Record a noise floor; ``ts_ms`` defaults to its ``calibrated_at_ms``."""
        ts = ts_ms if ts_ms is not None else noise_floor.calibrated_at_ms
        if ts is None:
            raise ValueError("a calibration needs a time: pass ts_ms or set calibrated_at_ms")
        with self._transaction() as conn:
            conn.execute(
                "INSERT INTO calibrations (exchange, ts_ms, body) VALUES (?, ?, ?)",
                (exchange, ts, msgspec.json.encode(noise_floor).decode()))

    def _insert_samples(self, conn: sqlite3.Connection, samples: Iterable[Sample]) -> int:
        rows = []
        newest: dict[str, int] = {}
        for sample in samples:
            fields = msgspec.to_builtins(sample)
            row = [fields.pop(name, None) for name in _SAMPLE_COLUMNS]
            extra = {k: v for k, v in fields.items() if v is not None}
            row.append(json.dumps(extra, separators=(",", ":")) if extra else None)
            rows.append(row)
            newest[sample.exchange] = max(newest.get(sample.exchange, sample.ts_ms), sample.ts_ms)
        conn.executemany(_SAMPLE_INSERT, rows)
        for exchange, newest_ms in newest.items():
            self._prune_samples(conn, exchange, newest_ms)
        return len(rows)

    def _prune_samples(self, conn: sqlite3.Connection, exchange: str, newest_ms: int) -> None:
        conn.execute("DELETE FROM samples WHERE exchange = ? AND ts_ms < ?",
                     (exchange, newest_ms - self.retain_samples_ms))
        count = conn.execute("SELECT COUNT(*) FROM samples WHERE exchange = ?", (exchange,)).fetchone()[0]
        excess = count - self.max_samples_per_exchange
        if excess > 0:
            conn.execute(
                "DELETE FROM samples WHERE id IN (SELECT id FROM samples WHERE exchange = ?"
                " ORDER BY ts_ms, id LIMIT ?)", (exchange, excess))

    def _insert_window(self, conn: sqlite3.Connection, verdict: WindowVerdict) -> None:
        conn.execute(
            "INSERT OR REPLACE INTO windows (exchange, window_start_ms, window_end_ms, verdict, body)"
            " VALUES (?, ?, ?, ?, ?)",
            (verdict.exchange, verdict.window_start_ms, verdict.window_end_ms, verdict.verdict,
             msgspec.json.encode(verdict).decode()))

    def _insert_examples(self, conn: sqlite3.Connection, examples: Iterable[MismatchExample]) -> int:
        kept: dict[tuple[str, int, str], int] = {}
        touched: set[str] = set()
        stored = 0
        for example in examples:
            key = (example.exchange, example.window_start_ms, example.kind)
            if key not in kept:
                kept[key] = conn.execute(
                    "SELECT COUNT(*) FROM examples WHERE exchange = ? AND window_start_ms = ? AND kind = ?",
                    key).fetchone()[0]
            if kept[key] >= self.max_examples_per_kind_per_window:
                continue
            kept[key] += 1
            conn.execute(
                "INSERT INTO examples (exchange, window_start_ms, ts_ms, kind, critical, symbol, body)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (*key[:2], example.ts_ms, example.kind, int(example.kind in CRITICAL_KINDS), example.symbol,
                 msgspec.json.encode(example).decode()))
            touched.add(example.exchange)
            stored += 1
        for exchange in touched:
            count = conn.execute("SELECT COUNT(*) FROM examples WHERE exchange = ?", (exchange,)).fetchone()[0]
            excess = count - self.max_examples_per_exchange
            if excess > 0:
                conn.execute(
                    "DELETE FROM examples WHERE id IN (SELECT id FROM examples WHERE exchange = ?"
                    " ORDER BY ts_ms, id LIMIT ?)", (exchange, excess))
        return stored

    # -- QUERIES ----------------------------------------------------------------------------------

    def samples(self, exchange: str, since_ms: int | None = None, until_ms: int | None = None) -> list[Sample]:
        """Samples of ``exchange`` with ``since_ms <= ts_ms <= until_ms``, oldest first."""
        where, args = _range("ts_ms", exchange, since_ms, until_ms)
        with self._reading() as conn:
            rows = conn.execute(f"{_SAMPLE_SELECT} {where} ORDER BY ts_ms, id", args).fetchall()
        return [_sample(row) for row in rows]

    def windows(
        self, exchange: str | None = None, since_ms: int | None = None, until_ms: int | None = None,
        *, limit: int | None = None,
    ) -> list[WindowVerdict]:
        """Windows that ended after ``since_ms`` and by ``until_ms``, oldest first; ``limit`` keeps the latest."""
        where, args = _range("window_end_ms", exchange, since_ms, until_ms, since_op=">")
        sql = f"SELECT body FROM windows {where} ORDER BY window_end_ms DESC, window_start_ms DESC"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        with self._reading() as conn:
            rows = conn.execute(sql, args).fetchall()
        return [msgspec.json.decode(body, type=WindowVerdict) for (body,) in reversed(rows)]

    def examples(
        self, exchange: str | None = None, since_ms: int | None = None, limit: int | None = None,
        *, until_ms: int | None = None, critical_first: bool = False,
    ) -> list[MismatchExample]:
        """Mismatch examples, newest first (critical kinds before the rest with ``critical_first``)."""
        where, args = _range("ts_ms", exchange, since_ms, until_ms)
        order = "critical DESC, ts_ms DESC, id DESC" if critical_first else "ts_ms DESC, id DESC"
        sql = f"SELECT body FROM examples {where} ORDER BY {order}"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        with self._reading() as conn:
            rows = conn.execute(sql, args).fetchall()
        return [msgspec.json.decode(body, type=MismatchExample) for (body,) in rows]

    def count_examples(self, exchange: str | None = None, since_ms: int | None = None,
                       until_ms: int | None = None) -> int:
        """How many examples are stored in the range."""
        where, args = _range("ts_ms", exchange, since_ms, until_ms)
        with self._reading() as conn:
            return int(conn.execute(f"SELECT COUNT(*) FROM examples {where}", args).fetchone()[0])

    def transitions(
        self, exchange: str | None = None, since_ms: int | None = None, until_ms: int | None = None,
    ) -> list[ModeTransition]:
        """Mode transitions in ``[since_ms, until_ms]``, oldest first."""
        where, args = _range("ts_ms", exchange, since_ms, until_ms)
        with self._reading() as conn:
            rows = conn.execute(
                "SELECT exchange, from_mode, to_mode, reason, automatic, ts_ms FROM transitions"
                f" {where} ORDER BY ts_ms, id", args).fetchall()
        return [ModeTransition(exchange=r[0], from_mode=r[1], to_mode=r[2], reason=r[3],
                               automatic=bool(r[4]), ts_ms=r[5]) for r in rows]

    def calibrations(
        self, exchange: str | None = None, since_ms: int | None = None, until_ms: int | None = None,
    ) -> list[Calibration]:
        """Noise-floor calibrations in ``[since_ms, until_ms]``, oldest first."""
        where, args = _range("ts_ms", exchange, since_ms, until_ms)
        with self._reading() as conn:
            rows = conn.execute(
                f"SELECT exchange, ts_ms, body FROM calibrations {where} ORDER BY ts_ms, id", args).fetchall()
        return [Calibration(exchange=r[0], ts_ms=r[1], noise_floor=msgspec.json.decode(r[2], type=NoiseFloor))
                for r in rows]

    def exchanges(self) -> list[str]:
        """Every exchange with anything stored, sorted."""
        with self._reading() as conn:
            rows = conn.execute(
                "SELECT exchange FROM windows UNION SELECT exchange FROM samples"
                " UNION SELECT exchange FROM examples UNION SELECT exchange FROM transitions"
                " UNION SELECT exchange FROM calibrations").fetchall()
        return sorted(r[0] for r in rows)


def _range(column: str, exchange: str | None, since_ms: int | None, until_ms: int | None,
           since_op: str = ">=") -> tuple[str, list[Any]]:
    clauses: list[str] = []
    args: list[Any] = []
    if exchange is not None:
        clauses.append("exchange = ?")
        args.append(exchange)
    if since_ms is not None:
        clauses.append(f"{column} {since_op} ?")
        args.append(since_ms)
    if until_ms is not None:
        clauses.append(f"{column} <= ?")
        args.append(until_ms)
    return ("WHERE " + " AND ".join(clauses) if clauses else ""), args


def _sample(row: tuple[Any, ...]) -> Sample:
    fields = dict(zip(_SAMPLE_COLUMNS, row[:-1], strict=True))
    if row[-1]:
        fields.update(json.loads(row[-1]))
    return msgspec.convert(fields, Sample)
