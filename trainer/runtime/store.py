"""What a runtime session writes into its run folder, and the metrics read back from it.

Layout under the run folder::

    runtime.db       SQLite (WAL): tables signals, fills, trades, equity, events, state; inside ``candle()``
                     a candle's rows and the runtime's checkpoint commit as one transaction, elsewhere
                     every call commits
    signals.jsonl    one JSON object per signal row, as given (made JSON-safe)
    trades.jsonl     one JSON object per closed trade
    events.jsonl     one JSON object per event: {"kind", "at", "detail"}

Timestamps are stored as UTC ISO strings with a fixed width (``2024-01-01T00:00:00.000000+00:00``), so SQL
compares them in time order. A signal row's time is its ``timestamp`` (or ``at``); a trade's is its exit
time. ``metrics(window, now)`` covers rows with ``now - window < time <= now``; ``now`` defaults to the
newest time the store holds (candle time, so a replay of past candles reports its own last day).
Events of kind ``guardrail`` or ``breach`` (or named after a breach kind) count as breaches, kind
``kill_switch`` as kill-switch events.

The JSONL files follow the database: a candle's lines are appended after its transaction commits, and
``rebuild_jsonl`` rewrites them from the database (a resumed session does, so a kill between the commit and
the append neither loses nor doubles a line). ``synchronous=NORMAL``: a killed process loses nothing
committed (only a power cut may lose the last commits).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
import os
import sqlite3
import time
import uuid
from contextlib import contextmanager
from dataclasses import asdict, is_dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from trainer.runtime.broker import ClosedTrade, Fill, utc_timestamp
from trainer.runtime.guardrails import BREACH_KINDS

log = logging.getLogger("candlelab.runtime")

DB_NAME = "runtime.db"
BREACH_EVENTS = ("guardrail", "breach", *BREACH_KINDS)
KILL_SWITCH_EVENT = "kill_switch"
_TIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%f+00:00"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS signals (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at TEXT,
    symbol TEXT,
    status TEXT,
    tier TEXT,
    row_json TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS signals_at ON signals (at);
CREATE TABLE IF NOT EXISTS fills (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at TEXT NOT NULL,
    symbol TEXT NOT NULL,
    side INTEGER NOT NULL,
    quantity REAL NOT NULL,
    price REAL NOT NULL,
    cost REAL NOT NULL,
    reason TEXT
);
CREATE INDEX IF NOT EXISTS fills_at ON fills (at);
CREATE TABLE IF NOT EXISTS trades (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    symbol TEXT NOT NULL,
    side INTEGER NOT NULL,
    entry_time TEXT NOT NULL,
    entry_price REAL NOT NULL,
    exit_time TEXT NOT NULL,
    exit_price REAL NOT NULL,
    quantity REAL NOT NULL,
    gross_pnl REAL NOT NULL,
    costs REAL NOT NULL,
    net_pnl REAL NOT NULL,
    reason TEXT
);
CREATE INDEX IF NOT EXISTS trades_exit ON trades (exit_time);
CREATE TABLE IF NOT EXISTS equity (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at TEXT NOT NULL,
    equity REAL NOT NULL,
    exposure REAL
);
CREATE INDEX IF NOT EXISTS equity_at ON equity (at);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at TEXT NOT NULL,
    kind TEXT NOT NULL,
    detail_json TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_at ON events (at);
CREATE TABLE IF NOT EXISTS state (
    key TEXT PRIMARY KEY,
    value_json TEXT NOT NULL
);
"""


def iso(value) -> str:
    """A UTC timestamp as the store's fixed-width ISO string."""
    if type(value) is pd.Timestamp and value.tz is not None and value.value >= 0:  # every candle's times
        seconds, micros = divmod(value.value // 1000, 1_000_000)
        return f"{time.strftime('%Y-%m-%dT%H:%M:%S', time.gmtime(seconds))}.{micros:06d}+00:00"
    if type(value) is str:  # a signal row's ISO time: the standard library reads it without pandas' parser
        try:
            parsed = dt.datetime.fromisoformat(value)
        except ValueError:
            parsed = None
        if parsed is not None and parsed.tzinfo is not None:
            return parsed.astimezone(dt.timezone.utc).strftime(_TIME_FORMAT)
    return utc_timestamp(value, "runtime.store").strftime(_TIME_FORMAT)


def json_safe(obj):
    """Plain JSON types: timestamps as ISO strings, numpy scalars unwrapped, NaN/inf as None."""
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set)):
        return [json_safe(v) for v in obj]
    if is_dataclass(obj) and not isinstance(obj, type):
        return json_safe(asdict(obj))
    if isinstance(obj, np.ndarray):
        return json_safe(obj.tolist())
    if isinstance(obj, np.generic):
        obj = obj.item()
    if obj is pd.NaT:
        return None
    if isinstance(obj, (pd.Timestamp, dt.datetime, dt.date)):
        return obj.isoformat()
    if isinstance(obj, pd.Timedelta):
        return str(obj)
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if obj is None or isinstance(obj, (str, int, float, bool)):
        return obj
    return str(obj)


def _dumps(obj) -> str:
    """``obj`` as JSON through ``json_safe``; plain JSON values (str keys, finite floats) skip its walk, which
    cost more than the rest of a replayed candle's record (anything else makes ``json.dumps`` raise)."""
    try:
        if _plain_keys(obj):
            return json.dumps(obj, sort_keys=True, allow_nan=False)
    except (TypeError, ValueError):  # a timestamp, a numpy integer, NaN/inf: the full conversion
        pass
    return json.dumps(json_safe(obj), sort_keys=True, allow_nan=False)


def _plain_keys(obj) -> bool:
    """Every dict key in ``obj`` is a str (json.dumps would write other keys unlike ``json_safe``)."""
    if isinstance(obj, dict):
        return all(type(k) is str for k in obj) and all(
            _plain_keys(v) for v in obj.values() if isinstance(v, _CONTAINERS)
        )
    if isinstance(obj, (list, tuple)):
        return all(_plain_keys(v) for v in obj if isinstance(v, _CONTAINERS))
    return True


_CONTAINERS = (dict, list, tuple)


class RuntimeStore:
    """SQLite + JSONL record of one runtime session in ``run_dir``."""

    def __init__(self, run_dir: Path, readonly: bool = False):
        self.run_dir = Path(run_dir)
        self.db_path = self.run_dir / DB_NAME
        self.jsonl = {name: self.run_dir / f"{name}.jsonl" for name in ("signals", "trades", "events")}
        self._pending_lines: list[tuple[str, str]] | None = None  # JSONL lines of the open candle transaction
        self._files: dict = {}  # JSONL name -> its file, open for appending while the store is
        if readonly:  # reading a session's record afterwards must never create or change it
            self._con = sqlite3.connect(
                f"{self.db_path.resolve().as_uri()}?mode=ro", uri=True, timeout=30.0, isolation_level=None
            )
            self._con.row_factory = sqlite3.Row
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._con: sqlite3.Connection | None = sqlite3.connect(self.db_path, isolation_level=None, timeout=30.0)
        self._con.row_factory = sqlite3.Row
        if self._con.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
            self._con.execute("PRAGMA journal_mode=WAL")
        self._con.execute("PRAGMA synchronous=NORMAL")
        self._con.executescript(_SCHEMA)
        for path in self.jsonl.values():
            path.touch()

    # transactions and state
    @contextmanager
    def candle(self):
        """One candle's writes as one transaction: committed together at the end of the block, rolled back
        (JSONL lines dropped) when it raises; its JSONL lines are appended after the commit."""
        con = self._connection()
        if self._pending_lines is not None:
            raise RuntimeError("runtime store: a candle transaction is already open")
        con.execute("BEGIN IMMEDIATE")
        self._pending_lines = []
        try:
            yield self
        except BaseException:
            self._pending_lines = None
            con.execute("ROLLBACK")
            raise
        lines, self._pending_lines = self._pending_lines, None
        con.execute("COMMIT")
        for name, line in lines:
            self._write_line(name, line, flush=False)
        for name in {name for name, _ in lines}:  # in the OS's hands before the next candle starts
            self._files[name].flush()

    def put_state(self, key: str, value) -> None:
        """Store a JSON value under ``key`` (replacing it), inside the open transaction if there is one."""
        # an upsert rewrites the row in place (INSERT OR REPLACE deletes and reinserts it, index included)
        self._connection().execute(
            "INSERT INTO state (key, value_json) VALUES (?, ?) ON CONFLICT (key) "
            "DO UPDATE SET value_json = excluded.value_json",
            (str(key), _dumps(value)),
        )

    def put_state_json(self, key: str, text: str) -> None:
        """``put_state`` of a value already encoded as JSON text."""
        self._connection().execute(
            "INSERT INTO state (key, value_json) VALUES (?, ?) ON CONFLICT (key) "
            "DO UPDATE SET value_json = excluded.value_json",
            (str(key), str(text)),
        )

    def get_state(self, key: str, default=None):
        try:
            row = self._connection().execute("SELECT value_json FROM state WHERE key = ?", (str(key),)).fetchone()
        except sqlite3.OperationalError:  # a database from before the state table
            return default
        return default if row is None else json.loads(row[0])

    def equity_curve(self) -> list[tuple[str, float]]:
        """Every stored (time, equity) point in order."""
        return [(r[0], r[1]) for r in self._connection().execute("SELECT at, equity FROM equity ORDER BY id")]

    def rebuild_jsonl(self) -> None:
        """Rewrite signals/trades/events.jsonl from the database (temp file + rename each)."""
        con = self._connection()
        self._close_files()  # appends go to the rewritten files, not the replaced ones
        rows = {
            "signals": [r[0] for r in con.execute("SELECT row_json FROM signals ORDER BY id")],
            "trades": [
                _dumps({k: r[k] for k in r.keys() if k != "id"})
                for r in con.execute("SELECT * FROM trades ORDER BY id")
            ],
            "events": [
                _dumps({"kind": r["kind"], "at": r["at"], "detail": json.loads(r["detail_json"])})
                for r in con.execute("SELECT kind, at, detail_json FROM events ORDER BY id")
            ],
        }
        for name, lines in rows.items():
            path = self.jsonl[name]
            tmp = path.parent / f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
            try:
                tmp.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
                os.replace(tmp, path)
            finally:
                tmp.unlink(missing_ok=True)

    # writes
    def signal(self, row: dict) -> None:
        when = row.get("timestamp", row.get("at"))
        at = iso(when) if when is not None else None
        tier = row.get("tier")
        status = row.get("status")
        line = _dumps(row)
        self._insert(
            "INSERT INTO signals (at, symbol, status, tier, row_json) VALUES (?, ?, ?, ?, ?)",
            (at, _text(row.get("symbol")), _text(status), _text(tier), line),
        )
        self._append_line("signals", line)

    def fill(self, fill: Fill) -> None:
        self._insert(
            "INSERT INTO fills (at, symbol, side, quantity, price, cost, reason) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                iso(fill.timestamp),
                fill.symbol,
                int(fill.side),
                float(fill.quantity),
                float(fill.price),
                float(fill.cost),
                fill.reason,
            ),
        )

    def trade(self, trade: ClosedTrade) -> None:
        self._insert(
            "INSERT INTO trades (symbol, side, entry_time, entry_price, exit_time, exit_price, quantity,"
            " gross_pnl, costs, net_pnl, reason) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                trade.symbol,
                int(trade.side),
                iso(trade.entry_time),
                float(trade.entry_price),
                iso(trade.exit_time),
                float(trade.exit_price),
                float(trade.quantity),
                float(trade.gross_pnl),
                float(trade.costs),
                float(trade.net_pnl),
                trade.reason,
            ),
        )
        row = asdict(trade)
        row["entry_time"], row["exit_time"] = iso(trade.entry_time), iso(trade.exit_time)
        self._append("trades", row)

    def equity(self, at, equity: float, exposure: float) -> None:
        exposure = float(exposure)
        self._insert(
            "INSERT INTO equity (at, equity, exposure) VALUES (?, ?, ?)",
            (iso(at), float(equity), exposure if math.isfinite(exposure) else None),
        )

    def event(self, kind: str, at, detail: dict) -> None:
        at = iso(at)
        self._insert("INSERT INTO events (at, kind, detail_json) VALUES (?, ?, ?)", (at, str(kind), _dumps(detail)))
        self._append("events", {"kind": str(kind), "at": at, "detail": detail})

    # reads
    def metrics(self, window: pd.Timedelta | None = None, now=None) -> dict:
        """Signals, trades, return, drawdown, breaches and kill-switch events over ``window`` before ``now``
        (all rows when ``window`` is None). JSON-ready: a ratio with nothing to divide is None."""
        con = self._connection()
        end = iso(now) if now is not None else self._newest()
        start = None
        if window is not None:
            window = pd.Timedelta(window)
            if window <= pd.Timedelta(0):
                raise ValueError(f"window must be positive, got {window}")
            if end is not None:
                start = iso(pd.Timestamp(end) - window)

        def span(column: str) -> tuple[str, list]:
            clauses, args = [], []
            if start is not None:
                clauses.append(f"{column} > ?")
                args.append(start)
            if end is not None:
                clauses.append(f"{column} <= ?")
                args.append(end)
            return (" WHERE " + " AND ".join(clauses) if clauses else ""), args

        where, args = span("at")
        # counted by SQLite (a day of 1m candles is thousands of rows per export), in order of first appearance
        groups = con.execute(
            f"SELECT status, tier, COUNT(*) FROM signals{where} GROUP BY status, tier ORDER BY MIN(at), MIN(id)", args
        ).fetchall()
        by_tier: dict[str, int] = {}
        by_status: dict[str, int] = {}
        n_signals = 0
        for status, tier, n in groups:
            by_tier[tier or "none"] = by_tier.get(tier or "none", 0) + n
            by_status[status or "none"] = by_status.get(status or "none", 0) + n
            n_signals += n

        where_t, args_t = span("exit_time")
        net = np.array(
            [r[0] for r in con.execute(f"SELECT net_pnl FROM trades{where_t} ORDER BY id", args_t)], dtype=np.float64
        )
        sums = con.execute(
            f"SELECT COALESCE(SUM(gross_pnl), 0), COALESCE(SUM(costs), 0) FROM trades{where_t}", args_t
        ).fetchone()
        where_f, args_f = span("at")
        n_fills = con.execute(f"SELECT COUNT(*) FROM fills{where_f}", args_f).fetchone()[0]

        curve = self._curve(start, end)
        drawdown = 1.0 - curve / np.maximum.accumulate(curve) if len(curve) else np.zeros(0)

        events = con.execute(f"SELECT kind, detail_json FROM events{where} ORDER BY id", args).fetchall()
        event_counts: dict[str, int] = {}
        breaches: dict[str, int] = {}
        for e in events:
            event_counts[e["kind"]] = event_counts.get(e["kind"], 0) + 1
            if e["kind"] in BREACH_EVENTS:
                detail = json.loads(e["detail_json"])
                kind = detail.get("kind", e["kind"]) if isinstance(detail, dict) else e["kind"]
                breaches[str(kind)] = breaches.get(str(kind), 0) + 1

        wins = int((net > 0).sum())
        return {
            "window": None if window is None else str(window),
            "from": start,
            "to": end,
            "signals": {
                "total": n_signals,
                "emitted": by_status.get("emitted", 0),
                "by_tier": by_tier,
                "by_status": by_status,
            },
            "trades": len(net),
            "wins": wins,
            "losses": int((net < 0).sum()),
            "win_rate": wins / len(net) if len(net) else None,
            "gross_pnl": float(sums[0]),
            "costs": float(sums[1]),
            "net_pnl": float(net.sum()),
            "fills": int(n_fills),
            "start_equity": float(curve[0]) if len(curve) else None,
            "end_equity": float(curve[-1]) if len(curve) else None,
            "return": float(curve[-1] / curve[0] - 1.0) if len(curve) and curve[0] > 0 else None,
            "max_drawdown": float(drawdown.max()) if len(curve) else None,
            "breaches": {"total": sum(breaches.values()), "by_kind": breaches},
            "kill_switch_events": event_counts.get(KILL_SWITCH_EVENT, 0),
            "events": event_counts,
        }

    def export_metrics(self, path: Path, window=None, now=None) -> Path:
        """Write ``metrics(window, now)`` as JSON to ``path`` atomically (temp file + os.replace)."""
        path = Path(path)
        doc = self.metrics(window, now)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.parent / f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
        try:
            tmp.write_text(json.dumps(json_safe(doc), indent=1, sort_keys=True, allow_nan=False) + "\n")
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        return path

    def close(self) -> None:
        self._close_files()
        if self._con is not None:
            self._con.close()
            self._con = None

    def __enter__(self) -> RuntimeStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # internals
    def _connection(self) -> sqlite3.Connection:
        if self._con is None:
            raise RuntimeError(f"runtime store {self.db_path} is closed")
        return self._con

    def _insert(self, sql: str, args: tuple) -> None:
        # autocommit connection: the single statement is its own committed transaction
        self._connection().execute(sql, args)

    def _append(self, name: str, row: dict) -> None:
        self._append_line(name, _dumps(row))

    def _append_line(self, name: str, line: str) -> None:
        if self._pending_lines is not None:  # written once the candle's transaction commits
            self._pending_lines.append((name, line))
        else:
            self._write_line(name, line)

    def _write_line(self, name: str, line: str, flush: bool = True) -> None:
        f = self._files.get(name)
        if f is None:  # kept open: opening the file per line cost as much as the line's SQL
            f = self._files[name] = self.jsonl[name].open("a", encoding="utf-8")
        f.write(line + "\n")
        if flush:
            f.flush()

    def _close_files(self) -> None:
        files, self._files = self._files, {}
        for f in files.values():
            f.close()

    def _newest(self) -> str | None:
        con = self._connection()
        times = [
            con.execute(sql).fetchone()[0]
            for sql in (
                "SELECT MAX(at) FROM signals",
                "SELECT MAX(at) FROM fills",
                "SELECT MAX(exit_time) FROM trades",
                "SELECT MAX(at) FROM equity",
                "SELECT MAX(at) FROM events",
            )
        ]
        times = [t for t in times if t is not None]
        return max(times) if times else None

    def _curve(self, start: str | None, end: str | None) -> np.ndarray:
        """Equity in the window, preceded by the last point before it (the window's starting equity)."""
        con = self._connection()
        values = []
        if start is not None:
            before = con.execute(
                "SELECT equity FROM equity WHERE at <= ? ORDER BY at DESC, id DESC LIMIT 1", (start,)
            ).fetchone()
            if before is not None:
                values.append(before[0])
        clauses, args = [], []
        if start is not None:
            clauses.append("at > ?")
            args.append(start)
        if end is not None:
            clauses.append("at <= ?")
            args.append(end)
        where = " WHERE " + " AND ".join(clauses) if clauses else ""
        rows = con.cursor()
        rows.row_factory = None  # plain tuples: a day of 1m equity points is read at every export
        values += [r[0] for r in rows.execute(f"SELECT equity FROM equity{where} ORDER BY at, id", args)]
        return np.asarray(values, dtype=np.float64)


def _text(value) -> str | None:
    return None if value is None else str(json_safe(value))
