"""Per-symbol features and labels joined by timestamp into one multi-symbol table."""
from dataclasses import dataclass

import numpy as np
import pandas as pd
from omegaconf import DictConfig

from data.features import compute_features, feature_names
from data.labels import forward_log_return, forward_volatility, make_label


@dataclass
class FeatureTable:
    frame: pd.DataFrame        # symbol, timestamp, features..., label, t1, persistence, aux_*, purge_end;
    # sorted by (symbol, timestamp). aux_forward_return / aux_forward_volatility: auxiliary targets over the
    # same horizon for families that need them; purge_end = the later of t1 and t + horizon (what the split purges on)
    # persistence: the label of the move that ended at t (known at t), the naive "same again" call
    feature_names: list[str]
    step: pd.Timedelta

    def matrix(self) -> np.ndarray:
        return self.frame[self.feature_names].to_numpy(np.float64)

    def segments(self) -> np.ndarray:
        """Id of each row's run of consecutive candles (same symbol, no gap)."""
        return np.cumsum(self.run_position() == 0) - 1

    def run_position(self) -> np.ndarray:
        """Index of each row inside its run of consecutive candles (same symbol, no gap)."""
        ts = self.frame["timestamp"].to_numpy(dtype="datetime64[ns]")
        sym = self.frame["symbol"].to_numpy()
        starts = np.ones(len(ts), dtype=bool)
        if len(ts) > 1:
            starts[1:] = (sym[1:] != sym[:-1]) | ((ts[1:] - ts[:-1]) != self.step.to_timedelta64())
        run_start = np.maximum.accumulate(np.where(starts, np.arange(len(ts)), 0))
        return np.arange(len(ts)) - run_start


def feature_frames(candles: dict[str, pd.DataFrame], features: DictConfig) -> dict[str, pd.DataFrame]:
    """Causal features per symbol (indicators never see another symbol's candles)."""
    return {symbol: compute_features(c, features) for symbol, c in candles.items()}


def join_labels(candles: dict[str, pd.DataFrame], frames: dict[str, pd.DataFrame], features: DictConfig,
                target: DictConfig, step: pd.Timedelta) -> FeatureTable:
    """Label, t1 and the persistence call joined to each symbol's features on timestamp (never position)."""
    names = feature_names(features)
    lag = int(target.horizon) * step
    parts = []
    for symbol, c in candles.items():
        labels = make_label(c, target, step)
        # The label whose horizon ended at t: shifted by timestamp, so a gap never pairs the wrong rows.
        persistence = labels["label"].copy()
        persistence.index = persistence.index + lag
        fwd = forward_log_return(c, int(target.horizon), step)
        aux = pd.DataFrame({"aux_forward_return": fwd["ret"].to_numpy(),
                            "aux_forward_volatility": forward_volatility(c, int(target.horizon), step)},
                           index=fwd.index)
        joined = frames[symbol].join(labels).join(persistence.rename("persistence")).join(aux)
        joined["purge_end"] = np.maximum(joined["t1"], joined.index + lag)
        joined = joined.dropna(subset=names)  # warm-up rows; labels stay on their own timestamps
        joined.insert(0, "symbol", symbol)
        parts.append(joined.reset_index())
    frame = pd.concat(parts, ignore_index=True)
    return FeatureTable(frame=frame, feature_names=names, step=step)


def build_table(
    candles: dict[str, pd.DataFrame], features: DictConfig, target: DictConfig, step: pd.Timedelta
) -> FeatureTable:
    return join_labels(candles, feature_frames(candles, features), features, target, step)
