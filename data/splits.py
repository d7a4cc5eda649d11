"""Holdout split by global time cutoffs with purge (via label end time t1) and embargo at both boundaries."""

from dataclasses import dataclass

import numpy as np
import pandas as pd

from core.errors import UserError


@dataclass(frozen=True)
class Cutoffs:
    val_start: pd.Timestamp  # first timestamp of the validation segment
    test_start: pd.Timestamp  # first timestamp of the test segment
    embargo: pd.Timedelta  # rows this close after a cutoff are dropped

    def as_dict(self) -> dict:
        return {
            "val_start": self.val_start.isoformat(),
            "test_start": self.test_start.isoformat(),
            "embargo": str(self.embargo),
        }


def holdout_cutoffs(timestamps: pd.Series, train: float, val: float, embargo: pd.Timedelta) -> Cutoffs:
    """The same cutoffs for every symbol: quantiles of the union of labelled timestamps."""
    if not (0 < train < 1 and 0 < val < 1 and train + val < 1):
        raise UserError(
            f"split fractions train={train}, val={val} must be > 0 and sum below 1", "split.train/split.val"
        )
    uniq = pd.DatetimeIndex(timestamps).unique().sort_values()
    if len(uniq) < 3:
        raise UserError(f"only {len(uniq)} labelled timestamps: too few to split", "split")
    val_start = uniq[int(len(uniq) * train)]
    test_start = uniq[int(len(uniq) * (train + val))]
    return Cutoffs(val_start=val_start, test_start=test_start, embargo=embargo)


def assign_rows(timestamp: pd.Series, t1: pd.Series, eligible: np.ndarray, cutoffs: Cutoffs) -> dict[str, np.ndarray]:
    """Row indices of train/val/test.

    A row belongs to a segment when its timestamp does; it is purged when its label end time ``t1``
    reaches the next segment's start, and embargoed when it starts within ``embargo`` after the cutoff
    of the segment before it.
    """
    ts, end = timestamp, t1
    c1, c2, emb = cutoffs.val_start, cutoffs.test_start, cutoffs.embargo
    train = eligible & (ts < c1) & (end < c1)
    val = eligible & (ts >= c1 + emb) & (ts < c2) & (end < c2)
    test = eligible & (ts >= c2 + emb)
    return {name: np.flatnonzero(np.asarray(mask)) for name, mask in (("train", train), ("val", val), ("test", test))}


@dataclass
class Fold:
    """One train/val/test assignment; every boundary is purged via t1 and embargoed."""

    name: str
    rows: dict[str, np.ndarray]  # "train", "val", "test" -> row indices
    cutoffs: dict[str, str]  # the boundaries, ISO timestamps

    def summary(self) -> dict:
        return {"name": self.name, "cutoffs": self.cutoffs, "rows": {k: int(len(v)) for k, v in self.rows.items()}}


def _spans(timestamps: pd.Series, eligible: np.ndarray) -> pd.DatetimeIndex:
    uniq = pd.DatetimeIndex(timestamps[eligible]).unique().sort_values()
    if len(uniq) < 10:
        raise UserError(f"only {len(uniq)} labelled timestamps: too few to split", "split")
    return uniq


def _segment(ts, end, eligible, start, stop, embargo, purge_at) -> np.ndarray:
    """Rows starting in [start + embargo, stop) whose label ends before ``purge_at``."""
    mask = eligible & (ts >= start + embargo) & (ts < stop) & (end < purge_at)
    return np.flatnonzero(np.asarray(mask))


def walk_forward_folds(
    timestamp: pd.Series,
    t1: pd.Series,
    eligible: np.ndarray,
    folds: int,
    mode: str,
    test: float,
    val: float,
    embargo: pd.Timedelta,
) -> list[Fold]:
    """K consecutive test blocks covering the last ``test`` fraction of the labelled time; each fold trains
    on what precedes its block (expanding: everything; sliding: a window as long as the first fold's),
    validating on the last ``val`` fraction of that period."""
    if mode not in ("expanding", "sliding"):
        raise UserError(f"split.mode must be expanding or sliding, got {mode!r}", "split.mode")
    if folds < 1 or not 0 < test < 1 or not 0 < val < 1:
        raise UserError("walk-forward needs folds >= 1, 0 < test < 1 and 0 < val < 1", "split")
    uniq = _spans(timestamp, eligible)
    n = len(uniq)
    first_test = int(n * (1 - test))
    bounds = [first_test + (n - first_test) * i // folds for i in range(folds + 1)]
    far_future = uniq[-1] + pd.Timedelta(days=36500)
    window = bounds[0]
    out = []
    for i in range(folds):
        test_start = uniq[bounds[i]]
        test_stop = uniq[bounds[i + 1]] if i + 1 < folds else far_future
        begin = 0 if mode == "expanding" else max(0, bounds[i] - window)
        val_start = uniq[begin + int((bounds[i] - begin) * (1 - val))]
        train_start = uniq[begin]
        rows = {
            "train": _segment(timestamp, t1, eligible, train_start, val_start, pd.Timedelta(0), val_start),
            "val": _segment(timestamp, t1, eligible, val_start, test_start, embargo, test_start),
            "test": _segment(timestamp, t1, eligible, test_start, test_stop, embargo, far_future),
        }
        cut = {
            "train_start": train_start.isoformat(),
            "val_start": val_start.isoformat(),
            "test_start": test_start.isoformat(),
            "test_end": test_stop.isoformat() if i + 1 < folds else None,
            "embargo": str(embargo),
        }
        out.append(Fold(name=f"fold{i}", rows=rows, cutoffs=cut))
    return out


def purged_kfold(
    timestamp: pd.Series, t1: pd.Series, eligible: np.ndarray, folds: int, val: float, embargo: pd.Timedelta
) -> list[Fold]:
    """K contiguous test blocks over the whole span (for ranking targets/features, not for honest
    forward-looking scores: most folds train on data after their test block).

    Held-out rows (test, and validation) are separated from training rows on both sides: a training row
    before a held span must end (t1) before the span's first row starts; a training row after it must
    start after the held rows' last label end (max t1) plus ``embargo``. Validation is the last ``val``
    fraction of the time before the test block (purged and embargoed from it like any boundary), or, for
    the first block, the first ``val`` fraction after it.
    """
    if folds < 2 or not 0 < val < 1:
        raise UserError("purged k-fold needs folds >= 2 and 0 < val < 1", "split")
    uniq = _spans(timestamp, eligible)
    n = len(uniq)
    edges = [uniq[n * i // folds] for i in range(folds)] + [uniq[-1] + pd.Timedelta(days=36500)]
    ts, end = timestamp, t1
    out = []

    def separated(held: pd.Series) -> pd.Series:
        """Rows whose [t, t1] stays clear of the held rows' [t, t1] span, embargo after it included."""
        if not held.any():
            return pd.Series(True, index=ts.index)
        first, last_end = ts[held].min(), end[held].max()
        return (end < first) | (ts > last_end + embargo)

    for i in range(folds):
        t_start, t_stop = edges[i], edges[i + 1]
        if i > 0:
            v_start = uniq[int(np.searchsorted(uniq, t_start) * (1 - val))]
            val_rows = eligible & (ts >= v_start) & (ts < t_start) & (end < t_start)
            # the validation/test boundary gets its embargo like every other boundary
            test_rows = eligible & (ts >= t_start + embargo) & (ts < t_stop)
        else:
            test_rows = eligible & (ts >= t_start) & (ts < t_stop)
            test_end = end[test_rows].max()
            after = uniq[uniq > test_end + embargo]
            v_start, v_stop = after[0], after[min(len(after) - 1, int(len(after) * val))]
            val_rows = eligible & (ts >= v_start) & (ts < v_stop)
        train_rows = eligible & ~test_rows & ~val_rows & separated(test_rows) & separated(val_rows)
        rows = {
            "train": np.flatnonzero(np.asarray(train_rows)),
            "val": np.flatnonzero(np.asarray(val_rows)),
            "test": np.flatnonzero(np.asarray(test_rows)),
        }
        cut = {
            "test_start": t_start.isoformat(),
            "test_end": t_stop.isoformat() if i + 1 < folds else None,
            "val_start": v_start.isoformat(),
            "embargo": str(embargo),
        }
        out.append(Fold(name=f"fold{i}", rows=rows, cutoffs=cut))
    return out


def make_folds(split, timestamp: pd.Series, t1: pd.Series, eligible: np.ndarray, step: pd.Timedelta) -> list[Fold]:
    embargo = int(split.embargo) * step
    if split.type == "holdout":
        cut = holdout_cutoffs(timestamp[eligible], float(split.train), float(split.val), embargo)
        rows = assign_rows(timestamp, t1, eligible, cut)
        return [Fold(name="holdout", rows=rows, cutoffs=cut.as_dict())]
    if split.type == "walk_forward":
        return walk_forward_folds(
            timestamp, t1, eligible, int(split.folds), str(split.mode), float(split.test), float(split.val), embargo
        )
    if split.type == "purged_kfold":
        return purged_kfold(timestamp, t1, eligible, int(split.folds), float(split.val), embargo)
    raise UserError(f"unknown split type {split.type!r}; choose holdout, walk_forward or purged_kfold", "split.type")
