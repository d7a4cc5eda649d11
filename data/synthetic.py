"""Synthetic 1m-style candles with a planted, known predictable component.

Every symbol's log return is ``r[t+1] = drift[t] + sigma[t+1] * eps[t+1]`` where
- ``sigma`` = base volatility x intraday session seasonality (Tokyo/London/New York) x a slow
  stochastic-volatility factor (volatility clustering);
- ``eps`` is Gaussian noise correlated across symbols (coins move together);
- ``drift`` is a persistent AR(1) process (half-life ``signal_half_life`` candles), shared in part
  across symbols, scaled by ``signal_strength`` (0 = pure random walk).

Because the generator knows ``drift``, it knows the Bayes-optimal direction forecast for any horizon:
the noise is symmetric and every future drift has the sign of today's (AR coefficient > 0), so
``P(close[t+h] > close[t] | state) > 1/2`` exactly when ``drift[t] > 0``. That forecast, scored on the
model's own test rows, is ``oracle_accuracy``: no honest model can beat it (beyond sampling noise).
"""

import zlib
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.signal import lfilter

from core.errors import UserError
from data.timeframes import to_timedelta

# Rough price levels so the synthetic coins look like their namesakes.
_START_PRICE = {"BTC": 30_000.0, "ETH": 2_000.0, "SOL": 100.0, "BNB": 300.0}
# Drift std per unit of signal_strength, in units of the base per-candle volatility.
_DRIFT_SCALE = 0.12


@dataclass
class SyntheticCandles:
    candles: dict[str, pd.DataFrame]  # symbol -> canonical candles
    oracle_up: dict[str, pd.Series]  # symbol -> Bayes-optimal "close rises" call, by timestamp


def _ar1(shocks: np.ndarray, phi: float) -> np.ndarray:
    """Stationary AR(1) with unit variance driven by standard-normal ``shocks`` (along axis 0)."""
    scaled = shocks * np.sqrt(1.0 - phi * phi)
    scaled[0] = shocks[0]  # start in the stationary distribution
    return lfilter([1.0], [1.0, -phi], scaled, axis=0)


def _session_seasonality(hours: np.ndarray) -> np.ndarray:
    """Volatility multiplier by UTC hour: bumps at the Tokyo, London and New York opens."""

    def bump(centre, width, height):
        d = np.minimum(np.abs(hours - centre), 24 - np.abs(hours - centre))
        return height * np.exp(-0.5 * (d / width) ** 2)

    s = 0.6 + bump(1.0, 2.0, 0.3) + bump(8.0, 1.5, 0.6) + bump(14.5, 1.5, 0.9)
    return s / s.mean()


def _symbol_stream(seed: int, symbol: str) -> np.random.Generator:
    """A random stream of one symbol's own: its path never depends on which other symbols were asked for."""
    return np.random.default_rng([seed, zlib.crc32(symbol.encode())])


def _factor_normals(common: np.ndarray, own: np.random.Generator, rho: float) -> np.ndarray:
    """Standard normals sharing ``rho`` of their variance with the market-wide ``common`` series."""
    return np.sqrt(rho) * common + np.sqrt(1.0 - rho) * own.standard_normal(len(common))


def generate(
    symbols: list[str],
    rows: int,
    timeframe: str = "1m",
    start: str = "2021-01-01",
    seed: int = 0,
    signal_strength: float = 1.0,
    signal_half_life: float = 240.0,
    volatility: float = 0.0008,
    vol_of_vol: float = 0.35,
    vol_half_life: float = 720.0,
    correlation: float = 0.7,
    signal_correlation: float = 0.5,
    regime_switch: float = 0.0,
    gap_rate: float = 0.0,
) -> SyntheticCandles:
    if rows < 2:
        raise UserError(f"synthetic data needs at least 2 rows per symbol, got {rows}", "data.rows")
    if signal_strength < 0:
        raise UserError(f"signal_strength must be >= 0, got {signal_strength}", "data.signal_strength")
    if not 0 <= correlation < 1 or not 0 <= signal_correlation <= 1:
        raise UserError("correlations must lie in [0, 1)", "data.correlation")
    step = to_timedelta(timeframe)
    timestamps = pd.date_range(pd.Timestamp(start, tz="UTC"), periods=rows, freq=step)
    hours = (timestamps.hour + timestamps.minute / 60.0).to_numpy()
    season = _session_seasonality(hours)
    # Market-wide factors on their own stream; each symbol adds its own part from its own stream.
    market_rng = np.random.default_rng([seed, 0])
    market = market_rng.standard_normal((3, rows))
    # Volatility regimes: a market-wide calm/turbulent Markov switch (probability regime_switch per candle).
    turbulent = np.cumsum(market_rng.random(rows) < regime_switch) % 2 == 1
    season = season * np.where(turbulent, 1.6, 0.7) / (1.6 * turbulent.mean() + 0.7 * (1 - turbulent.mean()))
    phi_vol, phi_drift = 0.5 ** (1.0 / vol_half_life), 0.5 ** (1.0 / signal_half_life)

    candles, oracle = {}, {}
    for symbol in symbols:
        rng = _symbol_stream(seed, symbol)
        log_vol = vol_of_vol * _ar1(_factor_normals(market[0], rng, 0.6), phi_vol)
        sigma = volatility * season * np.exp(log_vol - 0.5 * vol_of_vol**2)
        eps = _factor_normals(market[1], rng, correlation)
        drift_state = _ar1(_factor_normals(market[2], rng, signal_correlation), phi_drift)
        drift = signal_strength * _DRIFT_SCALE * volatility * drift_state
        # r[t] moves close[t-1] -> close[t]; it carries drift[t-1] (known at t-1) plus fresh noise.
        returns = sigma * eps
        returns[1:] += drift[:-1]
        returns[0] = 0.0
        p0 = _START_PRICE.get(symbol, 10.0 + (zlib.crc32(symbol.encode()) % 900))
        close = p0 * np.exp(np.cumsum(returns))
        open_ = np.r_[p0, close[:-1]]
        wick = np.abs(rng.standard_normal((2, rows)))
        high = np.maximum(open_, close) * np.exp(0.5 * sigma * wick[0])
        low = np.minimum(open_, close) * np.exp(-0.5 * sigma * wick[1])
        volume = 50.0 * season * np.exp(0.4 * rng.standard_normal(rows) + 0.3 * np.abs(eps))
        frame = pd.DataFrame(
            {"timestamp": timestamps, "open": open_, "high": high, "low": low, "close": close, "volume": volume}
        )
        if gap_rate > 0:  # occasional outages: runs of 1-30 missing candles, as published feeds have
            starts = np.flatnonzero(rng.random(rows) < gap_rate)
            lengths = rng.integers(1, 31, len(starts))
            missing = np.zeros(rows, dtype=bool)
            for s, n in zip(starts, lengths):  # one slice per gap (a handful), not per candle
                missing[s : s + n] = True
            missing[0] = False
            frame = frame[~missing].reset_index(drop=True)
        candles[symbol] = frame
        oracle[symbol] = pd.Series(drift >= 0, index=timestamps, name="oracle_up")
    return SyntheticCandles(candles=candles, oracle_up=oracle)
