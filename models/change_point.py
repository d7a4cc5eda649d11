"""Causal change-point features + LightGBM: an online CUSUM detector watches one return-like feature column
(``signal_column``; 0 = ret_1 in the default feature set) and its derived state is appended to the inputs.

The detector runs over ``rows`` in their given order (time order within a symbol), so its state at row i uses
rows <= i only. It restarts at the start of every call (train, val and test are each processed on their own,
so a test row never sees validation or training state), wherever consecutive entries of ``rows`` are not
adjacent table rows (another symbol's block or a split boundary), and where ``Rows.aux["run_start"]`` (when
present) marks a new run of candles. Consequently a prediction depends on how much history the call holds:
predicting a window of candles gives the same numbers only when it starts at the same row.

Detector: two-sided CUSUMs for shifts of the mean and of the variance of the signal (clipped to +-clip train
standard deviations) against the current segment's reference (mean 0 / variance 1 at a restart; after an
alarm, the trailing EWMA mean and variance at the alarm row); any alarm declares a change and resets all four
sums. Between alarms each sum is the Lindley recursion S_t = max(0, S_{t-1} + u_t - k), computed in closed
form (S_t = C_t - min(0, min_{s<=t} C_s) over cumulative sums) on blocks that grow until an alarm.
Derived features per row: rows since the segment began, the segment's running mean and std of the signal,
changes in the last ``count_window`` rows, and the four CUSUM statistics relative to their alarm levels."""

import json
import logging
from pathlib import Path

import numpy as np
from omegaconf import DictConfig
from scipy.signal import lfilter

from core.errors import UserError
from models.base import CandleModel, FitContext, FitReport, Rows, Task
from models.lightgbm import LightGBMModel

log = logging.getLogger(__name__)

NAME = "change_point"
_META = "change_point.json"
_DETECTOR = (
    "signal_column",
    "drift",
    "threshold",
    "var_drift",
    "var_threshold",
    "clip",
    "count_window",
    "reference_span",
)
FEATURE_NAMES = [
    "cp_since_change",
    "cp_segment_mean",
    "cp_segment_std",
    "cp_changes_recent",
    "cp_cusum_up",
    "cp_cusum_down",
    "cp_cusum_var_up",
    "cp_cusum_var_down",
]
_FIRST_BLOCK = 64
_MIN_VAR = 1e-2  # floor on a segment's reference variance (train units)


def _increments(x: np.ndarray, mean: float, var: float, drift: float, var_drift: float, clip: float) -> np.ndarray:
    """Per-row CUSUM increments against a segment's reference mean and variance."""
    v = np.minimum((x - mean) ** 2 / var, clip * clip) - 1.0
    d = x - mean
    return np.column_stack([d - drift, -d - drift, v - var_drift, -v - var_drift])


def cusum(
    x: np.ndarray,
    ewm_mean: np.ndarray,
    ewm_square: np.ndarray,
    drift: float,
    threshold: float,
    var_drift: float,
    var_threshold: float,
    clip: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Coupled two-sided CUSUMs (mean and variance) over one run of rows, all reset after any alarm.

    A segment's reference is fixed when it begins: mean 0 / variance 1 (the train scaling) at the run's
    start, after an alarm at t the trailing EWMAs at t. Returns (alarm (n,) bool, stats (n, 4): each
    statistic over its alarm level after row t, before the reset an alarm at t triggers)."""
    n = len(x)
    levels = np.array([threshold, threshold, var_threshold, var_threshold])
    alarm = np.zeros(n, dtype=bool)
    stats = np.zeros((n, 4))
    pos, block = 0, _FIRST_BLOCK
    mean, var = 0.0, 1.0
    level, floor = np.zeros(4), np.zeros(4)  # cumulative sum since the reset, and its running min (with 0)
    while pos < n:
        stop = min(n, pos + block)
        c = level + np.cumsum(_increments(x[pos:stop], mean, var, drift, var_drift, clip), axis=0)
        low = np.minimum(floor, np.minimum.accumulate(c, axis=0))
        s = c - low
        hit = np.flatnonzero((s > levels).any(axis=1))
        if len(hit):
            t = pos + int(hit[0])
            stats[pos : t + 1] = s[: hit[0] + 1]
            alarm[t] = True
            mean, var = float(ewm_mean[t]), max(float(ewm_square[t]) - float(ewm_mean[t]) ** 2, _MIN_VAR)
            level, floor = np.zeros(4), np.zeros(4)
            pos, block = t + 1, _FIRST_BLOCK
        else:
            stats[pos:stop] = s
            level, floor = c[-1], low[-1]
            pos, block = stop, block * 2
    return alarm, stats / levels


def ewma(x: np.ndarray, span: int) -> np.ndarray:
    """Causal exponentially weighted mean (alpha = 2 / (span + 1)), started at the first value."""
    alpha = 2.0 / (span + 1.0)
    out, _ = lfilter([alpha], [1.0, alpha - 1.0], x, zi=[(1.0 - alpha) * x[0]])
    return out


def run_starts(rows: np.ndarray, run_start: np.ndarray | None = None) -> np.ndarray:
    """Where the detector restarts: the call's first row, non-adjacent table rows, marked run starts."""
    starts = np.ones(len(rows), dtype=bool)
    if len(rows) > 1:
        starts[1:] = np.diff(rows) != 1
    if run_start is not None:
        starts |= np.asarray(run_start, dtype=bool)
    return starts


def change_point_features(
    signal: np.ndarray,
    starts: np.ndarray,
    drift: float = 0.5,
    threshold: float = 8.0,
    var_drift: float = 0.5,
    var_threshold: float = 12.0,
    clip: float = 4.0,
    count_window: int = 240,
    reference_span: int = 60,
) -> np.ndarray:
    """(n, 8) causal features (FEATURE_NAMES) for a standardised signal in time order; ``starts`` marks rows
    where the detector restarts. Row i depends on rows <= i only. Missing values count as 0 (no evidence)."""
    x = np.clip(np.nan_to_num(np.asarray(signal, dtype=np.float64), nan=0.0, posinf=clip, neginf=-clip), -clip, clip)
    out = np.zeros((len(x), len(FEATURE_NAMES)))
    bounds = np.append(np.flatnonzero(starts), len(x))
    for a, b in zip(bounds[:-1], bounds[1:]):  # runs are independent: a run's features use its own rows only
        run = x[a:b]
        alarm, stats = cusum(
            run,
            ewma(run, reference_span),
            ewma(run * run, reference_span),
            drift,
            threshold,
            var_drift,
            var_threshold,
            clip,
        )
        out[a:b] = _segment_features(run, alarm, stats, count_window)
    return out


def _segment_features(x: np.ndarray, alarm: np.ndarray, stats: np.ndarray, count_window: int) -> np.ndarray:
    """Per row of one run: rows since the segment began (at the run start or the row after an alarm), the
    segment's running mean and std, alarms in the last ``count_window`` rows, the CUSUM statistics."""
    idx = np.arange(len(x))
    seg_begin = np.zeros(len(x), dtype=bool)
    seg_begin[0] = True
    seg_begin[1:] = alarm[:-1]
    seg_start = np.maximum.accumulate(np.where(seg_begin, idx, 0))
    c1 = np.concatenate([[0.0], np.cumsum(x)])
    c2 = np.concatenate([[0.0], np.cumsum(x * x)])
    count = idx - seg_start + 1
    mean = (c1[idx + 1] - c1[seg_start]) / count
    var = np.maximum((c2[idx + 1] - c2[seg_start]) / count - mean * mean, 0.0)
    alarms = np.concatenate([[0], np.cumsum(alarm)])
    recent = alarms[idx + 1] - alarms[np.maximum(idx + 1 - int(count_window), 0)]
    return np.column_stack([idx - seg_start, mean, np.sqrt(var), recent, stats])


class ChangePointModel(CandleModel):
    input = "tabular"

    def __init__(self, detector: dict, booster: LightGBMModel, task: Task = Task()):
        self.detector = {k: detector[k] for k in _DETECTOR}
        self.booster = booster
        self.task = task

    @classmethod
    def from_config(
        cls, cfg: DictConfig, n_features: int, seed: int, num_threads: int, task: Task = Task()
    ) -> "ChangePointModel":
        if not 0 <= int(cfg.signal_column) < n_features:
            raise UserError(
                f"signal_column must be a feature index in [0, {n_features}), got {cfg.signal_column}",
                "model.signal_column",
            )
        for key in ("threshold", "var_threshold", "clip"):
            if not float(cfg[key]) > 0:
                raise UserError(f"{key} must be positive, got {cfg[key]}", f"model.{key}")
        for key in ("count_window", "reference_span"):
            if int(cfg[key]) < 1:
                raise UserError(f"{key} must be >= 1, got {cfg[key]}", f"model.{key}")
        detector = {
            "signal_column": int(cfg.signal_column),
            "drift": float(cfg.drift),
            "threshold": float(cfg.threshold),
            "var_drift": float(cfg.var_drift),
            "var_threshold": float(cfg.var_threshold),
            "clip": float(cfg.clip),
            "count_window": int(cfg.count_window),
            "reference_span": int(cfg.reference_span),
        }
        return cls(
            detector,
            LightGBMModel.from_config(cfg, n_features + len(FEATURE_NAMES), seed, num_threads, task=task),
            task,
        )

    def features(self, data: Rows) -> np.ndarray:
        """The detector's (n, 8) features for ``data.rows``, in their order.

        With the table's run ids (``data.segments``) the detector runs over every row of each symbol run up
        to the last requested one — the same history at training, evaluation and reload, all of it at or
        before each row (causal) — and the requested rows are picked out. Without them it restarts per call.
        """
        d = self.detector
        params = (
            d["drift"],
            d["threshold"],
            d["var_drift"],
            d["var_threshold"],
            d["clip"],
            d["count_window"],
            d["reference_span"],
        )
        rows = np.asarray(data.rows)
        segments = getattr(data, "segments", None)
        if segments is not None and len(rows):
            stop = int(rows.max()) + 1
            starts = np.ones(stop, dtype=bool)
            starts[1:] = segments[1:stop] != segments[: stop - 1]
            full = change_point_features(data.features[:stop, d["signal_column"]], starts, *params)
            return full[rows]
        aux = getattr(data, "aux", None) or {}
        starts = run_starts(rows, aux.get("run_start"))
        return change_point_features(data.features[rows, d["signal_column"]], starts, *params)

    def _augmented(self, data: Rows) -> tuple[Rows, float]:
        """The rows with the detector's features appended, and the share of rows that begin a segment after an alarm."""
        cp = self.features(data)
        aux = getattr(data, "aux", None) or {}
        restarts = run_starts(np.asarray(data.rows), aux.get("run_start"))
        alarm_rate = float(np.mean((cp[:, 0] == 0) & ~restarts)) if len(cp) else 0.0
        X = np.hstack([data.tabular(), cp.astype(np.float32)])
        return Rows(features=X, rows=np.arange(len(X)), y=data.y), alarm_rate

    def fit(self, train: Rows, val: Rows, ctx: FitContext) -> FitReport:
        aug_train, train_rate = self._augmented(train)
        aug_val, val_rate = self._augmented(val)
        report = self.booster.fit(aug_train, aug_val, ctx)
        report.metrics.update(
            {"train/change_rate": train_rate, "val/change_rate": val_rate, "detector": dict(self.detector)}
        )
        return report

    def predict_proba(self, data: Rows) -> np.ndarray:
        return self.booster.predict_proba(self._augmented(data)[0])

    def save(self, directory: Path) -> None:
        self.booster.save(directory)
        (directory / _META).write_text(json.dumps({"detector": self.detector, "task": vars(self.task)}))

    @classmethod
    def load(cls, directory: Path) -> "ChangePointModel":
        meta = json.loads((directory / _META).read_text())
        return cls(meta["detector"], LightGBMModel.load(directory), Task(**meta["task"]))

    def n_parameters(self) -> int:
        return self.booster.n_parameters()

    def feature_importance(self, names: list[str]) -> dict:
        return self.booster.feature_importance(list(names) + FEATURE_NAMES)
