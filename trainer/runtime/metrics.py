"""Metrics of a runtime session, exported while it runs and afterwards.

While it runs, ``PeriodicExports`` (called after each committed candle) rewrites ``metrics.json`` (the
``runtime.metrics_window`` of candle time before the last candle) and ``metrics-<YYYY-MM-DD>.json`` (that
UTC day of candle time so far) every ``runtime.metrics_every`` candles, and at each UTC midnight of candle
time finishes the day that ended (its dated file, and ``metrics.json`` as of midnight).

Afterwards, any window::

    python -m trainer.runtime.metrics <session folder> --window 24h [--end TIME] [--out FILE]

prints the metrics of ``--window`` of candle time before ``--end`` (default: the newest row the session
holds) as JSON, or writes them to ``--out`` (temp file + rename); ``--window all`` covers everything. A
folder that is not a session, or a window that is not a positive duration, is one error line and exit 2.
The session is read only (nothing in it is created or changed).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd

from trainer.runtime.store import DB_NAME, RuntimeStore, json_safe

_TICK = pd.Timedelta(1, "us")  # the store's time resolution: (start - 1 us, end] is [start, end]


def day_file(run_dir: Path, day: pd.Timestamp) -> Path:
    return Path(run_dir) / f"metrics-{day.strftime('%Y-%m-%d')}.json"


class PeriodicExports:
    """Refreshes a session's metrics files after committed candles (see the module docstring)."""

    def __init__(self, store: RuntimeStore, run_dir: Path, window: pd.Timedelta, every: int | None):
        self.store, self.run_dir, self.window = store, Path(run_dir), pd.Timedelta(window)
        self.every = int(every) if every else None
        self.candles = 0
        self.day: pd.Timestamp | None = None
        self.exported = 0
        self._day_start: int | None = None  # [start, end) of ``day`` in ns: most candles need no date arithmetic
        self._day_end: int | None = None

    def __call__(self, at: pd.Timestamp) -> None:
        self.candles += 1
        at = pd.Timestamp(at)
        if self._day_end is not None and self._day_start <= at.value < self._day_end:  # the same UTC day
            if self.every and self.candles % self.every == 0:
                self.export(at)
            return
        day = at.tz_convert("UTC").normalize()
        self._day_start, self._day_end = day.value, (day + pd.Timedelta(days=1)).value
        if self.day is not None and day > self.day:  # candle time passed midnight: the day is complete
            end = self.day + pd.Timedelta(days=1) - _TICK
            self.store.export_metrics(day_file(self.run_dir, self.day), pd.Timedelta(days=1), now=end)
            self.store.export_metrics(self.run_dir / "metrics.json", self.window, now=end)
            self.exported += 1
        self.day = day
        if self.every and self.candles % self.every == 0:
            self.export(at)

    def export(self, at: pd.Timestamp) -> None:
        """``metrics.json`` and the current day's file as of candle time ``at``."""
        at = pd.Timestamp(at).tz_convert("UTC")
        day = at.normalize()
        self.store.export_metrics(self.run_dir / "metrics.json", self.window, now=at)
        self.store.export_metrics(day_file(self.run_dir, day), at - day + _TICK, now=at)
        self.exported += 1


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit 2, like every other user error
        sys.stderr.write(f"error: {message} (command line)\n")
        sys.exit(2)


def _fail(what: str, where: str) -> int:
    sys.stderr.write(f"error: {what} ({where})\n")
    return 2


def main(argv: list[str] | None = None) -> int:
    parser = _Parser(
        prog="python -m trainer.runtime.metrics",
        description="Export a runtime session's metrics over any window of candle time.",
    )
    parser.add_argument("session", help="the session's run folder (holds runtime.db)")
    parser.add_argument(
        "--window", default="24h", help="candle time before --end, e.g. 24h, 7d, 90min; all = everything [24h]"
    )
    parser.add_argument("--end", default=None, help="window end (UTC), default the newest row of the session")
    parser.add_argument("--out", default=None, help="write the JSON here instead of printing it")
    args = parser.parse_args(argv)
    session = Path(args.session)
    if not (session / DB_NAME).is_file():
        return _fail(f"not a runtime session: {session} holds no {DB_NAME}", "session")
    window = None
    if str(args.window).lower() != "all":
        try:
            window = pd.Timedelta(str(args.window))
        except ValueError:
            return _fail(f"{args.window!r} is not a duration (e.g. 24h, 7d, 90min, all)", "--window")
        if window <= pd.Timedelta(0):
            return _fail(f"the window must be positive, got {args.window!r}", "--window")
    end = None
    if args.end is not None:
        try:
            end = pd.Timestamp(str(args.end))
        except ValueError:
            return _fail(f"{args.end!r} is not a date or time", "--end")
        end = end.tz_localize("UTC") if end.tzinfo is None else end.tz_convert("UTC")
    try:
        store = RuntimeStore(session, readonly=True)
        try:
            if args.out:
                store.export_metrics(Path(args.out), window, now=end)
            else:
                sys.stdout.write(json.dumps(json_safe(store.metrics(window, now=end)), indent=1, sort_keys=True) + "\n")
        finally:
            store.close()
    except Exception as exc:  # sqlite3.DatabaseError and kin: a file that is not this kind of database
        import sqlite3

        if isinstance(exc, sqlite3.Error):
            return _fail(f"{session / DB_NAME} is not a runtime session database ({exc})", "session")
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main())
