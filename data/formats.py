"""Candle file formats -> the canonical schema, and resampling to a coarser timeframe.

``read_candles`` reads one candle file (or a directory of Lean zips) in any of ``FORMATS`` and returns the
canonical frame: ``timestamp`` (``datetime64[us, UTC]``, the candle OPEN time), ``open high low close volume``
(float64), sorted ascending, checked by :func:`data.schema.validate_candles`. A file that cannot be read as
written is refused with one :class:`UserError` line naming the file, the problem and the row; nothing is
repaired, filled or replaced.

Interpretation rules (the choices a user may need to know):
- Text timestamps are ISO 8601 (``2020-01-01``, ``2020-01-01 00:00:00``, optional offset) or
  CryptoDataDownload's ``2019-10-17 09-AM``; without an offset they are taken as UTC. Numeric timestamps are
  Unix epoch, the unit read from each value's magnitude: < 1e11 seconds, < 1e14 milliseconds,
  < 1e17 microseconds, else nanoseconds (CryptoDataDownload and Binance have switched units mid-history).
- A file whose rows run strictly newest-first is reversed. CryptoDataDownload files (newest-first by
  convention, with a few stretches out of order as published) are ordered by timestamp with a logged
  warning. Any other disorder, and a repeated timestamp in any format, is refused by the schema check.
- Volume is the base-asset volume. When a file has several volume columns (``volume_btc, volume``,
  ``Volume BTC, Volume USD``) the one named after the pair's base asset (from a ``symbol`` column or the
  file name) wins, else the one single non-quote-currency column, else a plain ``volume``; anything still
  ambiguous is refused.
- Yahoo: ``Open High Low Close`` are used as published (Yahoo adjusts them for splits, not dividends);
  ``Adj Close`` is ignored, because mixing it with unadjusted open/high/low would break ``low <= close <= high``
  and misstate the bar. Rows Yahoo writes as ``null`` are refused, not dropped.
- Lean (QuantConnect) trade zips: crypto layout only — prices as written (Lean's crypto files are not
  scaled) and times in UTC. Lean *equity* files store prices x10000 in exchange time; a path under an
  ``equity`` directory is refused rather than misread. Quote zips (bid/ask, 11 columns) are refused.
- ``stamped_at="close"`` shifts every timestamp back by ``step`` (inferred as the most common spacing when
  not given). Binance kline CSVs (explicit ``open_time``) and Binance JSON (``endTime`` = last millisecond;
  open = endTime + 1 ms - step) state the edge themselves, so ``stamped_at`` does not apply to them.
"""

from __future__ import annotations

import bz2
import gzip
import io
import json
import logging
import lzma
import os
import re
import stat
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from core.errors import UserError
from data.schema import CANDLE_COLUMNS, validate_candles
from data.symbols import name_markets, value_market

log = logging.getLogger(__name__)

FORMATS: tuple[str, ...] = (
    "parquet",
    "csv",
    "freqtrade_json",
    "freqtrade_feather",
    "yahoo",
    "cryptodatadownload",
    "binance_kline",
    "binance_json",
    "lean_zip",
)
STAMPS = ("open", "close")
# The most a reader takes from one source: a file's size, and what a compressed file or zip member expands to.
# Candles are held in memory whole; a larger file is refused up front, never read until memory runs out.
DEFAULT_MAX_BYTES = 4_000_000_000
TS_DTYPE = "datetime64[us, UTC]"

# Column aliases (compared lower-cased and stripped). Time columns in order of preference.
_TIME_ALIASES = ("open_time", "opentime", "timestamp", "datetime", "unix", "date", "time", "open time")
_PRICE_ALIASES = {
    "open": ("open", "o", "open_price", "openprice"),
    "high": ("high", "h", "high_price", "highprice"),
    "low": ("low", "l", "low_price", "lowprice"),
    "close": ("close", "c", "close_price", "closeprice"),
}
_VOLUME_RE = re.compile(r"^(?:volume|vol)(?:[ _.\-]?\(?([a-z0-9]+)\)?)?$")
_QUOTE_CCY = {
    "usd",
    "usdt",
    "usdc",
    "busd",
    "tusd",
    "fdusd",
    "dai",
    "eur",
    "gbp",
    "jpy",
    "krw",
    "aud",
    "cad",
    "chf",
    "try",
    "brl",
    "quote",
    "to",
}
_CDD_HOUR_FORMAT = "%Y-%m-%d %I-%p"
_LEAN_ZIP_RE = re.compile(r"^(\d{8})_trade\.zip$", re.IGNORECASE)
_LEAN_DATE_RE = re.compile(r"^(\d{8})_")
_LEAN_CSV_RE = re.compile(r"^(\d{8})_.*_trade\.csv$", re.IGNORECASE)
_BINANCE_KLINE_NAME_RE = re.compile(r"^[A-Z0-9]+-\d+(?:s|m|h|d|w|mo)-\d{4}-\d{2}(?:-\d{2})?\.csv$")
_ISO_DURATION_RE = re.compile(r"(?<![A-Za-z])(P(?:\d+D)?(?:T(?:\d+H)?(?:\d+M)?(?:\d+S)?)?)(?![A-Za-z0-9])")
_MS_PER_DAY = 86_400_000


def _fail(what: str, path: Path) -> UserError:
    return UserError(what.splitlines()[0] if what else "unreadable candle file", str(path))


# --------------------------------------------------------------------------------------------- detection
class _Capped(io.RawIOBase):
    """A byte stream that refuses to yield more than ``max_bytes`` (a decompression bomb stops here)."""

    def __init__(self, raw, max_bytes: int, path: Path):
        self._raw, self._max, self._path, self._taken = raw, max_bytes, path, 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        n = self._raw.readinto(buffer)
        self._taken += n or 0
        if self._taken > self._max:
            raise _fail(
                f"candle file expands to more than data.max_bytes ({_size(self._max)}); raise "
                f"data.max_bytes to read it",
                self._path,
            )
        return n

    def close(self) -> None:
        try:
            self._raw.close()
        finally:
            super().close()


def _size(n: int) -> str:
    return f"{n / 1e9:.1f} GB" if n >= 1e8 else f"{n:,} bytes"


def _open_binary(path: Path, max_bytes: int = DEFAULT_MAX_BYTES):
    """The file's bytes, decompressed by suffix (.gz .bz2 .xz, a one-member .zip), capped at ``max_bytes``."""
    suffix = path.suffix.lower()
    if suffix == ".zip":
        zf = zipfile.ZipFile(path)
        members = [i for i in zf.infolist() if not i.is_dir()]
        if len(members) != 1:
            zf.close()
            raise _fail(f"a zipped candle file must hold exactly one file, holds {len(members)}", path)
        if members[0].file_size > max_bytes:
            zf.close()
            raise _fail(
                f"zip member {members[0].filename!r} is {_size(members[0].file_size)}, over data.max_bytes "
                f"({_size(max_bytes)}); raise data.max_bytes to read it",
                path,
            )
        raw = zf.open(members[0])
        zf.close()  # the member keeps the archive open until it is closed itself
    else:
        opener = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}.get(suffix)
        raw = opener(path, "rb") if opener else open(path, "rb", buffering=0)
    return io.BufferedReader(_Capped(raw, max_bytes, path))


def _open_text(path: Path, max_bytes: int = DEFAULT_MAX_BYTES):
    return io.TextIOWrapper(_open_binary(path, max_bytes), encoding="utf-8-sig", errors="replace")


def _check_source(path: Path, max_bytes: int | None) -> None:
    """Regular files (or a directory of Lean zips) only: a device like /dev/zero never ends, and opening a FIFO
    waits for a writer. A file over ``max_bytes`` is refused before it is opened."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise UserError("candle file not found", str(path)) from None
    except OSError as exc:
        raise _fail(f"cannot read candle file: {exc.strerror or exc}", path) from None
    if stat.S_ISDIR(st.st_mode):
        return
    if not stat.S_ISREG(st.st_mode):
        kind = (
            "a FIFO"
            if stat.S_ISFIFO(st.st_mode)
            else "a character device"
            if stat.S_ISCHR(st.st_mode)
            else "a block device"
            if stat.S_ISBLK(st.st_mode)
            else "a socket"
            if stat.S_ISSOCK(st.st_mode)
            else "not a regular file"
        )
        raise UserError(f"candle source is {kind}: candles are read from regular files only", str(path))
    if max_bytes is not None and st.st_size > max_bytes:
        raise UserError(
            f"candle file is {_size(st.st_size)}, over data.max_bytes ({_size(max_bytes)}); raise "
            f"data.max_bytes to read it",
            str(path),
        )


def _peek(path: Path, n_bytes: int = 8192) -> str:
    with _open_text(path) as fh:
        return fh.read(n_bytes)


def _base_suffix(path: Path) -> str:
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes = suffixes[:-1]
    return suffixes[-1] if suffixes else ""


def _header_fields(line: str) -> list[str]:
    return [f.strip().strip('"').strip().lower() for f in line.split(",")]


def _is_number(text: str) -> bool:
    try:
        float(text.strip().strip('"'))
    except ValueError:
        return False
    return True


def _looks_like_candle_header(fields: list[str]) -> bool:
    names = set(fields)
    has_time = any(a in names for a in _TIME_ALIASES)
    n_prices = sum(any(a in names for a in aliases) for aliases in _PRICE_ALIASES.values())
    return (has_time and n_prices >= 2) or n_prices == 4


def _lean_zips_in(directory: Path) -> list[Path]:
    # is_file() is true for regular files only: a FIFO named like a zip is skipped, never opened
    return sorted(p for p in directory.iterdir() if p.is_file() and _LEAN_ZIP_RE.match(p.name))


def _detect(path: Path) -> str | None:
    if path.is_dir():
        return "lean_zip" if _lean_zips_in(path) else None
    suffix = _base_suffix(path)
    if suffix in (".parquet", ".pq"):
        return "parquet"
    if suffix in (".feather", ".arrow", ".ipc"):
        return "freqtrade_feather"
    if suffix == ".zip":
        if _LEAN_ZIP_RE.match(path.name):
            return "lean_zip"
        try:
            with zipfile.ZipFile(path) as zf:
                names = zf.namelist()
        except (zipfile.BadZipFile, OSError):
            return None
        return "lean_zip" if len(names) == 1 and _LEAN_CSV_RE.match(Path(names[0]).name) else None
    if suffix == ".json":
        head = _peek(path).lstrip()
        if head.startswith("["):
            return "freqtrade_json"
        if head.startswith("{") and re.search(r'"ohlc"\s*:', head):
            return "binance_json"
        return None
    if suffix in (".csv", ".txt", ""):
        lines = [ln for ln in _peek(path).splitlines() if ln.strip()][:2]
        if not lines:
            return None
        first = _header_fields(lines[0])
        if "cryptodatadownload" in lines[0].lower():
            return "cryptodatadownload"
        if "adj close" in first and _looks_like_candle_header(first):
            return "yahoo"
        if "open_time" in first and "close_time" in first:
            return "binance_kline"
        if _BINANCE_KLINE_NAME_RE.match(path.name) or (len(first) >= 11 and all(map(_is_number, first))):
            return "binance_kline"
        if _looks_like_candle_header(first):
            return "csv"
        if len(lines) > 1 and _looks_like_candle_header(_header_fields(lines[1])):
            return "cryptodatadownload"  # a banner line above the header
    return None


def detect_format(path: Path) -> str:
    """The name in ``FORMATS`` for ``path``, by suffix, file-name pattern and a peek at the first lines/keys."""
    path = Path(path)
    _check_source(path, None)
    try:
        fmt = _detect(path)
    except OSError as exc:
        raise _fail(f"cannot read candle file: {exc}", path)
    if fmt is None:
        raise UserError(
            f"cannot tell the candle file format; set data.format to one of {', '.join(FORMATS)}", str(path)
        )
    return fmt


# --------------------------------------------------------------------------------------- value parsing
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


# -------------------------------------------------------------------------------- named-column frames
def _pick_volume(lower: dict[str, str], symbol_hint: str, path: Path, symbol_column: bool) -> str:
    plain, suffixed = None, {}
    for low, orig in lower.items():
        m = _VOLUME_RE.match(low)
        if m is None:
            continue
        if m.group(1) is None:
            plain = orig
        else:
            suffixed[m.group(1)] = orig
    if low_v := lower.get("v"):
        plain = plain or low_v
    if suffixed:
        hint = re.sub(r"[^A-Z0-9]+", " ", symbol_hint.upper()).split()
        if symbol_column:  # "ETH/BTC" is one pair: its base is what it starts with
            hint = ["".join(hint)]
        by_base = [orig for ccy, orig in suffixed.items() if any(tok.startswith(ccy.upper()) for tok in hint)]
        if len(by_base) == 1:
            return by_base[0]
        non_quote = [orig for ccy, orig in suffixed.items() if ccy not in _QUOTE_CCY]
        if len(non_quote) == 1:
            return non_quote[0]
        if plain is None or non_quote:
            raise _fail(
                f"cannot tell which volume column is the base-asset volume among "
                f"{sorted(suffixed.values()) + ([plain] if plain else [])}",
                path,
            )
    if plain is None:
        raise _fail(f"missing column 'volume' (have {list(lower.values())})", path)
    return plain


def _from_named(df: pd.DataFrame, path: Path) -> pd.DataFrame:
    """A frame with named columns (csv, parquet, feather, yahoo, cryptodatadownload) -> candle frame."""
    cols = list(df.columns)
    if cols and re.fullmatch(r"Unnamed: 0|index|level_0|\s*", str(cols[0])):
        df = df.iloc[:, 1:]  # a pandas index column written with the data
    lower: dict[str, str] = {}
    for c in df.columns:
        key = str(c).strip().lower()
        if key in lower:
            raise _fail(f"column {key!r} appears twice (as {lower[key]!r} and {c!r})", path)
        lower[key] = c
    time_key = next((a for a in _TIME_ALIASES if a in lower), None)
    if time_key is None:
        raise _fail(f"missing timestamp column (one of {', '.join(_TIME_ALIASES)}); have {list(df.columns)}", path)
    tcol = df[lower[time_key]]
    if time_key == "date" and "time" in lower:  # separate date and time-of-day columns
        tcol = df[lower["date"]].astype(str).str.strip() + " " + df[lower["time"]].astype(str).str.strip()
    ts = _parse_timestamps(tcol, str(lower[time_key]), path)
    prices = {}
    for field, aliases in _PRICE_ALIASES.items():
        found = [lower[a] for a in aliases if a in lower]
        if not found:
            raise _fail(f"missing column {field!r} (have {list(df.columns)})", path)
        if len(found) > 1:
            raise _fail(f"ambiguous {field!r} columns {found}", path)
        prices[field] = _parse_numbers(df[found[0]], str(found[0]), path)
    from_column = "symbol" in lower and len(df) > 0
    symbol_hint = str(df[lower["symbol"]].iloc[0]) if from_column else path.stem
    vcol = _pick_volume(lower, symbol_hint, path, symbol_column=from_column)
    volume = _parse_numbers(df[vcol], str(vcol), path)
    out = _frame(ts, prices["open"], prices["high"], prices["low"], prices["close"], volume)
    if from_column:
        markets = sorted({m for m in map(value_market, pd.unique(df[lower["symbol"]].dropna())) if m})
        if len(markets) > 1:
            raise _fail(
                f"the symbol column names several markets ({', '.join(markets[:5])}"
                f"{', ...' if len(markets) > 5 else ''}): one market per file",
                path,
            )
        out.attrs["market"] = (markets[0], "its symbol column") if markets else None
    return out


def _read_csv(path: Path, max_bytes: int, **kwargs) -> pd.DataFrame:
    try:
        with _open_binary(path, max_bytes) as fh:
            return pd.read_csv(fh, encoding="utf-8-sig", compression=None, **kwargs)
    except pd.errors.EmptyDataError:
        raise _fail("candle file is empty", path)
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as exc:
        raise _fail(f"cannot parse CSV: {exc}", path)


# ------------------------------------------------------------------------------------- format readers
def _read_parquet(path: Path, max_bytes: int) -> pd.DataFrame:
    return _from_named(pd.read_parquet(path), path)


def _read_generic_csv(path: Path, max_bytes: int) -> pd.DataFrame:
    return _from_named(_read_csv(path, max_bytes), path)


def _read_yahoo(path: Path, max_bytes: int) -> pd.DataFrame:
    df = _read_csv(path, max_bytes, keep_default_na=False)  # Yahoo writes missing rows as "null": refuse, don't drop
    have = {str(c).strip().lower() for c in df.columns}
    missing = [c for c in ("Date", "Open", "High", "Low", "Close", "Volume") if c.lower() not in have]
    if missing:
        raise _fail(f"Yahoo CSV lacks column(s) {missing} (have {list(df.columns)})", path)
    adj = [c for c in df.columns if str(c).strip().lower() == "adj close"]
    return _from_named(df.drop(columns=adj), path)


def _read_cryptodatadownload(path: Path, max_bytes: int) -> pd.DataFrame:
    lines = [ln for ln in _peek(path).splitlines() if ln.strip()]
    skip = 0 if lines and _looks_like_candle_header(_header_fields(lines[0])) else 1
    return _from_named(_read_csv(path, max_bytes, skiprows=skip), path)


def _read_freqtrade_json(path: Path, max_bytes: int) -> pd.DataFrame:
    try:
        with _open_text(path, max_bytes) as fh:
            rows = json.load(fh)
    except json.JSONDecodeError as exc:
        raise _fail(f"invalid JSON: {exc}", path)
    if not isinstance(rows, list):
        raise _fail(
            f"freqtrade JSON must be a list of [ms, open, high, low, close, volume] rows, found {type(rows).__name__}",
            path,
        )
    bad = next((i for i, r in enumerate(rows) if not isinstance(r, list) or len(r) < 6), None)
    if bad is not None:
        raise _fail(
            f"freqtrade JSON row {bad} is not a [ms, open, high, low, close, volume] list: {str(rows[bad])[:80]}", path
        )
    df = pd.DataFrame([r[:6] for r in rows], columns=CANDLE_COLUMNS)
    ts = _parse_timestamps(df["timestamp"], "timestamp", path)
    vals = [_parse_numbers(df[k], k, path) for k in CANDLE_COLUMNS[1:]]
    return _frame(ts, *vals)


def _read_freqtrade_feather(path: Path, max_bytes: int) -> pd.DataFrame:
    return _from_named(pd.read_feather(path), path)


_KLINE_COLUMNS = [
    "open_time",
    "open",
    "high",
    "low",
    "close",
    "volume",
    "close_time",
    "quote_volume",
    "count",
    "taker_buy_volume",
    "taker_buy_quote_volume",
    "ignore",
]


def _read_binance_kline(path: Path, max_bytes: int) -> pd.DataFrame:
    lines = [ln for ln in _peek(path).splitlines() if ln.strip()]
    if not lines:
        raise _fail("candle file is empty", path)
    has_header = not _is_number(lines[0].split(",")[0])
    df = _read_csv(path, max_bytes, header=0 if has_header else None)
    if df.shape[1] < 6:
        raise _fail(
            f"Binance kline CSV needs at least 6 columns "
            f"(open_time, open, high, low, close, volume), found {df.shape[1]}",
            path,
        )
    names = [str(c) for c in df.columns[:6]] if has_header else _KLINE_COLUMNS[:6]
    ts = _parse_timestamps(df.iloc[:, 0], names[0], path)
    vals = [_parse_numbers(df.iloc[:, k], names[k], path) for k in range(1, 6)]
    return _frame(ts, *vals)


_BINANCE_JSON_KEYS = {
    "endTime": "timestamp",
    "openPrice": "open",
    "highPrice": "high",
    "lowPrice": "low",
    "closePrice": "close",
    "volume": "volume",
}


def _read_binance_json(path: Path, max_bytes: int, step: pd.Timedelta | None) -> pd.DataFrame:
    try:
        with _open_text(path, max_bytes) as fh:
            doc = json.load(fh)
    except json.JSONDecodeError as exc:
        raise _fail(f"invalid JSON: {exc}", path)
    records = doc.get("ohlc") if isinstance(doc, dict) else None
    if not isinstance(records, list):
        raise _fail('Binance JSON must be an object with an "ohlc" list of candles', path)
    for i, rec in enumerate(records):
        if not isinstance(rec, dict):
            raise _fail(f"Binance JSON candle {i} is not an object", path)
        lacking = [k for k in _BINANCE_JSON_KEYS if k not in rec]
        if lacking:
            raise _fail(f"Binance JSON candle {i} lacks key(s) {lacking}", path)
    df = pd.DataFrame.from_records(records, columns=list(_BINANCE_JSON_KEYS))
    end_ms = _parse_numbers(df["endTime"], "endTime", path)
    if (end_ms != np.floor(end_ms)).any():
        raise _fail(f"endTime must be whole milliseconds (row {_first_true(end_ms != np.floor(end_ms))})", path)
    end_ms = end_ms.astype(np.int64)
    named = [
        m.group(1)
        for m in _ISO_DURATION_RE.finditer(f"{doc.get('name', '')} {path.name}")
        if m.group(1) not in ("P", "PT")
    ]
    named_step = pd.Timedelta(named[0]) if named else None
    if step is None:
        step = named_step
    elif named_step is not None and named_step != step:
        raise _fail(f"step {step} disagrees with the file's own period {named[0]} ({named_step})", path)
    if step is None:
        step = _infer_step(pd.Series(np.sort(end_ms)).diff().dropna(), path, unit="ms")
    open_us = (end_ms + 1) * 1000 - step // pd.Timedelta(microseconds=1)
    ts = pd.Series(pd.to_datetime(open_us, unit="us", utc=True)).astype(TS_DTYPE)
    vals = [_parse_numbers(df[k], k, path) for k in ("openPrice", "highPrice", "lowPrice", "closePrice", "volume")]
    out = _frame(ts, *vals)
    market = value_market(doc["name"]) if isinstance(doc.get("name"), str) else None
    out.attrs["market"] = (market, "its name field") if market else None
    return out


def _read_lean_one(path: Path, max_bytes: int) -> tuple[pd.DataFrame, int]:
    """One Lean zip's candles and the bytes its CSV expands to (checked against ``max_bytes`` first)."""
    try:
        with zipfile.ZipFile(path) as zf:
            members = [n for n in zf.namelist() if not n.endswith("/")]
            if len(members) != 1 or not members[0].lower().endswith(".csv"):
                raise _fail(f"Lean zip must hold exactly one CSV, holds {members}", path)
            m = _LEAN_DATE_RE.match(path.name) or _LEAN_DATE_RE.match(Path(members[0]).name)
            if m is None:
                raise _fail("Lean zip name must start with the date, like 20180404_trade.zip", path)
            size = zf.getinfo(members[0]).file_size
            if size > max_bytes:
                raise _fail(
                    f"Lean zip expands to {_size(size)}, over what data.max_bytes leaves "
                    f"({_size(max_bytes)}); raise data.max_bytes to read it",
                    path,
                )
            with io.BufferedReader(_Capped(zf.open(members[0]), max_bytes, path)) as fh:
                df = pd.read_csv(fh, header=None)
    except zipfile.BadZipFile as exc:
        raise _fail(f"not a readable zip: {exc}", path)
    except pd.errors.EmptyDataError:
        raise _fail("Lean zip holds an empty CSV", path)
    except pd.errors.ParserError as exc:
        raise _fail(f"cannot parse CSV inside zip: {exc}", path)
    if df.shape[1] != 6:
        raise _fail(
            f"Lean trade CSV must have 6 columns (ms since midnight, open, high, low, close, volume), "
            f"found {df.shape[1]} (quote zips are not candles)",
            path,
        )
    try:
        day = pd.Timestamp(m.group(1), tz="UTC")
    except ValueError:
        raise _fail(f"Lean zip date {m.group(1)!r} is not a valid YYYYMMDD date", path)
    ms = _parse_numbers(df[0], "milliseconds since midnight", path)
    bad = (ms < 0) | (ms >= _MS_PER_DAY) | (ms != np.floor(ms))
    if bad.any():
        i = _first_true(bad)
        raise _fail(f"Lean time {ms[i]!r} at row {i} is not whole milliseconds within the day", path)
    ts = pd.Series(day + pd.to_timedelta(ms.astype(np.int64), unit="ms")).astype(TS_DTYPE)
    vals = [_parse_numbers(df[k], ["open", "high", "low", "close", "volume"][k - 1], path) for k in range(1, 6)]
    return _frame(ts, *vals), size


def _read_lean(path: Path, max_bytes: int) -> pd.DataFrame:
    if any(part.lower() == "equity" for part in path.resolve().parts):
        raise _fail(
            "Lean equity data (prices x10000, exchange-time stamps) is not supported; "
            "lean_zip reads Lean crypto trade zips",
            path,
        )
    if path.is_dir():
        zips = _lean_zips_in(path)
        if not zips:
            raise _fail("directory holds no Lean YYYYMMDD_trade.zip files", path)
        parts, left = [], max_bytes  # the cap holds for the whole directory, not per zip
        for z in zips:
            part, size = _read_lean_one(z, left)
            parts.append(part)
            left -= size
        return pd.concat(parts, ignore_index=True)
    return _read_lean_one(path, max_bytes)[0]


# ------------------------------------------------------------------------------------------ read_candles
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


# ---------------------------------------------------------------------------------------------- resample
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
