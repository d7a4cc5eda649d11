"""Selection over a plan's slots: how many jobs compete for each slot (its trial count, passed to every job as
`eval.selection.n_trials`), and the Probability of Backtest Overfitting of the slot's finished jobs.

A slot is one coin route and one target (`<coin>/<target>`): the jobs the registry would weigh against each other
for one promoted model. PBO (trainer.selection, CSCV) runs on the jobs' test trades turned into per-period
returns on one grid: from the earliest test-period start to the latest trade exit of the slot, cut into
`PERIODS_PER_PARTITION * n_partitions` equal periods; a trade's net return counts in the period of its exit,
divided by the job's symbol count (each symbol holds an equal share, as the backtest's portfolio does). A job
that never traded earns 0 in every period: choosing it is a choice too.
"""

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from trainer.result import DataSummary, RunResult

log = logging.getLogger("candlelab.plan")

PERIODS_PER_PARTITION = 8
TRADES_FILE = "trades_test.parquet"


def slot_of(job) -> str:
    return f"{job.coin}/{job.target}"


def slot_trials(jobs) -> dict[str, int]:
    """Job id -> how many jobs of the whole plan compete for its slot (every stage counts, run or not)."""
    sizes: dict[str, int] = {}
    for job in jobs:
        sizes[slot_of(job)] = sizes.get(slot_of(job), 0) + 1
    return {job.id: sizes[slot_of(job)] for job in jobs}


def _job_returns(run_dir: Path) -> tuple[pd.DataFrame, pd.Timestamp | None, int] | None:
    """(trades, test start, symbol count) of a finished job, or None when it left no trades file."""
    result = RunResult.read(run_dir / "result.json")
    if result is None:
        return None
    try:
        trades = pd.read_parquet(run_dir / TRADES_FILE, columns=["exit_time", "net_return"])
    except (OSError, ValueError):
        return None
    data = result.data_summary or DataSummary()
    start = (data.split_cutoffs or {}).get("test_start")
    return trades, pd.Timestamp(start) if start else None, max(1, len(data.symbols or []))


def returns_matrix(run_dirs: dict[str, Path], n_periods: int) -> tuple[np.ndarray, list[str], dict]:
    """Periods x jobs of per-period net returns on the slot's common grid (see the module docstring)."""
    found = {job_id: got for job_id, d in run_dirs.items() if (got := _job_returns(d)) is not None}
    exits = [pd.to_datetime(t["exit_time"], utc=True) for t, _, _ in found.values() if len(t)]
    if not exits:
        return np.zeros((0, len(found))), list(found), {}
    starts = [s for _, s, _ in found.values() if s is not None]
    first = min(starts) if starts else min(e.min() for e in exits)
    last = max(e.max() for e in exits)
    edges = pd.date_range(first, last, periods=n_periods + 1)
    matrix = np.zeros((n_periods, len(found)))
    for j, (trades, _, n_symbols) in enumerate(found.values()):
        at = pd.DatetimeIndex(pd.to_datetime(trades["exit_time"], utc=True))
        period = np.clip(np.searchsorted(edges.asi8, at.asi8, side="right") - 1, 0, n_periods - 1)
        np.add.at(matrix[:, j], period, trades["net_return"].to_numpy(np.float64) / n_symbols)
    return matrix, list(found), {"from": first.isoformat(), "to": last.isoformat()}


def slot_selection(jobs, rows: dict[str, dict], n_partitions: int) -> dict[str, dict]:
    """Per slot: its trial count and, over its completed jobs, the PBO (None with the reason it was not run)."""
    from trainer.selection import probability_of_backtest_overfitting

    out: dict[str, dict] = {}
    for job in jobs:
        out.setdefault(slot_of(job), {"n_trials": 0, "jobs": [], "done": {}})
        entry = out[slot_of(job)]
        entry["n_trials"] += 1
        entry["jobs"].append(job.id)
        row = rows.get(job.id)
        if row is not None and row["status"] in ("completed", "skipped"):
            entry["done"][job.id] = Path(row["run_dir"])
    report = {}
    for slot, entry in out.items():
        item = {
            "n_trials": entry["n_trials"],
            "jobs": entry["jobs"],
            "configurations": [],
            "pbo": None,
            "n_partitions": n_partitions,
        }
        if len(entry["done"]) < 2:
            item["reason"] = f"{len(entry['done'])} completed job(s): PBO needs 2 or more competing configurations"
        else:
            matrix, used, grid = returns_matrix(entry["done"], PERIODS_PER_PARTITION * n_partitions)
            item.update(configurations=used, grid=grid)
            if len(used) < 2 or not matrix.any():
                item["reason"] = "fewer than 2 jobs with a trades file, or no test trades at all"
            else:
                try:
                    item.update(probability_of_backtest_overfitting(matrix, n_partitions))
                except ValueError as exc:
                    item["reason"] = str(exc)
        report[slot] = item
    return report


def selection_lines(report: dict[str, dict]) -> list[str]:
    """One line per slot for the end-of-plan report."""
    lines = []
    for slot, item in report.items():
        pbo = (
            f"PBO {item['pbo']:.2f} (CSCV, {item['n_partitions']} partitions of {item['n_periods']} periods, "
            f"{item['n_configurations']} configurations)"
            if item["pbo"] is not None
            else f"PBO n/a: {item.get('reason')}"
        )
        lines.append(f"slot {slot}: {item['n_trials']} trial(s); {pbo}")
    return lines
