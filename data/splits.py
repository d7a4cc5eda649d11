"""Holdout split by global time cutoffs with purge (via label end time t1) and embargo at both boundaries."""
from dataclasses import dataclass

import numpy as np
import pandas as pd

from data.errors import UserError


@dataclass(frozen=True)
class Cutoffs:
    val_start: pd.Timestamp     # first timestamp of the validation segment
    test_start: pd.Timestamp    # first timestamp of the test segment
    embargo: pd.Timedelta       # rows this close after a cutoff are dropped

    def as_dict(self) -> dict:
        return {"val_start": self.val_start.isoformat(), "test_start": self.test_start.isoformat(),
                "embargo": str(self.embargo)}


def holdout_cutoffs(timestamps: pd.Series, train: float, val: float, embargo: pd.Timedelta) -> Cutoffs:
    """The same cutoffs for every symbol: quantiles of the union of labelled timestamps."""
    if not (0 < train < 1 and 0 < val < 1 and train + val < 1):
        raise UserError(f"split fractions train={train}, val={val} must be > 0 and sum below 1",
                        "split.train/split.val")
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
