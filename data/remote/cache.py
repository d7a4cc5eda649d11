"""The incremental parquet cache of downloaded candles, one file per (source, venue, symbol, timeframe),
saved atomically; ``_incremental`` downloads only what the cache lacks around the requested range, merges it
in and returns the range.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from typing import Callable
from urllib.parse import quote

import pandas as pd

from core.errors import UserError
from data.remote.failures import _cause
from data.schema import CANDLE_COLUMNS, validate_candles
from data.timeframes import to_string, to_timedelta

log = logging.getLogger("data.remote")  # one logger for the package, the name users configure

_TS_DTYPE = "datetime64[ns, UTC]"


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
