"""Frames with named columns (generic CSV, parquet, feather, Yahoo, CryptoDataDownload) -> candle frames:
the time column and the four prices found by their aliases, the base-asset volume picked among several volume
columns, and the market a ``symbol`` column names.
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from data.formats.sources import _fail, _open_binary
from data.formats.values import _frame, _parse_numbers, _parse_timestamps
from data.markets import value_market

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
