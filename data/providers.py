"""Provider dispatch: config -> validated candles per symbol, then the quality rules (outliers, gap report)
and an optional resample. A provider that fails raises; nothing falls back to another source."""

import logging
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from omegaconf import DictConfig

from core.errors import UserError
from data import files, synthetic
from data.formats import DEFAULT_MAX_BYTES, resample
from data.markets import name_markets
from data.quality import apply_outlier_rule, gap_report
from data.timeframes import to_string, to_timedelta

log = logging.getLogger(__name__)


@dataclass
class Candles:
    by_symbol: dict[str, pd.DataFrame]
    step: pd.Timedelta
    provider: str
    sources: dict[str, str]
    oracle_up: dict[str, pd.Series] | None = None  # synthetic only: the Bayes-optimal direction call
    quality: dict[str, dict] = field(default_factory=dict)  # symbol -> gap report + outliers found

    @property
    def timeframe(self) -> str:
        return to_string(self.step)


def _synthetic(data: DictConfig, symbols: list[str], seed: int) -> Candles:
    gen = synthetic.generate(
        symbols,
        rows=int(data.rows),
        timeframe=data.timeframe,
        start=str(data.start),
        seed=seed,
        signal_strength=float(data.signal_strength),
        signal_half_life=float(data.signal_half_life),
        volatility=float(data.volatility),
        correlation=float(data.correlation),
        signal_correlation=float(data.signal_correlation),
        regime_switch=float(data.get("regime_switch", 0.0)),
        gap_rate=float(data.get("gap_rate", 0.0)),
    )
    return Candles(
        by_symbol=gen.candles,
        step=to_timedelta(data.timeframe),
        provider="synthetic",
        sources={s: f"synthetic(seed={seed})" for s in symbols},
        oracle_up=gen.oracle_up,
    )


def _files(data: DictConfig, symbols: list[str]) -> Candles:
    """One file per symbol. A file whose name or contents say which market it holds keeps that name: with a
    ``{symbol}`` path it must hold the symbol it was chosen for; a single fixed path names the symbol trained
    when ``data.symbol_from_file`` (else a different market is refused)."""
    by_symbol, sources, steps = {}, {}, set()
    declared = to_timedelta(data.timeframe) if data.get("timeframe") else None
    per_symbol = "{symbol}" in str(data.path)
    if not per_symbol and len(symbols) > 1:
        raise UserError(
            f"data.path names one file for {len(symbols)} symbols ({', '.join(symbols)}): put "
            f"{{symbol}} in the path to read one file per symbol",
            "data.path",
        )
    for s in symbols:
        path = Path(str(data.path).format(symbol=s)).expanduser()
        read = files.read_marked_candle_file(
            path,
            fmt=str(data.get("format", "auto")),
            stamped_at=str(data.get("stamped_at", "open")),
            step=declared,
            max_bytes=int(data.get("max_bytes") or DEFAULT_MAX_BYTES),
        )
        c, name = read.candles, s
        if read.market is not None and read.market.upper() != s.upper():
            if per_symbol:
                raise UserError(f"the file for {s} holds {read.market} candles ({read.said_by} says so)", str(path))
            if not data.get("symbol_from_file", True):
                raise UserError(
                    f"the file holds {read.market} candles ({read.said_by} says so), not {s}: set "
                    f"coin.symbols=[{read.market}] (or data.symbol_from_file=true)",
                    str(path),
                )
            log.warning(
                "%s holds %s candles (%s says so): training and registering %s, not %s",
                path,
                read.market,
                read.said_by,
                read.market,
                s,
            )
            name = read.market
        if data.get("rows"):
            c = c.iloc[-int(data.rows) :].reset_index(drop=True)
        by_symbol[name], sources[name] = c, str(path)
        steps.add(declared or files.infer_step(c, str(path)))
    if len(steps) > 1:
        raise UserError(f"symbols have different timeframes {sorted(map(str, steps))}", "data.path")
    return Candles(by_symbol=by_symbol, step=steps.pop(), provider="files", sources=sources)


def _remote(data: DictConfig, symbols: list[str]) -> Candles:
    from data import remote

    by_symbol, sources = {}, {}
    for s in symbols:
        if data.provider == "ccxt":
            market = str(data.market).format(symbol=s)
            c = remote.load_ccxt(
                {
                    "exchange": data.exchange,
                    "symbol": market,
                    "timeframe": data.timeframe,
                    "start": data.start,
                    "end": data.get("end"),
                    "cache_dir": data.cache_dir,
                    "limit": data.get("limit", 1000),
                }
            )
            sources[s] = f"ccxt:{data.exchange}:{market}"
        else:
            ticker = str(data.ticker).format(symbol=s)
            c = remote.load_yfinance(ticker, str(data.timeframe), data.start, data.get("end"), data.cache_dir)
            sources[s] = f"yfinance:{ticker}"
        by_symbol[s] = c
    return Candles(by_symbol=by_symbol, step=to_timedelta(data.timeframe), provider=str(data.provider), sources=sources)


def named_symbols(data: DictConfig, symbols: list[str]) -> list[str]:
    """The symbols a load of ``symbols`` will hold, as far as names tell before reading: a single fixed file
    whose name pairs one market (ETH_USDT-1m.json) stands for that market when ``data.symbol_from_file``.
    (A symbol column only tells once read: ``load_candles`` then keys the candles by it.)"""
    symbols = [str(s) for s in symbols]
    if data.get("provider") != "files" or "{symbol}" in str(data.path) or len(symbols) != 1:
        return symbols
    if not data.get("symbol_from_file", True):
        return symbols
    named = name_markets(Path(str(data.path)).name)
    return [named[0]] if len(named) == 1 and named[0].upper() != symbols[0].upper() else symbols


def load_candles(data: DictConfig, symbols: list[str], seed: int) -> Candles:
    if not symbols:
        raise UserError("no symbols selected", "coin.symbols")
    if data.provider == "synthetic":
        candles = _synthetic(data, symbols, seed)
    elif data.provider == "files":
        candles = _files(data, symbols)
    elif data.provider in ("ccxt", "yfinance"):
        candles = _remote(data, symbols)
    else:
        raise UserError(
            f"unknown data provider {data.provider!r}; choose synthetic, files, ccxt or yfinance", "data.provider"
        )
    rule = str(data.get("outliers", "warn"))
    for s, c in list(candles.by_symbol.items()):
        c, found = apply_outlier_rule(
            c,
            rule,
            float(data.get("outlier_threshold", 15.0)),
            float(data.get("outlier_min_move", 0.05)),
            candles.sources[s],
        )
        if data.get("resample_to"):
            c = resample(c, to_timedelta(data.resample_to, "data.resample_to"))
        candles.by_symbol[s] = c
        candles.quality[s] = {"outliers": found, "outlier_rule": rule}
    if data.get("resample_to"):
        candles.step = to_timedelta(data.resample_to, "data.resample_to")
    for s, c in candles.by_symbol.items():
        candles.quality[s].update(gap_report(c, candles.step))
    return candles
