"""One reader per format in ``FORMATS``: each takes the path and the byte cap and returns candles as the
file holds them (``read_candle_source`` orders, shifts and validates them). The named-column formats go
through ``data.formats.frames``; freqtrade JSON, Binance klines and JSON, and Lean zips are read here.
"""

from __future__ import annotations

import io
import json
import re
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd

from data.formats.detect import _header_fields, _is_number, _lean_zips_in, _looks_like_candle_header
from data.formats.frames import _from_named, _read_csv
from data.formats.sources import _Capped, _fail, _open_text, _peek, _size
from data.formats.values import TS_DTYPE, _first_true, _frame, _infer_step, _parse_numbers, _parse_timestamps
from data.markets import value_market
from data.schema import CANDLE_COLUMNS

_LEAN_DATE_RE = re.compile(r"^(\d{8})_")

_ISO_DURATION_RE = re.compile(r"(?<![A-Za-z])(P(?:\d+D)?(?:T(?:\d+H)?(?:\d+M)?(?:\d+S)?)?)(?![A-Za-z0-9])")
_MS_PER_DAY = 86_400_000


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
