"""Candles from Yahoo Finance through yfinance: timeframes mapped to Yahoo's intervals, raw (not
dividend-adjusted) prices, open times in UTC, the still-open candle dropped, loaded through the incremental
cache (``load_yfinance``).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable

import pandas as pd

from core.errors import UserError
from data.remote.cache import _TS_DTYPE, CandleCache, _empty_candles, _incremental, _merge
from data.remote.failures import _cause, _require
from data.remote.times import _now, _opt_utc, _utc
from data.schema import validate_candles
from data.timeframes import to_string, to_timedelta

log = logging.getLogger("data.remote")  # one logger for the package, the name users configure

_YAHOO_INTERVALS = {
    "1m": "1m",
    "2m": "2m",
    "5m": "5m",
    "15m": "15m",
    "30m": "30m",
    "1h": "60m",
    "90m": "90m",
    "1d": "1d",
    "5d": "5d",
    "1w": "1wk",
}
_YAHOO_COLUMNS = {"open": "open", "high": "high", "low": "low", "close": "close", "volume": "volume"}


def _yahoo_timeframe(interval: str) -> str:
    """Yahoo interval or canonical timeframe ("60m", "1h", "1wk", "1w") -> canonical timeframe string."""
    text = str(interval).strip()
    if text.endswith("wk"):
        text = text[:-1]
    if text.endswith("mo"):
        raise UserError(f"interval {interval!r} has no fixed length; use 1d or 1w", "data.timeframe")
    tf = to_string(to_timedelta(text, "data.timeframe"))
    if tf not in _YAHOO_INTERVALS:
        raise UserError(f"Yahoo has no interval {interval!r}; choose from {sorted(_YAHOO_INTERVALS)}", "data.timeframe")
    return tf


def _yahoo_download(symbol: str, start: pd.Timestamp, end: pd.Timestamp | None, interval: str) -> pd.DataFrame:
    """Default downloader: ``yfinance.Ticker(symbol).history(...)`` with yfinance's exceptions raised, not
    logged and swallowed. Raw (unadjusted for dividends) prices, so that cached rows stay valid."""
    yf = _require("yfinance", "yfinance")
    hide = yf.config.debug.hide_exceptions
    yf.config.debug.hide_exceptions = False
    try:
        return yf.Ticker(symbol).history(
            start=start, end=end, interval=interval, auto_adjust=False, actions=False, prepost=False
        )
    except Exception as exc:
        if type(exc).__name__ == "YFPricesMissingError":  # a valid ticker without prices in this range
            empty = pd.DataFrame()
            empty.attrs["error"] = _cause(exc)
            return empty
        raise
    finally:
        yf.config.debug.hide_exceptions = hide


def _from_yahoo(raw: pd.DataFrame, symbol: str, where: str) -> pd.DataFrame:
    """Yahoo frame (Open/High/Low/Close/Volume, time index or Date/Datetime column) -> canonical candles.

    The open time becomes UTC; a tz-naive time (yfinance.download's daily default) is taken as UTC."""
    df = raw.copy()
    if isinstance(df.columns, pd.MultiIndex):  # yfinance.download: (Price, Ticker) columns
        level = next(
            (i for i in range(df.columns.nlevels) if {"Open", "Close"} <= set(df.columns.get_level_values(i))), 0
        )
        others = [i for i in range(df.columns.nlevels) if i != level]
        tickers = {t for i in others for t in df.columns.get_level_values(i)}
        if len(tickers) > 1:
            raise UserError(f"Yahoo returned several tickers {sorted(tickers)} for {symbol!r}", where)
        df.columns = df.columns.get_level_values(level)
    df.columns = [str(c).strip().lower() for c in df.columns]
    for col in ("datetime", "date"):
        if col in df.columns:
            df = df.set_index(col)
            break
    missing = [c for c in _YAHOO_COLUMNS if c not in df.columns]
    if missing:
        raise UserError(f"Yahoo answer lacks column(s) {missing}; have {list(df.columns)}", where)
    try:
        idx = pd.DatetimeIndex(df.index)
    except (TypeError, ValueError) as exc:
        raise UserError(f"Yahoo answer has no time index: {exc}", where) from exc
    idx = idx.tz_localize("UTC") if idx.tz is None else idx.tz_convert("UTC")
    out = pd.DataFrame({"timestamp": idx.astype(_TS_DTYPE)})
    for col in _YAHOO_COLUMNS:
        out[col] = pd.to_numeric(df[col], errors="raise").to_numpy(dtype="float64")
    return out


def load_yfinance(
    symbol: str,
    interval: str,
    start: Any,
    end: Any,
    cache_dir: Path | str,
    download: Callable[..., pd.DataFrame] | None = None,
) -> pd.DataFrame:
    """Candles of one Yahoo Finance ticker (e.g. "AAPL", "BTC-USD"), through the incremental cache.

    ``interval`` is a canonical timeframe or a Yahoo interval (1m 2m 5m 15m 30m 1h/60m 90m 1d 5d 1w/1wk).
    ``download(symbol, start=, end=, interval=)`` returns Yahoo's frame; the default wraps
    ``yfinance.Ticker.history`` (``yfinance.download`` itself also fits). Yahoo limits intraday history
    (e.g. 1m: the last days only); its refusal is reported, not worked around. Open times become UTC; the
    still-open candle is dropped. Any download failure raises ``UserError``, also when a cache exists.
    """
    timeframe = _yahoo_timeframe(interval)
    step = to_timedelta(timeframe)
    start = _utc(start, "data.start")
    end = _opt_utc(end, "data.end")
    if end is not None and end <= start:
        raise UserError(f"end {end} is not after start {start}", "data.end")
    where = f"yahoo {symbol}"
    download = download or _yahoo_download
    now = _now()

    def fetch(since: pd.Timestamp, until: pd.Timestamp | None, kind: str) -> pd.DataFrame:
        try:
            raw = download(symbol, start=since, end=until, interval=_YAHOO_INTERVALS[timeframe])
        except UserError:
            raise
        except Exception as exc:
            if type(exc).__name__ in ("YFTzMissingError", "YFTickerMissingError"):
                raise UserError(f"unknown symbol {symbol!r} on Yahoo: {_cause(exc)}", where) from exc
            raise UserError(f"download failed: {type(exc).__name__}: {_cause(exc)}", where) from exc
        if raw is None or len(raw) == 0:
            reason = (raw.attrs.get("error") if raw is not None else None) or "unknown symbol, or no data"
            if kind == "initial" and since + step <= now:  # markets close: later empty answers are normal
                raise UserError(f"Yahoo returned no candles for {symbol!r} from {since} ({reason})", where)
            log.warning("%s: Yahoo returned no candles in [%s, %s) (%s)", where, since, until, reason)
            return _empty_candles()
        df = _from_yahoo(raw, symbol, where)
        keep = (df["timestamp"] + step <= now) & (df["timestamp"] >= since)
        if until is not None:
            keep &= df["timestamp"] < until
        df = _merge(df.loc[keep])
        log.info("%s %s: %d candle(s) downloaded from %s", where, timeframe, len(df), since)
        return validate_candles(df, f"{where} {timeframe}") if len(df) else df

    return _incremental(
        CandleCache(cache_dir), ("yfinance", "yahoo", symbol, timeframe), start, end, step, now, fetch, where
    )
