"""Network candle providers (ccxt exchanges, Yahoo Finance) behind an incremental parquet cache.

Every path ends in canonical candles (see ``data.schema``) or in a ``UserError`` that carries the cause:
a failed download is never replaced by cached-but-stale data, by another source, or by synthetic data.

Layout of the cache (one parquet file per source, venue, symbol and timeframe)::

    <cache_dir>/<source>/<venue>/<symbol>_<timeframe>.parquet      # names percent-encoded ("BTC%2FUSDT_1h")

A load reads the cache, downloads only what the cache lacks (candles after the last cached one, and
candles before the first cached one when the requested start lies earlier), merges, saves atomically and
returns the requested ``[start, end)`` range. The still-open last candle is never returned nor cached.

``ccxt`` and ``yfinance`` are optional packages, imported only when their provider is used.
Rate limiting is ccxt's own (``enableRateLimit=True``); this module never sleeps.
"""

from __future__ import annotations

import importlib
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any, Callable
from urllib.parse import quote

import numpy as np
import pandas as pd

from core.errors import UserError
from data.schema import CANDLE_COLUMNS, validate_candles
from data.timeframes import to_string, to_timedelta

log = logging.getLogger(__name__)

_EPOCH = pd.Timestamp(0, tz="UTC")
_MS = pd.Timedelta(1, "ms")
_TS_DTYPE = "datetime64[ns, UTC]"
_MAX_CAUSE = 300  # characters of an exception message kept in an error line

Progress = Callable[[int, pd.Timestamp], None]  # (candles fetched so far, open time of the newest one)


# ----------------------------------------------------------------------------------------------- helpers
def _require(module: str, provider: str):
    """Import an optional package, or explain how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise UserError(
            f"the {provider} provider needs the optional package {module}: pip install 'candlelab[{provider}]'",
            f"data.provider={provider}",
        ) from exc


def _utc(value: Any, where: str) -> pd.Timestamp:
    """A time given as text, datetime or Timestamp -> tz-aware UTC Timestamp (naive values are taken as UTC)."""
    try:
        ts = pd.Timestamp(value)
    except (TypeError, ValueError) as exc:
        raise UserError(f"cannot read time {value!r}: {exc}", where) from exc
    if ts is pd.NaT:
        raise UserError(f"time {value!r} is empty", where)
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def _opt_utc(value: Any, where: str) -> pd.Timestamp | None:
    return (
        None
        if value is None or (isinstance(value, str) and value.strip() in ("", "null", "None"))
        else _utc(value, where)
    )


def _to_ms(value: pd.Timestamp | pd.Timedelta) -> int:
    """Milliseconds since the epoch (a Timestamp) or in a duration (a Timedelta), whatever the resolution."""
    return int((value - _EPOCH if isinstance(value, pd.Timestamp) else value) // _MS)


def _cause(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= _MAX_CAUSE else text[:_MAX_CAUSE] + "..."


def _is_bad_symbol(exc: BaseException) -> bool:
    """ccxt.BadSymbol (matched by class name so that no ccxt import is needed to recognise it)."""
    return any(cls.__name__ == "BadSymbol" for cls in type(exc).__mro__)


def _empty_candles() -> pd.DataFrame:
    df = pd.DataFrame({c: pd.Series(dtype="float64") for c in CANDLE_COLUMNS})
    df["timestamp"] = pd.Series(dtype=_TS_DTYPE)
    return df


def _merge(*frames: pd.DataFrame | None) -> pd.DataFrame:
    """Concatenate candle frames; where two share an open time the later frame wins; sorted by time."""
    frames = [f for f in frames if f is not None and len(f)]
    if not frames:
        return _empty_candles()
    out = pd.concat([f[CANDLE_COLUMNS] for f in frames], ignore_index=True)
    out["timestamp"] = out["timestamp"].astype(_TS_DTYPE)
    out = out.drop_duplicates("timestamp", keep="last").sort_values("timestamp", kind="stable")
    return out.reset_index(drop=True)


def _select(candles: pd.DataFrame, start: pd.Timestamp, end: pd.Timestamp | None) -> pd.DataFrame:
    mask = candles["timestamp"] >= start
    if end is not None:
        mask &= candles["timestamp"] < end
    return candles.loc[mask].reset_index(drop=True)


def _cfg_get(cfg: Any, key: str, default: Any = ...) -> Any:
    value = cfg.get(key, None) if hasattr(cfg, "get") else getattr(cfg, key, None)
    if value is None:
        if default is ...:
            raise UserError(f"missing setting {key!r}", f"data.{key}")
        return default
    return value


# ------------------------------------------------------------------------------------------------- cache
class CandleCache:
    """Parquet cache of canonical candles, one file per (source, venue, symbol, timeframe) under ``root``."""

    def __init__(self, root: Path | str):
        self.root = Path(root).expanduser()

    @staticmethod
    def _part(value: str, what: str) -> str:
        text = str(value)
        name = quote(text, safe="")
        if not text or name in (".", ".."):
            raise UserError(f"{what} {text!r} cannot name a cache file", f"cache {what}")
        return name

    def path(self, source: str, venue: str, symbol: str, timeframe: str) -> Path:
        """Where the candles of one (source, venue, symbol, timeframe) live; names are percent-encoded."""
        tf = to_string(to_timedelta(timeframe))
        return (
            self.root
            / self._part(source, "source")
            / self._part(venue, "venue")
            / f"{self._part(symbol, 'symbol')}_{tf}.parquet"
        )

    def load(self, source: str, venue: str, symbol: str, timeframe: str) -> pd.DataFrame | None:
        """The cached candles, validated; ``None`` when nothing is cached. A corrupt file is an error."""
        path = self.path(source, venue, symbol, timeframe)
        if not path.is_file():
            return None
        try:
            df = pd.read_parquet(path)
        except Exception as exc:
            raise UserError(
                f"candle cache unreadable ({type(exc).__name__}: {_cause(exc)}); delete the file to download again",
                str(path),
            ) from exc
        out = validate_candles(df, str(path))
        out["timestamp"] = out["timestamp"].astype(_TS_DTYPE)
        return out

    def save(self, source: str, venue: str, symbol: str, timeframe: str, candles: pd.DataFrame) -> None:
        """Write ``candles`` atomically: a temporary file in the same folder, then ``os.replace``.

        A failure midway leaves the previous cache file (or none) in place and no temporary file behind.
        """
        path = self.path(source, venue, symbol, timeframe)
        candles = validate_candles(candles, f"candles to cache at {path}")
        tmp = None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
            os.close(fd)
            candles.to_parquet(tmp, index=False)
            os.replace(tmp, path)
            tmp = None
        except Exception as exc:
            raise UserError(f"cannot write candle cache: {type(exc).__name__}: {_cause(exc)}", str(path)) from exc
        finally:
            if tmp is not None:
                try:
                    os.unlink(tmp)
                except OSError:
                    pass
        log.debug("cached %d candles at %s", len(candles), path)


# -------------------------------------------------------------------------------------------------- ccxt
def _exchange_name(exchange: Any) -> str:
    return str(getattr(exchange, "id", None) or type(exchange).__name__)


def _now(exchange: Any = None) -> pd.Timestamp:
    """The exchange's clock when it has one (ccxt: ``milliseconds()``), else this machine's."""
    ms = getattr(exchange, "milliseconds", None)
    return (
        pd.Timestamp(int(ms()), unit="ms", tz="UTC") if callable(ms) else pd.Timestamp(time.time(), unit="s", tz="UTC")
    )


def _check_exchange(exchange: Any, timeframe: str) -> pd.Timedelta:
    name = _exchange_name(exchange)
    step = to_timedelta(timeframe)
    has = getattr(exchange, "has", None)
    if isinstance(has, dict) and has.get("fetchOHLCV") is False:
        raise UserError(f"exchange {name} offers no OHLCV candles", "data.exchange")
    offered = getattr(exchange, "timeframes", None)
    if isinstance(offered, dict) and offered and timeframe not in offered:
        raise UserError(
            f"exchange {name} has no timeframe {timeframe!r}; it offers {sorted(offered)}", "data.timeframe"
        )
    if getattr(exchange, "enableRateLimit", True) is False:
        log.warning("exchange %s was built with enableRateLimit=False: requests are not throttled", name)
    return step


def fetch_ccxt(
    exchange: Any,
    symbol: str,
    timeframe: str,
    since: pd.Timestamp,
    until: pd.Timestamp | None,
    limit: int = 1000,
    progress: Progress | None = None,
    require_data: bool = True,
) -> pd.DataFrame:
    """Download closed candles with open time in ``[since, until)`` from a ccxt exchange object.

    Pages forward with ``exchange.fetch_ohlcv(symbol, timeframe, since=ms, limit=limit)``, each page starting
    one timeframe after the newest candle seen, until ``until`` is reached, the exchange returns nothing
    newer, or the newest candle is the still-open one. Overlapping pages are de-duplicated (the later page
    wins); the still-open candle (open time + timeframe > the exchange's clock) is dropped. Throttling is
    left to ccxt's rate limiter (``enableRateLimit=True``).

    Returns canonical candles (possibly empty when no candle in the range has closed yet).
    Raises ``UserError`` for any failure of the exchange call (the cause in the message), for an unknown
    symbol, and (``require_data``) when the very first page is empty although a closed candle could exist
    in the range. ``progress(n_fetched, newest_open_time)`` is called after each page.
    """
    name = _exchange_name(exchange)
    where = f"{name} {symbol}"
    step = _check_exchange(exchange, timeframe)
    if int(limit) <= 0:
        raise UserError(f"page size limit must be positive, got {limit}", "data.limit")
    since, until = _utc(since, "data.start"), _opt_utc(until, "data.end")
    step_ms, since_ms = _to_ms(step), _to_ms(since)
    until_ms = None if until is None else _to_ms(until)

    pages: list[np.ndarray] = []
    fetched, cursor, first = 0, since_ms, True
    while until_ms is None or cursor < until_ms:
        try:
            raw = exchange.fetch_ohlcv(symbol, timeframe, since=cursor, limit=int(limit))
        except UserError:
            raise
        except Exception as exc:
            if _is_bad_symbol(exc):
                raise UserError(f"unknown symbol {symbol!r} on {name}: {_cause(exc)}", where) from exc
            raise UserError(f"download failed: {type(exc).__name__}: {_cause(exc)}", where) from exc
        if not raw:
            if first and require_data and since + step <= _now(exchange):
                raise UserError(
                    f"exchange returned no candles for {symbol!r} from {since} "
                    f"(unknown symbol, or no data in this range)",
                    where,
                )
            break
        first = False
        try:
            page = np.asarray(raw, dtype="float64")
            if page.ndim != 2 or page.shape[1] < 6:
                raise ValueError(f"rows of shape {page.shape[1:]}")
        except (TypeError, ValueError) as exc:
            raise UserError(f"exchange returned OHLCV rows not like [time, o, h, l, c, v]: {exc}", where) from exc
        page = page[:, :6]
        pages.append(page)
        fetched += len(page)
        newest = int(page[:, 0].max())
        if progress is not None:
            progress(fetched, pd.Timestamp(newest, unit="ms", tz="UTC"))
        if newest < cursor:  # nothing newer than what we asked for
            break
        cursor = newest + step_ms
        if cursor > _to_ms(_now(exchange)):  # the newest candle is still open: nothing more to come
            break

    if not pages:
        return _empty_candles()
    arr = np.concatenate(pages)
    df = pd.DataFrame(arr[:, 1:], columns=CANDLE_COLUMNS[1:])
    df.insert(0, "timestamp", pd.to_datetime(arr[:, 0].astype("int64"), unit="ms", utc=True).astype(_TS_DTYPE))
    closed = df["timestamp"] + step <= _now(exchange)
    keep = closed & (df["timestamp"] >= since)
    if until is not None:
        keep &= df["timestamp"] < until
    if not closed.all():
        log.debug("%s: dropped %d still-open candle(s)", where, int((~closed).sum()))
    df = _merge(df.loc[keep])
    log.info("%s %s: %d candle(s) downloaded from %s", where, timeframe, len(df), since)
    return validate_candles(df, f"ccxt {where} {timeframe}") if len(df) else df


def _default_exchange(name: str) -> Any:
    ccxt = _require("ccxt", "ccxt")
    if name not in getattr(ccxt, "exchanges", []):
        raise UserError(f"unknown ccxt exchange {name!r}", "data.exchange")
    return getattr(ccxt, name)({"enableRateLimit": True})


def _incremental(
    cache: CandleCache,
    key: tuple[str, str, str, str],
    start: pd.Timestamp,
    end: pd.Timestamp | None,
    step: pd.Timedelta,
    now: pd.Timestamp,
    fetch: Callable[[pd.Timestamp, pd.Timestamp | None, str], pd.DataFrame],
    where: str,
) -> pd.DataFrame:
    """Shared cache logic: fetch what the cache lacks around ``[start, end)``, merge, save, return the range.

    ``fetch(since, until, kind)`` downloads closed candles in ``[since, until)``; ``kind`` is "initial" (no
    cache yet), "backfill" (before the first cached candle) or "update" (after the last cached candle).
    """
    cached = cache.load(*key)
    new = []
    try:
        if cached is None:
            new.append(fetch(start, end, "initial"))
        else:
            first, last = cached["timestamp"].iloc[0], cached["timestamp"].iloc[-1]
            if start < first:
                new.append(fetch(start, first, "backfill"))
                if new[-1].empty:
                    log.warning(
                        "%s: the source has no candles before the cached %s; requested start %s", where, first, start
                    )
            nxt = last + step  # the next candle is wanted if it opens before end and has closed by now
            if (end is None or nxt < end) and nxt + step <= now:
                new.append(fetch(nxt, end, "update"))
    except UserError as exc:
        if cached is not None:
            raise UserError(
                f"{exc.what}; the cached candles {cached['timestamp'].iloc[0]} .. "
                f"{cached['timestamp'].iloc[-1]} are intact but were not returned",
                exc.where,
            ) from exc
        raise
    fetched = sum(len(f) for f in new)
    if fetched:
        merged = _merge(cached, *new)
        cache.save(*key, merged)
    elif cached is not None:
        merged = cached
        log.info("%s: cache is up to date (%d candles)", where, len(cached))
    else:
        raise UserError(f"no closed candles between {start} and {end if end is not None else 'now'}", where)
    out = _select(merged, start, end)
    if out.empty:
        raise UserError(
            f"no candles between {start} and {end if end is not None else 'now'}; "
            f"available {merged['timestamp'].iloc[0]} .. {merged['timestamp'].iloc[-1]}",
            where,
        )
    return validate_candles(out, where)


def load_ccxt(
    cfg_like: Any, exchange_factory: Callable[[str], Any] | None = None, progress: Progress | None = None
) -> pd.DataFrame:
    """Candles of one market from a ccxt exchange, through the incremental cache.

    ``cfg_like`` (dict or DictConfig) holds ``exchange`` (ccxt id, e.g. "binance"), ``symbol`` (market
    symbol, e.g. "BTC/USDT"), ``timeframe`` ("1m", "1h", ...), ``start``, ``end`` (exclusive; null = now),
    ``cache_dir`` and optionally ``limit`` (page size, default 1000). ``exchange_factory(name)`` builds the
    exchange object; the default builds ``ccxt.<name>({"enableRateLimit": True})``.

    Only candles missing from the cache are downloaded. Any download failure raises ``UserError`` — also
    when a cache exists: stale data is never returned in place of an update that failed.
    """
    name = str(_cfg_get(cfg_like, "exchange"))
    symbol = str(_cfg_get(cfg_like, "symbol"))
    timeframe = str(_cfg_get(cfg_like, "timeframe"))
    step = to_timedelta(timeframe)
    start = _utc(_cfg_get(cfg_like, "start"), "data.start")
    end = _opt_utc(_cfg_get(cfg_like, "end", None), "data.end")
    if end is not None and end <= start:
        raise UserError(f"end {end} is not after start {start}", "data.end")
    limit = int(_cfg_get(cfg_like, "limit", 1000))
    cache = CandleCache(_cfg_get(cfg_like, "cache_dir"))
    exchange = (exchange_factory or _default_exchange)(name)
    where = f"{name} {symbol}"
    return _incremental(
        cache,
        ("ccxt", name, symbol, timeframe),
        start,
        end,
        step,
        _now(exchange),
        lambda since, until, kind: fetch_ccxt(
            exchange, symbol, timeframe, since, until, limit=limit, progress=progress, require_data=kind != "backfill"
        ),
        where,
    )


# ---------------------------------------------------------------------------------------------- yfinance
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
