"""Reading one candle file (or a directory of Lean zips) into validated canonical candles: the format
given or detected, its reader run, newest-first files reversed, close stamps moved to open time, and the market
the file's name or contents say it holds.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from core.errors import UserError
from data.formats.detect import FORMATS, detect_format
from data.formats.readers import (
    _read_binance_json,
    _read_binance_kline,
    _read_cryptodatadownload,
    _read_freqtrade_feather,
    _read_freqtrade_json,
    _read_generic_csv,
    _read_lean,
    _read_parquet,
    _read_yahoo,
)
from data.formats.sources import DEFAULT_MAX_BYTES, _check_source, _fail
from data.formats.values import _as_step, _infer_step, _us
from data.markets import name_markets
from data.schema import validate_candles

log = logging.getLogger("data.formats")  # one logger for the package, the name users configure

STAMPS = ("open", "close")


@dataclass(frozen=True)
class CandleFile:
    """Candles read from one file, and the market (base asset) the file says it holds: None when neither its
    name nor its contents say; ``said_by`` says which did ("its file name", "its symbol column", ...)."""

    candles: pd.DataFrame
    market: str | None
    said_by: str | None


def file_market(path: Path, fmt: str, content: tuple[str, str] | None) -> tuple[str | None, str | None]:
    """The market a file holds by its contents, else by its name (a Lean zip: its folder's name); a name and
    contents that name different markets are refused. A name pairing several markets says nothing."""
    named = name_markets(path.name)
    if not named and fmt == "lean_zip" and path.is_file():
        named = name_markets(path.parent.name)
    if content is not None:
        market, said_by = content
        if named and market not in named:
            raise _fail(f"{said_by} says the candles are {market}, the file name says {'/'.join(named)}", path)
        return market, said_by
    return (named[0], "its file name") if len(named) == 1 else (None, None)


def read_candles(
    path: Path,
    fmt: str = "auto",
    stamped_at: str = "open",
    step: pd.Timedelta | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> pd.DataFrame:
    """Read one candle file (or a directory of Lean zips) in ``fmt`` and return validated canonical candles.

    ``stamped_at`` says which edge of the candle the file's timestamps mark ("open" or "close"); "close"
    stamps are moved to open time by subtracting ``step`` (inferred as the most common spacing if None).
    Only regular files are read, none larger (or expanding to more) than ``max_bytes``.
    """
    return read_candle_source(path, fmt, stamped_at, step, max_bytes).candles


def read_candle_source(
    path: Path,
    fmt: str = "auto",
    stamped_at: str = "open",
    step: pd.Timedelta | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> CandleFile:
    """:func:`read_candles`, with the market the file's name or contents say it holds."""
    path = Path(path)
    if fmt != "auto" and fmt not in FORMATS:
        raise UserError(
            f"unknown candle file format {fmt!r}; set data.format to auto or one of {', '.join(FORMATS)}", str(path)
        )
    if stamped_at not in STAMPS:
        raise UserError(f"stamped_at must be 'open' or 'close', got {stamped_at!r}", str(path))
    _check_source(path, max_bytes)
    step = _as_step(step, str(path))
    if fmt == "auto":
        fmt = detect_format(path)
    if path.is_dir() and fmt != "lean_zip":
        raise UserError(f"{fmt} expects a file, got a directory", str(path))
    readers = {
        "parquet": _read_parquet,
        "csv": _read_generic_csv,
        "yahoo": _read_yahoo,
        "cryptodatadownload": _read_cryptodatadownload,
        "freqtrade_json": _read_freqtrade_json,
        "freqtrade_feather": _read_freqtrade_feather,
        "binance_kline": _read_binance_kline,
        "lean_zip": _read_lean,
        "binance_json": lambda p, cap: _read_binance_json(p, cap, step),
    }
    try:
        df = readers[fmt](path, max_bytes)
    except UserError:
        raise
    except Exception as exc:  # unreadable or corrupt file: name it, keep the cause
        raise _fail(f"cannot read {fmt} candle file: {type(exc).__name__}: {exc}", path)
    log.debug("read %d %s candles from %s", len(df), fmt, path)
    market, said_by = file_market(path, fmt, df.attrs.pop("market", None))
    t = _us(df["timestamp"])
    if len(t) > 1 and (t[1:] < t[:-1]).all():  # published newest-first
        df = df.iloc[::-1].reset_index(drop=True)
    elif fmt == "cryptodatadownload" and (t[1:] < t[:-1]).any():
        # CryptoDataDownload is newest-first by convention but has stretches out of order (BTCUSD 1h,
        # 2017-11-12): order by timestamp, loudly. Repeated timestamps are still refused below.
        n_up = int((t[1:] > t[:-1]).sum())
        log.warning("%s: %d row(s) out of newest-first order; candles ordered by timestamp", path, n_up)
        df = df.sort_values("timestamp", kind="stable").reset_index(drop=True)
    if stamped_at == "close" and fmt not in ("binance_json", "binance_kline"):
        if step is None:
            step = _infer_step(df["timestamp"].diff().dropna(), path)
        df["timestamp"] = df["timestamp"] - step
    return CandleFile(validate_candles(df, str(path)), market, said_by)
