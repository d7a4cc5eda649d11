"""Canonical candle schema and its validation: refuse bad data with one line, never repair it silently."""

import numpy as np
import pandas as pd

from core.errors import UserError

CANDLE_COLUMNS = ["timestamp", "open", "high", "low", "close", "volume"]
PRICE_COLUMNS = ["open", "high", "low", "close"]


def _first_bad(mask: np.ndarray, df: pd.DataFrame, rule: str, source: str) -> None:
    if mask.any():
        i = int(np.flatnonzero(mask)[0])
        raise UserError(
            f"candles break rule '{rule}' at row {i} (timestamp {df['timestamp'].iloc[i]}); "
            f"{int(mask.sum())} row(s) in all",
            source,
        )


def validate_candles(df: pd.DataFrame, source: str) -> pd.DataFrame:
    """Return ``df`` restricted to the canonical columns after checking every rule of the schema."""
    missing = [c for c in CANDLE_COLUMNS if c not in df.columns]
    if missing:
        raise UserError(f"candles lack column(s) {missing}; have {list(df.columns)}", source)
    if len(df) == 0:
        raise UserError("candle file holds no rows", source)
    out = df[CANDLE_COLUMNS].reset_index(drop=True)
    ts = out["timestamp"]
    if not isinstance(ts.dtype, pd.DatetimeTZDtype):
        raise UserError(f"column 'timestamp' must be tz-aware UTC datetimes, found {ts.dtype}", source)
    if str(ts.dt.tz) != "UTC":
        raise UserError(f"column 'timestamp' must be in UTC, found {ts.dt.tz}", source)
    for col in PRICE_COLUMNS + ["volume"]:
        if not pd.api.types.is_numeric_dtype(out[col]):
            raise UserError(f"column {col!r} must be numeric, found {out[col].dtype}", source)
        out[col] = out[col].astype("float64")
    values = out[CANDLE_COLUMNS[1:]].to_numpy()
    _first_bad(~np.isfinite(values).all(axis=1), out, "prices and volume are finite", source)
    _first_bad(ts.isna().to_numpy(), out, "timestamps present (no NaT)", source)
    t = ts.to_numpy(dtype="datetime64[ns]")  # not object Timestamps: vectorised comparisons
    _first_bad(np.r_[False, t[1:] < t[:-1]], out, "timestamps sorted ascending", source)
    _first_bad(np.r_[False, t[1:] == t[:-1]], out, "timestamps unique", source)
    o, h, l, c, v = (out[k].to_numpy() for k in ["open", "high", "low", "close", "volume"])
    _first_bad((np.minimum.reduce([o, h, l, c]) <= 0), out, "prices > 0", source)
    _first_bad((l > np.minimum(o, c)) | (h < np.maximum(o, c)), out, "low <= open,close <= high", source)
    _first_bad(v < 0, out, "volume >= 0", source)
    return out
