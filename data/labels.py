"""The label library. Every label carries its end time ``t1`` (the last candle it looks at) and is
aligned by timestamp: a future candle missing from the data (a gap) leaves the label undefined (NaN).

Tasks: ``binary`` (direction), ``multiclass`` (3-class direction, quantile bins, triple barrier: classes
0..k-1), ``regression`` (forward log return).
"""

import numpy as np
import pandas as pd
from numpy.lib.stride_tricks import sliding_window_view
from omegaconf import DictConfig

from core.errors import UserError

TASKS = {
    "direction": "binary",
    "direction3": "multiclass",
    "forward_return": "regression",
    "quantile": "multiclass",
    "triple_barrier": "multiclass",
}


_UNITS = ["s", "ms", "us", "ns"]


def positions_at(index: pd.DatetimeIndex, times: pd.DatetimeIndex) -> np.ndarray:
    """Row of ``index`` holding each of ``times`` (-1 where absent), by binary search over int64 ticks; a hash
    lookup of tz-aware timestamps costs several times more. ``index`` must be sorted and unique (candles are)."""
    index, times = pd.DatetimeIndex(index), pd.DatetimeIndex(times)
    unit = max((index.unit, times.unit), key=_UNITS.index)
    have, want = index.as_unit(unit).asi8, times.as_unit(unit).asi8
    if len(have) > 1 and not np.all(have[1:] > have[:-1]):  # not sorted and unique: pandas' general lookup
        return index.get_indexer(times)
    if len(have) == 0:
        return np.full(len(want), -1, dtype=np.intp)
    if np.array_equal(have, want):  # the usual case: both on the same candles
        return np.arange(len(have))
    pos = np.minimum(np.searchsorted(have, want), len(have) - 1)
    return np.where((have[pos] == want) & ~times.isna(), pos, -1)


def values_at(values: np.ndarray, index: pd.DatetimeIndex, times: pd.DatetimeIndex) -> np.ndarray:
    """``values`` (float, one per ``index`` timestamp) looked up at ``times``: NaN where a time is absent."""
    pos = positions_at(index, times)
    out = np.full(len(pos), np.nan)
    hit = pos >= 0
    out[hit] = np.asarray(values, dtype=np.float64)[pos[hit]]
    return out


def _close(candles: pd.DataFrame) -> pd.Series:
    return pd.Series(candles["close"].to_numpy(np.float64), index=pd.DatetimeIndex(candles["timestamp"]))


def forward_log_return(candles: pd.DataFrame, horizon: int, step: pd.Timedelta) -> pd.DataFrame:
    """log(close[t + horizon*step] / close[t]) looked up by timestamp, with t1 = t + horizon*step."""
    close = _close(candles)
    t1 = close.index + horizon * step
    future = values_at(close.to_numpy(), close.index, t1)
    return pd.DataFrame({"ret": np.log(future / close.to_numpy()), "t1": t1}, index=close.index.rename("timestamp"))


def trailing_volatility(candles: pd.DataFrame, window: int) -> np.ndarray:
    """Std of 1-candle log returns over the last ``window`` candles (causal; NaN in warm-up)."""
    r = np.log(candles["close"]).diff()
    return r.rolling(window, min_periods=window).std(ddof=0).to_numpy()


def direction_label(candles: pd.DataFrame, horizon: int, step: pd.Timedelta) -> pd.DataFrame:
    """1 if close[t + horizon*step] > close[t] else 0 (NaN where that candle is missing)."""
    fwd = forward_log_return(candles, horizon, step)
    label = np.where(np.isnan(fwd["ret"]), np.nan, (fwd["ret"] > 0).astype(np.float64))
    return pd.DataFrame({"label": label, "t1": fwd["t1"]}, index=fwd.index)


def direction3_label(
    candles: pd.DataFrame, horizon: int, step: pd.Timedelta, dead_zone: float, vol_window: int | None = None
) -> pd.DataFrame:
    """0 down / 1 flat / 2 up: |return| <= dead_zone is flat. With ``vol_window`` the dead zone is in units
    of trailing volatility scaled to the horizon (dead_zone * vol * sqrt(horizon)), known at t."""
    fwd = forward_log_return(candles, horizon, step)
    ret = fwd["ret"].to_numpy()
    width = np.full(len(ret), float(dead_zone))
    if vol_window:
        width = dead_zone * trailing_volatility(candles, vol_window) * np.sqrt(horizon)
    label = np.where(ret > width, 2.0, np.where(ret < -width, 0.0, 1.0))
    label[np.isnan(ret) | np.isnan(width)] = np.nan
    return pd.DataFrame({"label": label, "t1": fwd["t1"]}, index=fwd.index)


def forward_return_label(candles: pd.DataFrame, horizon: int, step: pd.Timedelta) -> pd.DataFrame:
    fwd = forward_log_return(candles, horizon, step)
    return pd.DataFrame({"label": fwd["ret"].to_numpy(), "t1": fwd["t1"]}, index=fwd.index)


def quantile_edges(fwd: pd.DataFrame, horizon: int, step: pd.Timedelta, bins: int, lookback: int) -> np.ndarray:
    """(n, bins-1) bucket edges at each t: quantiles of the ``lookback`` most recent forward returns that
    had *ended* by t. A return that starts at t-horizon ends at t, so the series is shifted by the horizon
    (by timestamp, so a gap cannot smuggle a future return in)."""
    known = fwd["ret"].copy()
    known.index = known.index + horizon * step
    known = pd.Series(values_at(known.to_numpy(), known.index, fwd.index), index=fwd.index)
    # min_periods below lookback: a gap (NaN known returns) must not blank the next `lookback` labels
    roll = known.rolling(lookback, min_periods=max(20, lookback // 4))
    return np.column_stack([roll.quantile(q).to_numpy() for q in np.linspace(0, 1, bins + 1)[1:-1]])


def quantile_label(candles: pd.DataFrame, horizon: int, step: pd.Timedelta, bins: int, lookback: int) -> pd.DataFrame:
    """Which of ``bins`` quantile buckets the forward return falls in, with bucket edges taken from the
    forward returns that had already *ended* by t (the ``lookback`` most recent ones): causal edges, so
    no statistic of the future (or of the test segment) shapes the label."""
    fwd = forward_log_return(candles, horizon, step)
    edges = quantile_edges(fwd, horizon, step, bins, lookback)
    r = fwd["ret"].to_numpy()
    label = (r[:, None] > edges).sum(axis=1).astype(np.float64)
    label[np.isnan(r) | np.isnan(edges).any(axis=1)] = np.nan
    return pd.DataFrame({"label": label, "t1": fwd["t1"]}, index=fwd.index)


def triple_barrier_label(
    candles: pd.DataFrame, max_hold: int, step: pd.Timedelta, take_profit: float, stop_loss: float, vol_window: int
) -> pd.DataFrame:
    """Barriers at close[t] * exp(+take_profit * vol * sqrt(max_hold)) and exp(-stop_loss * ...), vol the
    trailing volatility known at t; the vertical barrier is max_hold candles ahead. Classes: 0 = stop hit
    first, 1 = neither by the vertical barrier, 2 = take-profit hit first (a candle touching both counts as
    stop: the conservative call). t1 = the candle where the label was decided."""
    close = candles["close"].to_numpy(np.float64)
    high = candles["high"].to_numpy(np.float64)
    low = candles["low"].to_numpy(np.float64)
    ts = pd.DatetimeIndex(candles["timestamp"])
    n = len(close)
    label = np.full(n, np.nan)
    t1 = pd.DatetimeIndex(ts + max_hold * step)
    if n <= max_hold:
        return pd.DataFrame({"label": label, "t1": t1}, index=ts.rename("timestamp"))
    width = trailing_volatility(candles, vol_window) * np.sqrt(max_hold)
    # Only rows whose next max_hold candles are contiguous (no gap) get a label.
    contiguous = np.zeros(n, dtype=bool)
    ok = (ts[max_hold:] - ts[:-max_hold]) == max_hold * step
    contiguous[: n - max_hold] = ok
    upper = close * np.exp(take_profit * width)
    lower = close * np.exp(-stop_loss * width)
    hi_path = sliding_window_view(high[1:], max_hold)  # row t: candles t+1 .. t+max_hold
    lo_path = sliding_window_view(low[1:], max_hold)
    m = len(hi_path)
    hit_up = hi_path >= upper[:m, None]
    hit_dn = lo_path <= lower[:m, None]
    first_up = np.where(hit_up.any(1), hit_up.argmax(1), max_hold)
    first_dn = np.where(hit_dn.any(1), hit_dn.argmax(1), max_hold)
    cls = np.where(first_dn <= first_up, np.where(first_dn < max_hold, 0.0, 1.0), 2.0)
    decided = np.minimum(first_up, first_dn)  # 0-based offset of the deciding candle
    valid = contiguous[:m] & ~np.isnan(width[:m])
    label[:m] = np.where(valid, cls, np.nan)
    offsets = np.where(decided < max_hold, decided + 1, max_hold)
    # integer nanoseconds: a DatetimeIndex built from int64 arithmetic, not object Timestamps
    t1_ns = t1.as_unit("ns").asi8.copy()
    t1_ns[:m] = ts[:m].as_unit("ns").asi8 + offsets * step.value
    return pd.DataFrame({"label": label, "t1": pd.to_datetime(t1_ns, utc=True)}, index=ts.rename("timestamp"))


def forward_volatility(candles: pd.DataFrame, horizon: int, step: pd.Timedelta) -> np.ndarray:
    """Realised volatility over the next ``horizon`` candles: sqrt(sum of squared 1-candle log returns
    t+1..t+horizon); NaN unless those candles are all present (no gap)."""
    ts = pd.DatetimeIndex(candles["timestamp"])
    r2 = np.diff(np.log(candles["close"].to_numpy(np.float64)), prepend=np.nan) ** 2
    n = len(r2)
    csum = np.concatenate([[0.0], np.nancumsum(r2)])
    out = np.full(n, np.nan)
    if n > horizon:
        idx = np.arange(n - horizon)
        out[idx] = np.sqrt(csum[idx + horizon + 1] - csum[idx + 1])
        contiguous = (ts[horizon:] - ts[:-horizon]) == horizon * step
        out[: n - horizon][~np.asarray(contiguous)] = np.nan
    return out


def past_direction(candles: pd.DataFrame, horizon: int, step: pd.Timedelta) -> pd.Series:
    """The direction of the move that ended at t (close[t] > close[t - horizon*step]): the persistence call."""
    close = _close(candles)
    past = values_at(close.to_numpy(), close.index, close.index - horizon * step)
    now = close.to_numpy()
    return pd.Series(
        np.where(np.isnan(past), np.nan, (now > past).astype(np.float64)),
        index=close.index.rename("timestamp"),
        name="persistence",
    )


def make_label(candles: pd.DataFrame, target: DictConfig, step: pd.Timedelta) -> pd.DataFrame:
    """Dispatch on ``target.type``; returns label and t1 indexed by timestamp."""
    kind = target.type
    h = int(target.horizon)
    if kind == "direction":
        return direction_label(candles, h, step)
    if kind == "direction3":
        return direction3_label(candles, h, step, float(target.dead_zone), target.get("vol_window"))
    if kind == "forward_return":
        return forward_return_label(candles, h, step)
    if kind == "quantile":
        return quantile_label(candles, h, step, int(target.bins), int(target.lookback))
    if kind == "triple_barrier":
        return triple_barrier_label(
            candles, h, step, float(target.take_profit), float(target.stop_loss), int(target.vol_window)
        )
    raise UserError(f"unknown target type {kind!r}; available: {', '.join(TASKS)}", "target.type")


def n_classes(target: DictConfig) -> int | None:
    task = TASKS[target.type]
    if task == "binary":
        return 2
    if task == "regression":
        return None
    return int(target.bins) if target.type == "quantile" else 3


def output_columns(target: DictConfig) -> list[str]:
    """Column names of a model's outputs for this target (probabilities per class, or the prediction)."""
    kind = target.type
    if kind == "direction":
        return ["p_down", "p_up"]
    if kind == "direction3":
        return ["p_down", "p_flat", "p_up"]
    if kind == "triple_barrier":
        return ["p_stop", "p_hold", "p_take"]
    if kind == "quantile":
        return [f"p_q{i}" for i in range(int(target.bins))]
    return ["prediction"]
