"""Causal features from TA-Lib and vectorised pandas: the value at t uses candles <= t only.

Functions here take one symbol's candles; callers apply them per symbol so that indicators reset at
symbol boundaries.
"""
import numpy as np
import pandas as pd
import talib
from omegaconf import DictConfig


def feature_names(cfg: DictConfig) -> list[str]:
    names = [f"ret_{h}" for h in cfg.return_horizons]
    names += ["rsi", "macd_hist", "atr", "bb_position", "volume_z"]
    return names


def warmup_bars(cfg: DictConfig) -> int:
    """Candles a symbol needs before every feature is defined."""
    slow, signal = cfg.macd[1], cfg.macd[2]
    return int(max(max(cfg.return_horizons), cfg.rsi_period, slow + signal, cfg.atr_period,
                   cfg.bbands_period, cfg.volume_z_window))


def compute_features(candles: pd.DataFrame, cfg: DictConfig) -> pd.DataFrame:
    """Feature frame indexed by timestamp; warm-up rows hold NaN."""
    close = candles["close"].to_numpy(np.float64)
    high = candles["high"].to_numpy(np.float64)
    low = candles["low"].to_numpy(np.float64)
    volume = candles["volume"].to_numpy(np.float64)
    out: dict[str, np.ndarray] = {}
    log_close = np.log(close)
    for h in cfg.return_horizons:
        r = np.full_like(log_close, np.nan)
        r[h:] = log_close[h:] - log_close[:-h]
        out[f"ret_{h}"] = r
    out["rsi"] = talib.RSI(close, timeperiod=cfg.rsi_period) / 100.0 - 0.5
    atr = talib.ATR(high, low, close, timeperiod=cfg.atr_period)
    fast, slow, signal = cfg.macd
    _, _, hist = talib.MACD(close, fastperiod=fast, slowperiod=slow, signalperiod=signal)
    # Price-level free: MACD histogram in ATRs, ATR as a fraction of price.
    with np.errstate(divide="ignore", invalid="ignore"):
        out["macd_hist"] = np.where(atr > 0, hist / atr, 0.0)
        out["atr"] = atr / close
        upper, middle, lower = talib.BBANDS(close, timeperiod=cfg.bbands_period, nbdevup=2, nbdevdn=2)
        width = upper - lower
        out["bb_position"] = np.where(width > 0, (close - middle) / width, 0.0)
    out["macd_hist"][np.isnan(hist) | np.isnan(atr)] = np.nan
    out["bb_position"][np.isnan(width)] = np.nan
    log_vol = pd.Series(np.log1p(volume))
    roll = log_vol.rolling(cfg.volume_z_window, min_periods=cfg.volume_z_window)
    std = roll.std(ddof=0).to_numpy()
    z = (log_vol.to_numpy() - roll.mean().to_numpy()) / np.where(std > 0, std, 1.0)
    out["volume_z"] = z
    frame = pd.DataFrame(out, index=pd.DatetimeIndex(candles["timestamp"], name="timestamp"))
    return frame[feature_names(cfg)]
