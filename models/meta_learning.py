"""Meta-labelling (López de Prado): a primary LightGBM calls the direction; a secondary LightGBM predicts
whether that call will be right, and sizes it.

Rows (never test rows - the fit only ever receives train and val):
  * the training rows are split in time order: in every symbol block (rows are sorted by symbol, then time;
    an index jump larger than ``block_gap`` separates two symbols, smaller jumps are candle gaps) the first
    ``primary_fraction`` go to the primary, then ``purge_rows`` are dropped (labels of the primary's last
    rows look that far ahead), the rest go to the secondary;
  * the secondary learns on the primary's out-of-sample predictions over its later rows: its inputs are the
    features plus p = P_primary(up) and |p - 0.5|, its label is "the primary's call (p > 0.5) was right";
  * both early-stop on the time-ordered validation rows (the secondary on the meta-labels of val).
  The primary is not refit on all training rows: the secondary learned the errors of this primary.

Output (binary only): P(up) = 0.5 + (p - 0.5) * P(correct). The direction is always the primary's; the
secondary shrinks the confidence (the bet size) towards 0.5 where it expects the call to fail. Filtering:
a row is "covered" (a bet would be taken) when P(correct) >= ``threshold``; the fit reports the val coverage
and the primary's accuracy on covered val rows.
"""

import json
from pathlib import Path

import numpy as np
from omegaconf import DictConfig

from core.errors import UserError
from models.base import CandleModel, FitContext, FitReport, Rows, Task
from models.composite import log_loss, member_context
from models.lightgbm import LightGBMModel

_META = "meta_learning.json"
_PRIMARY, _SECONDARY = "primary", "secondary"
_TASKS = ("binary",)
_MIN_SECONDARY_ROWS = 50


def time_ordered_parts(rows: np.ndarray, fraction: float, purge: int, block_gap: int) -> tuple[np.ndarray, np.ndarray]:
    """Positions into ``rows`` for the primary (earlier) and the secondary (later) part of every symbol block."""
    breaks = np.flatnonzero(np.diff(rows) > block_gap) + 1
    first, second = [], []
    for block in np.split(np.arange(len(rows)), breaks):
        cut = int(round(len(block) * fraction))
        first.append(block[:cut])
        second.append(block[cut + purge :])
    return np.concatenate(first), np.concatenate(second)


def meta_features(X: np.ndarray, p_up: np.ndarray) -> np.ndarray:
    return np.column_stack([X, p_up, np.abs(p_up - 0.5)]).astype(np.float32)


def _subset(data: Rows, positions: np.ndarray) -> Rows:
    return Rows(features=data.features, rows=data.rows[positions], y=data.y[positions])


def _dense(X: np.ndarray, y: np.ndarray | None = None) -> Rows:
    return Rows(features=X, rows=np.arange(len(X)), y=y)


class MetaLabelingModel(CandleModel):
    input = "tabular"

    def __init__(self, primary: LightGBMModel, secondary: LightGBMModel | None, opts: dict, task: Task = Task()):
        self.primary = primary
        self.secondary = secondary
        self.opts = dict(opts)
        self.task = task
        self.fit_rows: dict[str, np.ndarray] = {}  # feature-table rows each model learned on (last fit)

    @classmethod
    def from_config(
        cls, cfg: DictConfig, n_features: int, seed: int, num_threads: int, task: Task = Task()
    ) -> "MetaLabelingModel":
        if task.kind not in _TASKS:
            raise UserError(f"{cfg.name} supports {', '.join(_TASKS)}, not {task.kind}", "target.type")
        if not 0.0 < float(cfg.primary_fraction) < 1.0:
            raise UserError(
                f"model.primary_fraction must lie in (0, 1), got {cfg.primary_fraction}", "model.primary_fraction"
            )
        primary = LightGBMModel.from_config(cfg.primary, n_features, seed, num_threads, task=task)
        secondary = LightGBMModel.from_config(cfg.secondary, n_features + 2, seed, num_threads, task=Task("binary", 2))
        opts = {
            "primary_fraction": float(cfg.primary_fraction),
            "purge_rows": int(cfg.purge_rows),
            "block_gap": int(cfg.block_gap),
            "threshold": float(cfg.threshold),
        }
        return cls(primary, secondary, opts, task)

    def fit(self, train: Rows, val: Rows, ctx: FitContext) -> FitReport:
        o = self.opts
        first, second = time_ordered_parts(train.rows, o["primary_fraction"], o["purge_rows"], o["block_gap"])
        if len(second) < _MIN_SECONDARY_ROWS:
            raise UserError(
                f"meta-labelling leaves {len(second)} training rows for the secondary model, need at "
                f"least {_MIN_SECONDARY_ROWS}",
                "model.primary_fraction",
            )
        self.fit_rows = {_PRIMARY: train.rows[first], _SECONDARY: train.rows[second]}
        n_primary, n_secondary = self.primary.n_estimators, self.secondary.n_estimators
        total = n_primary + n_secondary
        metrics: dict = {
            "rows": {
                "primary": len(first),
                "secondary": len(second),
                "purged": len(train.rows) - len(first) - len(second),
            }
        }
        primary_rows = _subset(train, first)
        report = self.primary.fit(primary_rows, val, member_context(ctx, 0, total))
        metrics[_PRIMARY] = report.metrics
        history = {f"{_PRIMARY}/{k}": list(v) for k, v in report.history.items()}
        if report.cancelled:  # the partial primary alone is the model (P(correct) taken as 1)
            self.secondary = None
            return self._report(train, val, second, metrics, history, report.metrics["cancelled_at"]["iteration"])
        sec_rows, sec_y = self._meta_rows(_subset(train, second))
        val_rows, val_y = self._meta_rows(val)
        report = self.secondary.fit(
            _dense(sec_rows, sec_y), _dense(val_rows, val_y), member_context(ctx, n_primary, total)
        )
        metrics[_SECONDARY] = report.metrics
        history.update({f"{_SECONDARY}/{k}": list(v) for k, v in report.history.items()})
        cancelled = report.metrics["cancelled_at"]["iteration"] + n_primary if report.cancelled else None
        return self._report(train, val, second, metrics, history, cancelled)

    def _meta_rows(self, data: Rows) -> tuple[np.ndarray, np.ndarray]:
        """The secondary's inputs and labels ("the primary's call was right") for ``data``."""
        p_up = self.primary.predict_proba(data)[:, 1]
        return meta_features(data.tabular(), p_up), ((p_up > 0.5).astype(np.int64) == data.y).astype(np.int64)

    def _report(
        self, train: Rows, val: Rows, second: np.ndarray, metrics: dict, history: dict, cancelled_at: int | None
    ) -> FitReport:
        out_val = self.predict_proba(val)
        metrics.update(
            {
                "val/loss": log_loss(out_val, val.y),
                "val/acc": float(np.mean(out_val.argmax(1) == val.y)),
                "train/loss": log_loss(self.predict_proba(_subset(train, second)), train.y[second]),
            }
        )
        p_correct = self._p_correct(val)
        covered = p_correct >= self.opts["threshold"]
        primary_right = (self.primary.predict_proba(val)[:, 1] > 0.5).astype(np.int64) == val.y
        metrics.update(
            {
                "val/coverage": float(np.mean(covered)),
                "val/acc_covered": float(np.mean(primary_right[covered])) if covered.any() else None,
            }
        )
        if self.secondary is not None:
            metrics["secondary/val/acc"] = float(np.mean((p_correct > 0.5) == primary_right))
        if cancelled_at is not None:
            metrics["cancelled_at"] = {"iteration": int(cancelled_at)}
        return FitReport(metrics=metrics, cancelled=cancelled_at is not None, history=history)

    def _p_correct(self, data: Rows, p_up: np.ndarray | None = None) -> np.ndarray:
        if p_up is None:
            p_up = self.primary.predict_proba(data)[:, 1]
        if self.secondary is None:
            return np.ones(len(p_up))
        return self.secondary.predict_proba(_dense(meta_features(data.tabular(), p_up)))[:, 1]

    def predict_proba(self, data: Rows) -> np.ndarray:
        p_up = self.primary.predict_proba(data)[:, 1]
        up = 0.5 + (p_up - 0.5) * self._p_correct(data, p_up)
        return np.column_stack([1.0 - up, up])

    def save(self, directory: Path) -> None:
        for name, model in ((_PRIMARY, self.primary), (_SECONDARY, self.secondary)):
            if model is not None:
                (directory / name).mkdir(parents=True, exist_ok=True)
                model.save(directory / name)
        (directory / _META).write_text(
            json.dumps({"opts": self.opts, "task": vars(self.task), "has_secondary": self.secondary is not None})
        )

    @classmethod
    def load(cls, directory: Path) -> "MetaLabelingModel":
        meta = json.loads((directory / _META).read_text())
        secondary = LightGBMModel.load(directory / _SECONDARY) if meta["has_secondary"] else None
        return cls(LightGBMModel.load(directory / _PRIMARY), secondary, meta["opts"], Task(**meta["task"]))

    def n_parameters(self) -> int:
        return int(self.primary.n_parameters() + (self.secondary.n_parameters() if self.secondary else 0))

    def feature_importance(self, names: list[str]) -> dict:
        """The primary's gain importance (it decides the direction)."""
        return self.primary.feature_importance(names)
