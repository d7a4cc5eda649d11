"""Provider dispatch: config -> validated candles per symbol (never a silent fallback to another source)."""
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from omegaconf import DictConfig

from data import files, synthetic
from data.errors import UserError
from data.timeframes import to_string, to_timedelta


@dataclass
class Candles:
    by_symbol: dict[str, pd.DataFrame]
    step: pd.Timedelta
    provider: str
    sources: dict[str, str]
    oracle_up: dict[str, pd.Series] | None = None   # synthetic only: the Bayes-optimal direction call
    notes: list[str] = field(default_factory=list)

    @property
    def timeframe(self) -> str:
        return to_string(self.step)


def load_candles(data: DictConfig, symbols: list[str], seed: int) -> Candles:
    if not symbols:
        raise UserError("no symbols selected", "coin.symbols")
    if data.provider == "synthetic":
        gen = synthetic.generate(
            symbols, rows=int(data.rows), timeframe=data.timeframe, start=str(data.start), seed=seed,
            signal_strength=float(data.signal_strength), signal_half_life=float(data.signal_half_life),
            volatility=float(data.volatility), correlation=float(data.correlation),
            signal_correlation=float(data.signal_correlation),
        )
        return Candles(by_symbol=gen.candles, step=to_timedelta(data.timeframe), provider="synthetic",
                       sources={s: f"synthetic(seed={seed})" for s in symbols}, oracle_up=gen.oracle_up)
    if data.provider == "files":
        by_symbol, sources, steps = {}, {}, set()
        for s in symbols:
            path = Path(str(data.path).format(symbol=s)).expanduser()
            c = files.read_candle_file(path)
            if data.get("rows"):
                c = c.iloc[-int(data.rows):].reset_index(drop=True)
            by_symbol[s], sources[s] = c, str(path)
            steps.add(to_timedelta(data.timeframe) if data.get("timeframe") else files.infer_step(c, str(path)))
        if len(steps) > 1:
            raise UserError(f"symbols have different timeframes {sorted(map(str, steps))}", "data.path")
        return Candles(by_symbol=by_symbol, step=steps.pop(), provider="files", sources=sources)
    raise UserError(f"unknown data provider {data.provider!r}; choose synthetic or files", "data.provider")
