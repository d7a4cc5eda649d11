"""Causal features, composable by set: the value at t uses candles <= t only.

Sets (``features.sets``): returns, ta (TA-Lib RSI, MACD, ATR, Bollinger), volume, session, spread
(Corwin-Schultz, Roll, slippage), regime (volatility regime), fuzzy (memberships over RSI and Bollinger
position). Functions here take one symbol's candles; callers apply them per symbol, so indicators reset
at symbol boundaries.

``features.select`` narrows the feature list models see (``feature_names``) to the named features, in the
order the sets give them; null = every feature of the chosen sets. ``compute_features`` still computes
every feature of the chosen sets, so a selection changes what a model is fed, never how a value is computed
(nor what else reads the frame, e.g. the evaluation's spread estimate).
"""

import numpy as np
import pandas as pd
import talib
from omegaconf import DictConfig, ListConfig, OmegaConf

from core.errors import UserError
from data import indicators

SETS = ("returns", "ta", "volume", "session", "spread", "regime", "fuzzy")
_SESSION = ["tokyo", "london", "new_york", "overlap", "hour_sin", "hour_cos", "dow_sin", "dow_cos", "weekend"]


def _fuzzy_sets(cfg: DictConfig) -> dict:
    spec = cfg.get("fuzzy_sets")
    return OmegaConf.to_container(spec, resolve=True) if spec else indicators.DEFAULT_FUZZY_SETS


def _sets(cfg: DictConfig) -> list[str]:
    chosen = list(cfg.get("sets") or ["returns", "ta", "volume"])
    unknown = [s for s in chosen if s not in SETS]
    if unknown:
        raise UserError(f"unknown feature set(s) {unknown}; available: {', '.join(SETS)}", "features.sets")
    return chosen


def feature_names(cfg: DictConfig) -> list[str]:
    """The features a model is fed: those of ``features.sets``, narrowed to ``features.select`` if set."""
    return _select(all_feature_names(cfg), cfg.get("select"))


def _select(names: list[str], select) -> list[str]:
    if select is None:
        return names
    if not isinstance(select, (ListConfig, list, tuple)):
        raise UserError(f"features.select must be a list of feature names or null, got {select!r}", "features.select")
    chosen = [str(s) for s in select]
    unknown = [s for s in chosen if s not in names]
    if unknown:
        raise UserError(f"unknown feature(s) {unknown}; available: {', '.join(names)}", "features.select")
    if not chosen:
        raise UserError("features.select names no feature (null = every feature of the sets)", "features.select")
    return [n for n in names if n in set(chosen)]


def all_feature_names(cfg: DictConfig) -> list[str]:
    """Every feature of the chosen sets, in set order (what ``compute_features`` returns)."""
    names: list[str] = []
    for s in _sets(cfg):
        if s == "returns":
            names += [f"ret_{h}" for h in cfg.return_horizons]
        elif s == "ta":
            names += ["rsi", "macd_hist", "atr", "bb_position"]
        elif s == "volume":
            names += ["volume_z", "volume_trend"]
        elif s == "session":
            names += _SESSION
        elif s == "spread":
            names += ["cs_spread", "roll_spread", "slippage"]
        elif s == "regime":
            names += ["vol_regime"]
        elif s == "fuzzy":
            names += [f"{src}_{name}" for src, sets in _fuzzy_sets(cfg).items() for name in sets]
    return names


def _ta(close, high, low, cfg) -> dict[str, np.ndarray]:
    out = {}
    rsi = talib.RSI(close, timeperiod=cfg.rsi_period)
    atr = talib.ATR(high, low, close, timeperiod=cfg.atr_period)
    fast, slow, signal = cfg.macd
    _, _, hist = talib.MACD(close, fastperiod=fast, slowperiod=slow, signalperiod=signal)
    upper, middle, lower = talib.BBANDS(close, timeperiod=cfg.bbands_period, nbdevup=2, nbdevdn=2)
    width = upper - lower
    with np.errstate(divide="ignore", invalid="ignore"):
        # Price-level free: RSI centred, MACD histogram in ATRs, ATR as a fraction of price.
        out["rsi"] = rsi / 100.0 - 0.5
        out["macd_hist"] = np.where(np.isnan(hist) | np.isnan(atr), np.nan, np.where(atr > 0, hist / atr, 0.0))
        out["atr"] = atr / close
        out["bb_position"] = np.where(np.isnan(width), np.nan, np.where(width > 0, (close - middle) / width, 0.0))
    return out


def _volume(volume: np.ndarray, cfg) -> dict[str, np.ndarray]:
    log_vol = pd.Series(np.log1p(volume))
    w = cfg.volume_z_window
    roll = log_vol.rolling(w, min_periods=w)
    std = roll.std(ddof=0).to_numpy()
    z = (log_vol.to_numpy() - roll.mean().to_numpy()) / np.where(std > 0, std, 1.0)
    short = log_vol.rolling(5, min_periods=5).mean()
    return {"volume_z": z, "volume_trend": (short - roll.mean()).to_numpy()}


def compute_features(candles: pd.DataFrame, cfg: DictConfig) -> pd.DataFrame:
    """Feature frame indexed by timestamp, one column per feature of the chosen sets (a superset of
    ``feature_names``, which applies ``features.select``); warm-up rows hold NaN."""
    close = candles["close"].to_numpy(np.float64)
    high = candles["high"].to_numpy(np.float64)
    low = candles["low"].to_numpy(np.float64)
    volume = candles["volume"].to_numpy(np.float64)
    index = pd.DatetimeIndex(candles["timestamp"], name="timestamp")
    out: dict[str, np.ndarray] = {}
    chosen = _sets(cfg)
    feature_names(cfg)  # an unknown selected name is refused before any work
    if "returns" in chosen:
        log_close = np.log(close)
        for h in cfg.return_horizons:
            r = np.full_like(log_close, np.nan)
            r[h:] = log_close[h:] - log_close[:-h]
            out[f"ret_{h}"] = r
    if "ta" in chosen or "fuzzy" in chosen:
        ta = _ta(close, high, low, cfg)
        if "ta" in chosen:
            out.update(ta)
    if "volume" in chosen:
        out.update(_volume(volume, cfg))
    if "session" in chosen:
        session = indicators.session_features(index)
        out.update({k: session[k].to_numpy(np.float64) for k in _SESSION})
    if "spread" in chosen:
        out["cs_spread"] = indicators.corwin_schultz_spread(high, low)
        out["roll_spread"] = indicators.roll_spread(close, int(cfg.spread_window)) / close
        out["slippage"] = indicators.slippage_estimate(
            high, low, close, volume, int(cfg.slippage_window), cs_spread=out["cs_spread"]
        )
    if "regime" in chosen:
        out["vol_regime"] = indicators.volatility_regime(close, int(cfg.regime_window), int(cfg.regime_lookback))
    if "fuzzy" in chosen:
        sources = {"rsi": (ta["rsi"] + 0.5) * 100.0, "bb_position": ta["bb_position"]}
        for src, sets in _fuzzy_sets(cfg).items():
            if src not in sources:
                raise UserError(
                    f"fuzzy sets over {src!r}: only rsi and bb_position are available", "features.fuzzy_sets"
                )
            memberships = indicators.fuzzy_memberships(sources[src], src, sets)
            out.update({k: memberships[k].to_numpy(np.float64) for k in memberships.columns})
    # one array per column, not copied into a 2-D block: fresh memory is what a copy costs most here
    columns = {name: np.asarray(out[name], dtype=np.float64) for name in all_feature_names(cfg)}
    return pd.DataFrame(columns, index=index, copy=False)
