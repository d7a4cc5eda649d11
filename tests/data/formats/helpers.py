"""Where the real candle files live, and small builders for synthetic candle files."""

from pathlib import Path

import pandas as pd

from tests.conftest import SHARED_DATA

DATA = SHARED_DATA
RAW, OHLCV = DATA / "raw", DATA / "ohlcv"
COLUMNS = ["timestamp", "open", "high", "low", "close", "volume"]


def canonical(name: str) -> pd.DataFrame:
    df = pd.read_parquet(OHLCV / name)
    df["volume"] = df["volume"].astype("float64")  # AAPL/GOOG parquet store volume as int64
    return df


def frame(rows, unit="min") -> pd.DataFrame:
    """Canonical candles from (minutes-or-days offset, o, h, l, c, v) rows, starting 2024-01-01 UTC."""
    base = pd.Timestamp("2024-01-01", tz="UTC")
    df = pd.DataFrame(rows, columns=COLUMNS).astype({c: "float64" for c in COLUMNS[1:]})
    df["timestamp"] = (base + pd.to_timedelta(df["timestamp"], unit=unit)).astype("datetime64[us, UTC]")
    return df


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path
