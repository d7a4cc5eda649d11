"""Per-symbol features and labels joined by timestamp into one multi-symbol table."""

from dataclasses import dataclass

import numpy as np
import pandas as pd
from omegaconf import DictConfig

from data.features import compute_features, feature_names
from data.labels import forward_log_return, forward_volatility, make_label, positions_at, values_at


@dataclass
class FeatureTable:
    frame: pd.DataFrame  # symbol, timestamp, features..., label, t1, persistence, aux_*, purge_end;
    # sorted by (symbol, timestamp). aux_forward_return / aux_forward_volatility: auxiliary targets over the
    # same horizon for families that need them; purge_end = the later of t1 and t + horizon (what the split purges on)
    # persistence: the label of the move that ended at t (known at t), the naive "same again" call
    feature_names: list[str]
    step: pd.Timedelta

    def matrix(self, dtype=np.float64) -> np.ndarray:
        """Rows x features; float32 is converted column by column, never through a float64 copy."""
        return self.frame[self.feature_names].to_numpy(dtype)

    def segments(self) -> np.ndarray:
        """Id of each row's run of consecutive candles (same symbol, no gap)."""
        return np.cumsum(self.run_position() == 0) - 1

    def run_position(self) -> np.ndarray:
        """Index of each row inside its run of consecutive candles (same symbol, no gap)."""
        ts = self.frame["timestamp"].to_numpy(dtype="datetime64[ns]")
        sym = self.frame["symbol"].array  # compared in its own (string) type, not as one Python str per row
        starts = np.ones(len(ts), dtype=bool)
        if len(ts) > 1:
            changed = np.asarray(sym[1:] != sym[:-1], dtype=bool)
            starts[1:] = changed | ((ts[1:] - ts[:-1]) != self.step.to_timedelta64())
        run_start = np.maximum.accumulate(np.where(starts, np.arange(len(ts)), 0))
        return np.arange(len(ts)) - run_start

    def eligible_rows(self, window: int) -> np.ndarray:
        """Rows with every feature defined and, for sequence models, a full window inside one run of candles."""
        mask = np.ones(len(self.frame), dtype=bool)
        if window > 1:
            mask &= self.run_position() >= window - 1
        return mask


def later_of(a: pd.Series | pd.DatetimeIndex, b: pd.Series | pd.DatetimeIndex) -> pd.DatetimeIndex:
    """Element-wise later of two timestamp columns (a missing one yields the other), in the finer unit of the
    two and ``a``'s zone: computed on int64 ticks, as np.maximum over tz-aware columns builds a Python
    Timestamp per row."""
    a, b = pd.DatetimeIndex(a), pd.DatetimeIndex(b)
    unit = max((a.unit, b.unit), key=["s", "ms", "us", "ns"].index)
    ticks_a, ticks_b = a.as_unit(unit).asi8, b.as_unit(unit).asi8
    later = np.maximum(ticks_a, ticks_b)  # NaT's tick is int64's minimum: the other side wins
    naive = pd.DatetimeIndex(later.view(f"datetime64[{unit}]"))
    return naive if a.tz is None else naive.tz_localize("UTC").tz_convert(a.tz)


def feature_frames(candles: dict[str, pd.DataFrame], features: DictConfig) -> dict[str, pd.DataFrame]:
    """Causal features per symbol (indicators never see another symbol's candles)."""
    return {symbol: compute_features(c, features) for symbol, c in candles.items()}


def join_labels(
    candles: dict[str, pd.DataFrame],
    frames: dict[str, pd.DataFrame],
    features: DictConfig,
    target: DictConfig,
    step: pd.Timedelta,
) -> FeatureTable:
    """Label, t1 and the persistence call joined to each symbol's features on timestamp (never position).

    Rows without every feature (warm-up) are dropped. Timestamps are matched as int64 ticks; each column of
    the table is one array (a view of a symbol's feature column where nothing must be copied)."""
    names = feature_names(features)
    lag = int(target.horizon) * step
    columns = list(next(iter(frames.values())).columns) if frames else names
    parts = []
    for symbol, c in candles.items():
        feats = frames[symbol]
        index = pd.DatetimeIndex(feats.index)
        labels = make_label(c, target, step)
        at = positions_at(labels.index, index)  # each feature row's label row, by timestamp
        label = labels["label"].to_numpy(np.float64)
        fwd = forward_log_return(c, int(target.horizon), step)
        t1 = pd.DatetimeIndex(labels["t1"])
        other = {
            "label": _take(label, at),
            "t1": _take_times(t1, at),
            # the label whose horizon ended at t: looked up by timestamp, so a gap never pairs the wrong rows
            "persistence": values_at(label, labels.index, index - lag),
            "aux_forward_return": values_at(fwd["ret"].to_numpy(), fwd.index, index),
            "aux_forward_volatility": values_at(forward_volatility(c, int(target.horizon), step), fwd.index, index),
        }
        other["purge_end"] = later_of(other["t1"], index + lag)
        keep = np.ones(len(feats), dtype=bool)
        for name in names:  # warm-up rows; labels stay on their own timestamps
            keep &= ~np.isnan(feats[name].to_numpy(np.float64))
        parts.append((symbol, feats, index, other, keep))
    # column by column: a symbol whose warm-up rows all lead keeps views of its feature columns, no copy
    kept = [
        slice(int(np.argmax(keep)), None) if keep.any() and keep[int(np.argmax(keep)) :].all() else keep
        for *_, keep in parts
    ]
    counts = [int(keep.sum()) for *_, keep in parts]
    # a name broadcast per symbol: pandas builds its string column without a Python object per row
    symbol = [pd.Series(s, index=pd.RangeIndex(n)) for (s, *_), n in zip(parts, counts)]
    data = {
        "timestamp": _concat([index[k] for (_, _, index, _, _), k in zip(parts, kept)]),
        "symbol": symbol[0] if len(symbol) == 1 else pd.concat(symbol, ignore_index=True),
    }
    for name in columns:
        if len(parts) == 1 and isinstance(kept[0], slice):  # a pandas view: written to, the table copies it
            data[name] = parts[0][1][name].iloc[kept[0]].astype(np.float64).reset_index(drop=True)
        else:
            data[name] = _concat([feats[name].to_numpy(np.float64)[k] for (_, feats, _, _, _), k in zip(parts, kept)])
    for key in parts[0][3] if parts else ():
        data[key] = _concat([other[key][k] for (_, _, _, other, _), k in zip(parts, kept)])
    frame = pd.DataFrame(data, copy=False)
    return FeatureTable(frame=frame, feature_names=names, step=step)


def _take(values: np.ndarray, at: np.ndarray) -> np.ndarray:
    out = np.full(len(at), np.nan)
    out[at >= 0] = values[at[at >= 0]]
    return out


def _take_times(times: pd.DatetimeIndex, at: np.ndarray) -> pd.DatetimeIndex:
    return times.take(at, allow_fill=True, fill_value=pd.NaT)


def _concat(pieces: list):
    if len(pieces) == 1:
        return pieces[0]
    if isinstance(pieces[0], pd.DatetimeIndex):
        return pieces[0].append(pieces[1:])
    return np.concatenate(pieces)


def build_table(
    candles: dict[str, pd.DataFrame], features: DictConfig, target: DictConfig, step: pd.Timedelta
) -> FeatureTable:
    return join_labels(candles, feature_frames(candles, features), features, target, step)
