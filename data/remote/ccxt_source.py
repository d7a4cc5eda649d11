"""Candles from a ccxt exchange: closed candles paged forward through ``fetch_ohlcv``, throttled by ccxt's
own rate limiter, the still-open candle dropped (``fetch_ccxt``), and loaded through the incremental cache
(``load_ccxt``).
"""

from __future__ import annotations

import logging
from typing import Any, Callable

import numpy as np
import pandas as pd

from core.errors import UserError
from data.remote.cache import _TS_DTYPE, CandleCache, _empty_candles, _incremental, _merge
from data.remote.failures import _cause, _require
from data.remote.times import _now, _opt_utc, _to_ms, _utc
from data.schema import CANDLE_COLUMNS, validate_candles
from data.timeframes import to_timedelta

log = logging.getLogger("data.remote")  # one logger for the package, the name users configure

Progress = Callable[[int, pd.Timestamp], None]  # (candles fetched so far, open time of the newest one)


def _is_bad_symbol(exc: BaseException) -> bool:
    """ccxt.BadSymbol (matched by class name so that no ccxt import is needed to recognise it)."""
    return any(cls.__name__ == "BadSymbol" for cls in type(exc).__mro__)


def _cfg_get(cfg: Any, key: str, default: Any = ...) -> Any:
    value = cfg.get(key, None) if hasattr(cfg, "get") else getattr(cfg, key, None)
    if value is None:
        if default is ...:
            raise UserError(f"missing setting {key!r}", f"data.{key}")
        return default
    return value


def _exchange_name(exchange: Any) -> str:
    return str(getattr(exchange, "id", None) or type(exchange).__name__)


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
