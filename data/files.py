"""Files provider: candle files in any format data.formats reads (canonical parquet/CSV, freqtrade,
Yahoo, CryptoDataDownload, Binance, Lean), validated to the canonical schema."""

from pathlib import Path

import pandas as pd

from core.errors import UserError
from data.formats import DEFAULT_MAX_BYTES, FORMATS, CandleFile, read_candle_source


def read_candle_file(
    path: Path,
    fmt: str = "auto",
    stamped_at: str = "open",
    step: pd.Timedelta | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> pd.DataFrame:
    return read_marked_candle_file(path, fmt, stamped_at, step, max_bytes).candles


def read_marked_candle_file(
    path: Path,
    fmt: str = "auto",
    stamped_at: str = "open",
    step: pd.Timedelta | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> CandleFile:
    """The candles and the market the file's name or contents say it holds (see data.formats.file_market)."""
    if not path.exists():
        raise UserError("candle file not found", str(path))
    if fmt != "auto" and fmt not in FORMATS:
        raise UserError(
            f"unknown candle file format {fmt!r}; choose auto or one of {', '.join(FORMATS)}", "data.format"
        )
    if stamped_at not in ("open", "close"):
        raise UserError(f"data.stamped_at must be open or close, got {stamped_at!r}", "data.stamped_at")
    return read_candle_source(path, fmt=fmt, stamped_at=stamped_at, step=step, max_bytes=max_bytes)


def infer_step(candles: pd.DataFrame, source: str) -> pd.Timedelta:
    diffs = candles["timestamp"].diff().dropna()
    if diffs.empty:
        raise UserError("cannot infer the timeframe from a single candle", source)
    return pd.Timedelta(diffs.mode().iloc[0])
