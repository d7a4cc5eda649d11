"""Hand-written causal market features: trading sessions, spread and cost estimates, volatility regime,
fuzzy memberships.

Every function takes one symbol's data in time order and the value at t uses inputs at indices <= t only;
warm-up values are NaN. Callers apply them per symbol so that nothing carries across symbol boundaries.
"""

import numpy as np
import pandas as pd

# Trading sessions as half-open UTC hour ranges [open, close). Fixed UTC hours: daylight-saving shifts of
# London and New York (one hour) are ignored so that a flag never depends on a calendar table.
SESSION_HOURS_UTC: dict[str, tuple[float, float]] = {
    "tokyo": (0.0, 9.0),
    "london": (7.0, 16.0),
    "new_york": (13.0, 22.0),
}

# Fuzzy sets: 3 points = triangular (a, b, c), 4 points = trapezoid (a, b, c, d); a == b or c == d is a
# shoulder, an infinite shoulder stays 1 out to that side.
# `rsi` is on TA-Lib's 0-100 scale (features.py's `rsi` column is RSI/100 - 0.5: pass (rsi + 0.5) * 100).
# `bb_position` is features.py's (close - middle) / (upper - lower): the 2-sigma bands sit at -0.5 and +0.5,
# values reach about +-1 in a 20-bar window, so the outer sets are open-ended.
DEFAULT_FUZZY_SETS: dict[str, dict[str, list[float]]] = {
    "rsi": {
        "low": [0.0, 0.0, 30.0, 45.0],
        "mid": [35.0, 50.0, 65.0],
        "high": [55.0, 70.0, 100.0, 100.0],
    },
    "bb_position": {
        "low": [-np.inf, -np.inf, -0.5, -0.2],
        "mid": [-0.35, 0.0, 0.35],
        "high": [0.2, 0.5, np.inf, np.inf],
    },
}

_CS_K = 3.0 - 2.0 * np.sqrt(2.0)  # Corwin & Schultz (2012), eq. 18 denominator
_ROLL_COV_FLOOR = 1e-10  # relative to mean(dp^2): a constant-change series's cov rounds to -1e-29, not 0


def session_features(timestamps: pd.DatetimeIndex) -> pd.DataFrame:
    """Session flags, overlap, cyclic hour and weekday, weekend flag, indexed by the (UTC) timestamps.

    Flags use the hour of day including minutes and seconds, against SESSION_HOURS_UTC; `overlap` is 1 when
    at least two sessions are open. Session flags do not look at the weekday: `weekend` carries that.
    """
    index = pd.DatetimeIndex(timestamps)
    if index.tz is None:
        raise ValueError("session_features needs tz-aware timestamps (candle timestamps are UTC)")
    utc = index.tz_convert("UTC")
    hour = (utc.hour + utc.minute / 60.0 + utc.second / 3600.0).to_numpy(np.float64)
    dow = utc.dayofweek.to_numpy()  # Monday = 0
    out: dict[str, np.ndarray] = {}
    for session, (start, end) in SESSION_HOURS_UTC.items():
        out[session] = ((hour >= start) & (hour < end)).astype(np.int8)
    open_count = sum(out[s].astype(np.int16) for s in SESSION_HOURS_UTC)
    out["overlap"] = (open_count >= 2).astype(np.int8)
    out["hour_sin"] = np.sin(2.0 * np.pi * hour / 24.0)
    out["hour_cos"] = np.cos(2.0 * np.pi * hour / 24.0)
    out["dow_sin"] = np.sin(2.0 * np.pi * dow / 7.0)
    out["dow_cos"] = np.cos(2.0 * np.pi * dow / 7.0)
    out["weekend"] = (dow >= 5).astype(np.int8)
    return pd.DataFrame(out, index=index, copy=False)  # one array per column, nothing stacked


def corwin_schultz_spread(high: np.ndarray, low: np.ndarray) -> np.ndarray:
    """Corwin & Schultz (2012) two-bar high-low spread, as a fraction of price; NaN at index 0.

    beta = ln(H_t/L_t)^2 + ln(H_{t-1}/L_{t-1})^2,  gamma = ln(max(H_t, H_{t-1}) / min(L_t, L_{t-1}))^2,
    alpha = (sqrt(2 beta) - sqrt(beta)) / (3 - 2 sqrt 2) - sqrt(gamma / (3 - 2 sqrt 2)),
    S = 2 (e^alpha - 1) / (1 + e^alpha), negative S set to 0.
    No overnight-gap adjustment: candles here are contiguous (24/7 markets), and only H and L are given.
    """
    high = np.asarray(high, dtype=np.float64)
    low = np.asarray(low, dtype=np.float64)
    spread = np.full(high.shape, np.nan)
    if high.size < 2:
        return spread
    hl = np.log(high / low) ** 2
    beta = hl[1:] + hl[:-1]
    gamma = np.log(np.maximum(high[1:], high[:-1]) / np.minimum(low[1:], low[:-1])) ** 2
    alpha = (np.sqrt(2.0 * beta) - np.sqrt(beta)) / _CS_K - np.sqrt(gamma / _CS_K)
    ea = np.exp(alpha)
    spread[1:] = np.maximum(2.0 * (ea - 1.0) / (1.0 + ea), 0.0)
    return spread


def roll_spread(close: np.ndarray, window: int) -> np.ndarray:
    """Roll (1984) spread in price units: 2 sqrt(-cov(dp_t, dp_{t-1})) over the last `window` pairs.

    dp_t = close_t - close_{t-1}; cov is the sample covariance (ddof=1); 0 where the covariance is >= 0
    (or negative only by rounding). Divide by close for a fraction of price. NaN for t <= window.
    Under Roll's model (mid random walk, trade at mid +- s/2 with iid side) the estimate tends to s.
    """
    if window < 2:
        raise ValueError(f"roll_spread window must be >= 2, got {window}")
    close = np.asarray(close, dtype=np.float64)
    dp = pd.Series(np.diff(close, prepend=np.nan))
    lagged = dp.shift(1)
    cov = dp.rolling(window, min_periods=window).cov(lagged).to_numpy()
    mean_square = (dp * dp).rolling(window, min_periods=window).mean().to_numpy()
    with np.errstate(invalid="ignore"):
        negative = cov < -_ROLL_COV_FLOOR * mean_square
        spread = np.where(negative, 2.0 * np.sqrt(np.where(negative, -cov, 0.0)), 0.0)
    spread[np.isnan(cov)] = np.nan
    return spread


def slippage_estimate(
    high: np.ndarray,
    low: np.ndarray,
    close: np.ndarray,
    volume: np.ndarray,
    window: int,
    *,
    participation: float = 0.1,
    order_value: float | None = None,
    cs_spread: np.ndarray | None = None,
) -> np.ndarray:
    """Expected one-way execution cost as a fraction of price; NaN for t < window.

    cost_t = 0.5 * mean_w(CS_spread) + mean_w(|r| / DV) * Q_t,  Q_t = participation * mean_w(DV)
    where mean_w is the mean over the last `window` bars, r_t = ln(C_t / C_{t-1}), DV_t = C_t * V_t (traded
    value in quote currency). The first term is half the Corwin-Schultz spread; the second is Amihud's
    illiquidity (return per unit of traded value) times an order of Q_t: by default `participation` of an
    average bar's traded value (scale-free across symbols), or a fixed `order_value` in quote currency when
    given (then thinner volume means more impact). Zero-volume bars are left out of the Amihud mean (NaN if
    the whole window is).
    """
    if window < 1:
        raise ValueError(f"slippage_estimate window must be >= 1, got {window}")
    close = np.asarray(close, dtype=np.float64)
    volume = np.asarray(volume, dtype=np.float64)
    if cs_spread is None:  # callers that already hold corwin_schultz_spread(high, low) pass it
        cs_spread = corwin_schultz_spread(high, low)
    half_spread = 0.5 * pd.Series(cs_spread).rolling(window, min_periods=window).mean()
    abs_ret = np.abs(np.diff(np.log(close), prepend=np.nan))
    traded = close * volume
    with np.errstate(divide="ignore", invalid="ignore"):
        amihud = np.where(traded > 0, abs_ret / traded, np.nan)
    illiquidity = pd.Series(amihud).rolling(window, min_periods=1).mean().to_numpy()
    if order_value is None:
        order = participation * pd.Series(traded).rolling(window, min_periods=window).mean().to_numpy()
    else:
        order = float(order_value)
    cost = half_spread.to_numpy() + illiquidity * order
    cost[:window] = np.nan
    return cost


def volatility_regime(
    close: np.ndarray, window: int, lookback: int, thresholds: tuple[float, float] = (0.33, 0.67)
) -> np.ndarray:
    """Volatility regime 0 (low), 1 (mid), 2 (high) as floats; NaN in warm-up (t < window + lookback - 1).

    vol_t = sample std of the last `window` log returns; p_t = rank of vol_t among vol_{t-lookback+1..t}
    (itself included, ties averaged) / lookback, in (0, 1]; regime = [p_t > lo] + [p_t > hi].
    """
    lo, hi = thresholds
    if not 0.0 <= lo <= hi <= 1.0:
        raise ValueError(f"volatility_regime thresholds must satisfy 0 <= lo <= hi <= 1, got {thresholds}")
    if window < 2 or lookback < 1:
        raise ValueError(f"volatility_regime needs window >= 2 and lookback >= 1, got {window}, {lookback}")
    close = np.asarray(close, dtype=np.float64)
    returns = pd.Series(np.diff(np.log(close), prepend=np.nan))
    vol = returns.rolling(window, min_periods=window).std()
    pct = vol.rolling(lookback, min_periods=lookback).rank(method="average", pct=True).to_numpy()
    regime = (pct > lo).astype(np.float64) + (pct > hi).astype(np.float64)
    regime[np.isnan(pct)] = np.nan
    return regime


def trapezoid(x: np.ndarray, a: float, b: float, c: float, d: float) -> np.ndarray:
    """Membership 0 outside [a, d], 1 on [b, c], linear ramps between; a == b or c == d is a shoulder.

    An infinite end must be a shoulder (a == b == -inf, c == d == inf). NaN in, NaN out.
    """
    if not a <= b <= c <= d:
        raise ValueError(f"fuzzy set points must be ordered a <= b <= c <= d, got {[a, b, c, d]}")
    for lo_edge, hi_edge in ((a, b), (c, d)):
        if hi_edge > lo_edge and not np.isfinite(hi_edge - lo_edge):
            raise ValueError(f"fuzzy set ramp must be finite, got {[a, b, c, d]}")
    x = np.asarray(x, dtype=np.float64)
    mu = np.zeros(x.shape)
    with np.errstate(invalid="ignore"):
        if b > a:
            rising = (x > a) & (x < b)
            mu[rising] = (x[rising] - a) / (b - a)
        if d > c:
            falling = (x > c) & (x < d)
            mu[falling] = (d - x[falling]) / (d - c)
        mu[(x >= b) & (x <= c)] = 1.0
    mu[np.isnan(x)] = np.nan
    return mu


def triangular(x: np.ndarray, a: float, b: float, c: float) -> np.ndarray:
    """Membership 0 outside [a, c], 1 at b, linear between; a == b or b == c is a shoulder."""
    return trapezoid(x, a, b, b, c)


def fuzzy_memberships(x: np.ndarray, name: str, sets: dict[str, list[float]]) -> pd.DataFrame:
    """One column f"{name}_{set}" per set (3 points triangular, 4 points trapezoid); keeps a Series' index."""
    index = x.index if isinstance(x, pd.Series) else None
    values = np.asarray(x, dtype=np.float64)
    out: dict[str, np.ndarray] = {}
    for set_name, points in sets.items():
        if len(points) == 3:
            out[f"{name}_{set_name}"] = triangular(values, *points)
        elif len(points) == 4:
            out[f"{name}_{set_name}"] = trapezoid(values, *points)
        else:
            raise ValueError(f"fuzzy set {name}_{set_name} needs 3 or 4 points, got {list(points)}")
    return pd.DataFrame(out, index=index, copy=False)
