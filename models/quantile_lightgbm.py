"""LightGBM quantile regressions of the forward return, one booster per quantile level, boosted in lockstep
and each early-stopped on its own pinball loss over the time-ordered validation rows.

Direction (binary) probabilities come from the predicted distribution itself: the quantile points define a
piecewise-linear CDF (flat beyond the outermost levels), and P(up) = 1 - F(0). Regression predicts the
median. Quantile crossing is removed by sorting each row's predictions. Saved as one LightGBM text model
per quantile plus a JSON card."""

import json
import logging
from pathlib import Path

import lightgbm as lgb
import numpy as np
from omegaconf import DictConfig, OmegaConf

from callbacks.boosting import LightGBMHooks
from core.errors import UserError
from models.base import CandleModel, FitContext, FitReport, Rows, Task

log = logging.getLogger(__name__)

NAME = "quantile_lightgbm"
TASKS = ("binary", "regression")
AUX_KEY = "forward_return"
_META = "quantile_lightgbm.json"
_EPS = 1e-7


def _weights_file(level: float) -> str:
    return f"quantile_{level:g}.txt"


def cdf_at(quantiles: np.ndarray, levels: np.ndarray, x: float = 0.0) -> np.ndarray:
    """F(x) per row from sorted quantile predictions (n, K) at ``levels`` (K,): linear between quantile
    points, flat beyond them (F = levels[0] left of the lowest point, levels[-1] right of the highest)."""
    q = np.asarray(quantiles, dtype=np.float64)
    levels = np.asarray(levels, dtype=np.float64)
    k = (q <= x).sum(axis=1)  # points at or left of x (rows are sorted)
    inner = (k > 0) & (k < q.shape[1])
    lo = np.clip(k - 1, 0, q.shape[1] - 1)
    hi = np.clip(k, 0, q.shape[1] - 1)
    rows = np.arange(len(q))
    q_lo, q_hi = q[rows, lo], q[rows, hi]
    span = np.where(inner, q_hi - q_lo, 1.0)  # inner rows have q_lo <= x < q_hi, so span > 0
    frac = np.where(inner, (x - q_lo) / span, 0.0)
    f = levels[lo] + frac * (levels[hi] - levels[lo])
    f = np.where(k == 0, levels[0], f)
    return np.where(k == q.shape[1], levels[-1], f)


def quantile_at(quantiles: np.ndarray, levels: np.ndarray, level: float) -> np.ndarray:
    """The ``level`` quantile per row, linear in the level between fitted ones, flat beyond them."""
    levels = np.asarray(levels, dtype=np.float64)
    j = int(np.searchsorted(levels, level))
    if j < len(levels) and np.isclose(levels[j], level):
        return quantiles[:, j]
    if j == 0:
        return quantiles[:, 0]
    if j == len(levels):
        return quantiles[:, -1]
    w = (level - levels[j - 1]) / (levels[j] - levels[j - 1])
    return quantiles[:, j - 1] + w * (quantiles[:, j] - quantiles[:, j - 1])


def pinball(y: np.ndarray, q: np.ndarray, level: float) -> float:
    d = y - q
    return float(np.mean(np.maximum(level * d, (level - 1.0) * d)))


def _binary_logloss(p_up: np.ndarray, y: np.ndarray) -> float:
    p = np.clip(p_up, _EPS, 1 - _EPS)
    return float(-np.mean(np.where(y == 1, np.log(p), np.log(1 - p))))


class QuantileLightGBMModel(CandleModel):
    input = "tabular"

    def __init__(
        self, params: dict, quantiles, n_estimators: int = 500, early_stopping_rounds: int = 50, task: Task = Task()
    ):
        self.params = dict(params)
        self.quantiles = [float(q) for q in quantiles]
        self.task = task
        self.n_estimators = int(n_estimators)
        self.early_stopping_rounds = int(early_stopping_rounds)
        self.boosters: list[lgb.Booster] = []
        self.best_iterations: list[int] = []

    @classmethod
    def from_config(
        cls, cfg: DictConfig, n_features: int, seed: int, num_threads: int, task: Task = Task()
    ) -> "QuantileLightGBMModel":
        if task.kind not in TASKS:
            raise UserError(f"{NAME} supports {' and '.join(TASKS)} targets, not {task.kind}", "target.type")
        levels = [float(q) for q in cfg.quantiles]
        if len(levels) < 2 or any(not 0.0 < q < 1.0 for q in levels) or any(np.diff(levels) <= 0):
            raise UserError(
                f"quantiles must be at least two increasing levels inside (0, 1), got {levels}", "model.quantiles"
            )
        params = OmegaConf.to_container(cfg.params, resolve=True)
        params.update(
            objective="quantile",
            metric="quantile",
            seed=seed,
            deterministic=True,
            num_threads=num_threads,
            verbosity=-1,
        )
        return cls(params, levels, cfg.n_estimators, cfg.early_stopping_rounds, task)

    def _target(self, rows: Rows, split: str) -> np.ndarray:
        if not self.task.is_classification:
            return np.asarray(rows.y, dtype=np.float64)
        aux = getattr(rows, "aux", None)
        if not aux or AUX_KEY not in aux:
            raise UserError(
                f"{NAME} needs the forward return of the {split} rows (Rows.aux['{AUX_KEY}']) to "
                f"fit a direction target",
                "model",
            )
        target = np.asarray(aux[AUX_KEY], dtype=np.float64)
        if len(target) != len(rows.rows) or not np.isfinite(target).all():
            raise UserError(f"Rows.aux['{AUX_KEY}'] of the {split} rows must hold one finite value per row", "model")
        return target

    def fit(self, train: Rows, val: Rows, ctx: FitContext) -> FitReport:
        r_train, r_val = self._target(train, "train"), self._target(val, "val")
        every = ctx.callbacks.progress.every_n_batches if ctx.callbacks is not None else 10
        hooks = LightGBMHooks(ctx.reporter, ctx.token, every, self.n_estimators)
        dtrain = lgb.Dataset(train.tabular(), label=r_train, free_raw_data=False)
        dval = lgb.Dataset(val.tabular(), label=r_val, reference=dtrain)
        self.boosters = []
        for level in self.quantiles:
            booster = lgb.Booster(params={**self.params, "alpha": level}, train_set=dtrain)
            booster.add_valid(dval, "val")
            self.boosters.append(booster)
        k = len(self.quantiles)
        best = [np.inf] * k
        self.best_iterations = [0] * k
        active = [True] * k
        history = {"train/pinball": [], "val/pinball": []}
        last_train, last_val = [np.nan] * k, [np.nan] * k
        rounds = 0
        for it in range(1, self.n_estimators + 1):  # lockstep: a stop at any round leaves every level usable
            for j, booster in enumerate(self.boosters):
                if not active[j]:
                    continue
                finished = booster.update()
                last_train[j] = booster.eval_train()[0][2]
                last_val[j] = booster.eval_valid()[0][2]
                if last_val[j] < best[j]:
                    best[j], self.best_iterations[j] = last_val[j], it
                if finished or it - self.best_iterations[j] >= self.early_stopping_rounds:
                    active[j] = False
            rounds = it
            history["train/pinball"].append(float(np.mean(last_train)))
            history["val/pinball"].append(float(np.mean(last_val)))
            if ctx.hooks and hooks._round(
                it, lambda: {"train/pinball": history["train/pinball"][-1], "val/pinball": history["val/pinball"][-1]}
            ):
                break
            if not any(active):
                break
        self.best_iterations = [max(1, b) for b in self.best_iterations]
        metrics = {"best_iteration": self.best_iterations, "iterations_run": rounds, "quantiles": self.quantiles}
        q_train, q_val = self._quantiles(train.tabular()), self._quantiles(val.tabular())
        metrics["train/pinball"] = float(
            np.mean([pinball(r_train, q_train[:, j], lv) for j, lv in enumerate(self.quantiles)])
        )
        metrics["val/pinball"] = float(
            np.mean([pinball(r_val, q_val[:, j], lv) for j, lv in enumerate(self.quantiles)])
        )
        inside = (r_val >= q_val[:, 0]) & (r_val <= q_val[:, -1])
        metrics["val/interval"] = [self.quantiles[0], self.quantiles[-1]]
        metrics["val/interval_width"] = float(np.mean(q_val[:, -1] - q_val[:, 0]))
        metrics["val/interval_coverage"] = float(np.mean(inside))  # nominal: quantiles[-1] - quantiles[0]
        if self.task.is_classification:
            p_train = 1.0 - cdf_at(q_train, self.quantiles)
            p_val = 1.0 - cdf_at(q_val, self.quantiles)
            metrics["train/loss"] = _binary_logloss(p_train, train.y)
            metrics["val/loss"] = _binary_logloss(p_val, val.y)
            metrics["val/acc"] = float(np.mean((p_val > 0.5) == (val.y == 1)))
        else:
            median_val = quantile_at(q_val, self.quantiles, 0.5)
            metrics["train/loss"] = metrics["train/pinball"]
            metrics["val/loss"] = metrics["val/pinball"]
            metrics["val/mae"] = float(np.mean(np.abs(median_val - r_val)))
        if hooks.cancelled_at is not None:
            metrics["cancelled_at"] = {"iteration": hooks.cancelled_at}
            log.info("%s stopped at round %d", NAME, hooks.cancelled_at)
        return FitReport(
            metrics=metrics,
            cancelled=hooks.cancelled_at is not None,
            history={"train/loss": history["train/pinball"], "val/loss": history["val/pinball"]},
        )

    def _quantiles(self, X: np.ndarray) -> np.ndarray:
        """(n, K) predicted quantiles, sorted per row (no crossing)."""
        out = np.column_stack([b.predict(X, num_iteration=it) for b, it in zip(self.boosters, self.best_iterations)])
        return np.sort(out, axis=1)

    def predict_quantiles(self, data: Rows) -> np.ndarray:
        return self._quantiles(data.tabular())

    def predict_proba(self, data: Rows) -> np.ndarray:
        q = self._quantiles(data.tabular())
        if self.task.is_classification:
            p_up = 1.0 - cdf_at(q, self.quantiles)
            return np.column_stack([1.0 - p_up, p_up])
        return quantile_at(q, self.quantiles, 0.5)[:, None]

    def save(self, directory: Path) -> None:
        for level, booster, it in zip(self.quantiles, self.boosters, self.best_iterations):
            booster.save_model(str(directory / _weights_file(level)), num_iteration=it)
        (directory / _META).write_text(
            json.dumps(
                {
                    "quantiles": self.quantiles,
                    "best_iterations": self.best_iterations,
                    "params": self.params,
                    "n_estimators": self.n_estimators,
                    "early_stopping_rounds": self.early_stopping_rounds,
                    "task": vars(self.task),
                }
            )
        )

    @classmethod
    def load(cls, directory: Path) -> "QuantileLightGBMModel":
        meta = json.loads((directory / _META).read_text())
        model = cls(
            meta["params"], meta["quantiles"], meta["n_estimators"], meta["early_stopping_rounds"], Task(**meta["task"])
        )
        model.boosters = [lgb.Booster(model_file=str(directory / _weights_file(q))) for q in model.quantiles]
        model.best_iterations = [int(b) for b in meta["best_iterations"]]
        return model

    def n_parameters(self) -> int:
        """Fitted leaf values over every quantile's kept trees."""
        total = 0
        for booster, it in zip(self.boosters, self.best_iterations):
            dump = booster.dump_model(num_iteration=it)
            total += sum(t["num_leaves"] for t in dump["tree_info"])
        return int(total)

    def feature_importance(self, names: list[str]) -> dict:
        gain = sum(b.feature_importance("gain", iteration=it) for b, it in zip(self.boosters, self.best_iterations))
        total = gain.sum() or 1.0
        return {"kind": "gain", "values": {n: float(g / total) for n, g in zip(names, gain)}}
