"""Published values -> canonical ones: timestamps as written (ISO 8601, CryptoDataDownload's hours, Unix
epoch in the unit each value's magnitude says) to UTC microseconds, price and volume columns to float64, each
refused at its first unreadable row; and the candle step, given or inferred as the most common spacing.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from core.errors import UserError
from data.formats.sources import _fail

TS_DTYPE = "datetime64[us, UTC]"

_CDD_HOUR_FORMAT = "%Y-%m-%d %I-%p"


def _epoch_to_us(values: np.ndarray) -> np.ndarray:
    """Unix epoch numbers (unit per value, by magnitude) -> int64 microseconds."""
    values = np.asarray(values)
    if not np.issubdtype(values.dtype, np.integer):
        v = values.astype(np.float64)
        if (v == np.floor(v)).all() and (np.abs(v) < 2.0**53).all():
            values = v.astype(np.int64)  # whole numbers written as floats: keep integer precision
        else:
            mag = np.abs(v)
            factor = np.select([mag < 1e11, mag < 1e14, mag < 1e17], [1e6, 1e3, 1.0], 1e-3)
            return np.round(v * factor).astype(np.int64)
    v = values.astype(np.int64)
    mag = np.abs(v)
    return np.select([mag < 10**11, mag < 10**14, mag < 10**17], [v * 1_000_000, v * 1_000, v], v // 1_000)


def _us(ts: pd.Series) -> np.ndarray:
    """tz-aware UTC timestamps -> int64 microseconds since the epoch."""
    return ts.dt.tz_convert("UTC").dt.tz_localize(None).to_numpy(dtype="datetime64[us]").astype(np.int64)


def _first_true(mask: np.ndarray) -> int:
    return int(np.flatnonzero(mask)[0])


def _parse_timestamps(col: pd.Series, name: str, path: Path) -> pd.Series:
    """A timestamp column as published -> tz-aware UTC (microseconds); refuse the first unreadable value."""
    col = col.reset_index(drop=True)
    if col.isna().any():
        raise _fail(f"column {name!r} has no value at row {_first_true(col.isna().to_numpy())}", path)
    if isinstance(col.dtype, pd.DatetimeTZDtype):
        return col.dt.tz_convert("UTC").astype(TS_DTYPE)
    if pd.api.types.is_datetime64_dtype(col.dtype):
        return col.dt.tz_localize("UTC").astype(TS_DTYPE)
    if pd.api.types.is_numeric_dtype(col.dtype) and not pd.api.types.is_bool_dtype(col.dtype):
        return pd.Series(pd.to_datetime(_epoch_to_us(col.to_numpy()), unit="us", utc=True)).astype(TS_DTYPE)
    text = col.astype(str).str.strip()
    if text.str.fullmatch(r"-?\d+(?:\.\d+)?").all():
        return _parse_timestamps(pd.to_numeric(text), name, path)
    best = None
    for fmt in ("ISO8601", _CDD_HOUR_FORMAT):
        parsed = pd.to_datetime(text, utc=True, format=fmt, errors="coerce")
        if not parsed.isna().any():
            return pd.Series(parsed).astype(TS_DTYPE)
        if best is None:
            best = parsed
    i = _first_true(best.isna().to_numpy())
    raise _fail(
        f"unparsable timestamp {text.iloc[i]!r} in column {name!r} at row {i} "
        f"(expected ISO 8601 like 2020-01-01 00:00:00, or epoch seconds/milliseconds)",
        path,
    )


def _parse_numbers(col: pd.Series, name: str, path: Path) -> np.ndarray:
    col = col.reset_index(drop=True)
    if pd.api.types.is_bool_dtype(col.dtype):
        raise _fail(f"column {name!r} holds booleans, not numbers", path)
    if pd.api.types.is_numeric_dtype(col.dtype):
        values = col.to_numpy(dtype=np.float64, na_value=np.nan)
        if np.isnan(values).any():
            raise _fail(f"column {name!r} has no value at row {_first_true(np.isnan(values))}", path)
        return values
    parsed = pd.to_numeric(col.astype(str).str.strip(), errors="coerce").to_numpy(dtype=np.float64)
    if np.isnan(parsed).any():
        i = _first_true(np.isnan(parsed))
        raise _fail(f"column {name!r} holds non-numeric value {col.iloc[i]!r} at row {i}", path)
    return parsed


def _frame(ts: pd.Series, o, h, l, c, v) -> pd.DataFrame:
    return pd.DataFrame(
        {"timestamp": ts.reset_index(drop=True), "open": o, "high": h, "low": l, "close": c, "volume": v}
    )


def _infer_step(diffs: pd.Series, path: Path, unit: str | None = None) -> pd.Timedelta:
    diffs = diffs[diffs > 0] if unit else diffs[diffs > pd.Timedelta(0)]
    if diffs.empty:
        raise _fail("cannot infer the candle step from fewer than two distinct timestamps; give step", path)
    mode = diffs.mode().iloc[0]
    return pd.Timedelta(int(mode), unit=unit) if unit else pd.Timedelta(mode)


def _as_step(step, where: str) -> pd.Timedelta | None:
    """A positive time span (or None), refused with one line naming ``where``."""
    if step is None:
        return None
    try:
        step = pd.Timedelta(step)
    except ValueError:
        raise UserError(f"step {step!r} is not a time span", where) from None
    if step <= pd.Timedelta(0):
        raise UserError(f"step must be positive, got {step}", where)
    return step
