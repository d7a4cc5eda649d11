"""Canonical candles resampled to a coarser timeframe: buckets aligned to the Unix epoch (whole-week steps
to Mondays), open and close from the first and last source candle, no empty bucket filled.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from core.errors import UserError
from data.formats.values import TS_DTYPE, _as_step, _first_true, _us
from data.schema import validate_candles

_EPOCH = pd.Timestamp("1970-01-01", tz="UTC")
_MONDAY = pd.Timestamp("1970-01-05", tz="UTC")


def resample(candles: pd.DataFrame, step: pd.Timedelta) -> pd.DataFrame:
    """Aggregate canonical candles to ``step`` candles (a whole multiple of the source spacing).

    Buckets are left-closed and labelled by their open time, aligned to the Unix epoch (whole-week steps to
    Mondays); open/close come from the first/last existing source candle, high/low are max/min, volume is
    summed. Buckets without any source candle are dropped, not filled.
    """
    where = "resample"
    src = validate_candles(candles, where)
    step = _as_step(step, where)
    if step is None:
        raise UserError("resample needs a step", where)
    t_us = _us(src["timestamp"])
    if len(t_us) < 2:
        raise UserError("cannot infer the source spacing from a single candle", where)
    diffs = np.diff(t_us)
    values, counts = np.unique(diffs, return_counts=True)
    spacing = int(values[np.argmax(counts)])
    step_us = int(step // pd.Timedelta(microseconds=1))
    if step_us < spacing or step_us % spacing:
        raise UserError(
            f"step {step} is not a whole multiple of the source spacing {pd.Timedelta(spacing, unit='us')}", where
        )
    off = diffs % spacing != 0
    if off.any():
        i = _first_true(off) + 1
        raise UserError(
            f"source candles are not on one {pd.Timedelta(spacing, unit='us')} grid "
            f"(row {i}, timestamp {src['timestamp'].iloc[i]})",
            where,
        )
    origin = _MONDAY if step_us % (7 * 86_400_000_000) == 0 else _EPOCH
    rel = t_us - int(origin.value // 1000)
    within = rel % step_us
    straddle = within + spacing > step_us
    if straddle.any():
        i = _first_true(straddle)
        raise UserError(f"source candle at {src['timestamp'].iloc[i]} straddles a {step} bucket boundary", where)
    bucket = rel // step_us
    starts = np.flatnonzero(np.r_[True, bucket[1:] != bucket[:-1]])
    ends = np.r_[starts[1:], len(bucket)] - 1
    o, h, l, c, v = (src[k].to_numpy() for k in ("open", "high", "low", "close", "volume"))
    out = pd.DataFrame(
        {
            "timestamp": pd.to_datetime(bucket[starts] * step_us + int(origin.value // 1000), unit="us", utc=True),
            "open": o[starts],
            "high": np.maximum.reduceat(h, starts),
            "low": np.minimum.reduceat(l, starts),
            "close": c[ends],
            "volume": np.add.reduceat(v, starts),
        }
    )
    out["timestamp"] = out["timestamp"].astype(TS_DTYPE)
    return validate_candles(out, where)
