"""Files provider: candle files in the canonical schema (parquet, or CSV with the same columns)."""
from pathlib import Path

import pandas as pd

from data.errors import UserError
from data.schema import validate_candles


def read_candle_file(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise UserError("candle file not found", str(path))
    try:
        if path.suffix == ".parquet":
            df = pd.read_parquet(path)
        elif path.suffix == ".csv":
            df = pd.read_csv(path)
            if "timestamp" in df.columns:
                df["timestamp"] = pd.to_datetime(df["timestamp"], utc=True)
        else:
            raise UserError(f"unsupported candle file type {path.suffix!r} (use .parquet or .csv)", str(path))
    except UserError:
        raise
    except Exception as exc:  # unreadable or corrupt file: name it, keep the cause
        raise UserError(f"cannot read candle file: {type(exc).__name__}: {exc}".splitlines()[0], str(path))
    return validate_candles(df, str(path))


def infer_step(candles: pd.DataFrame, source: str) -> pd.Timedelta:
    diffs = candles["timestamp"].diff().dropna()
    if diffs.empty:
        raise UserError("cannot infer the timeframe from a single candle", source)
    return pd.Timedelta(diffs.mode().iloc[0])
