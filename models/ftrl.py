"""FTRL-Proximal logistic regression (McMahan et al. 2013, "Ad click prediction: a view from the trenches"):
per-coordinate learning rates alpha / (beta + sqrt(n_i)), L1 (exact zeros) and L2, in numpy.

Updates run over the training rows in time order, in mini-batches: within a batch the weights are frozen,
the batch's summed gradient enters z and the per-row squared gradients enter n (what sequential FTRL would
accumulate with those weights). Epochs early-stop on the validation rows' log loss, best state kept.
Multiclass is one-vs-rest (K binary models, probabilities normalised); the binary task fits one model for
class 1. ``partial_fit`` continues learning online. Saved as z and n (safetensors) + JSON hyper-parameters."""

import json
import logging
from pathlib import Path

import numpy as np
from omegaconf import DictConfig
from safetensors.numpy import load_file, save_file
from scipy.special import expit

from core.errors import UserError
from models.base import CandleModel, FitContext, FitReport, Rows, Task, sample_weights

log = logging.getLogger(__name__)

NAME = "ftrl"
TASKS = ("binary", "multiclass")
_WEIGHTS = "model.safetensors"
_META = "ftrl.json"
_EPS = 1e-7
_HYPER = ("alpha", "beta", "lambda1", "lambda2", "batch_size", "max_epochs", "patience")


class FTRLModel(CandleModel):
    input = "tabular"

    def __init__(
        self,
        n_features: int,
        alpha: float = 0.05,
        beta: float = 1.0,
        lambda1: float = 1.0,
        lambda2: float = 1.0,
        batch_size: int = 256,
        max_epochs: int = 10,
        patience: int = 2,
        task: Task = Task(),
    ):
        self.task = task
        self.n_features = int(n_features)
        self.alpha, self.beta = float(alpha), float(beta)
        self.lambda1, self.lambda2 = float(lambda1), float(lambda2)
        self.batch_size, self.max_epochs, self.patience = int(batch_size), int(max_epochs), int(patience)
        self.n_models = 1 if task.kind == "binary" else int(task.n_classes)
        # one row per one-vs-rest model; the last coordinate is the intercept (exempt from L1)
        self.z = np.zeros((self.n_models, self.n_features + 1))
        self.n = np.zeros((self.n_models, self.n_features + 1))
        self.best_epoch: int | None = None

    @classmethod
    def from_config(
        cls, cfg: DictConfig, n_features: int, seed: int, num_threads: int, task: Task = Task()
    ) -> "FTRLModel":
        # seed / num_threads: FTRL is deterministic (zero init, time-ordered passes) and numpy-threaded
        if task.kind not in TASKS:
            raise UserError(f"{NAME} supports {' and '.join(TASKS)} targets, not {task.kind}", "target.type")
        for key in ("alpha", "beta"):
            if not float(cfg[key]) > 0:
                raise UserError(f"{key} must be positive, got {cfg[key]}", f"model.{key}")
        for key in ("lambda1", "lambda2"):
            if float(cfg[key]) < 0:
                raise UserError(f"{key} must be >= 0, got {cfg[key]}", f"model.{key}")
        return cls(n_features, **{k: cfg[k] for k in _HYPER}, task=task)

    def weights(self) -> np.ndarray:
        """w_i = 0 where |z_i| <= lambda1, else -(z_i - sign(z_i) lambda1) / ((beta + sqrt(n_i)) / alpha + lambda2)."""
        l1 = np.full(self.z.shape[1], self.lambda1)
        l1[-1] = 0.0
        shrunk = np.sign(self.z) * np.maximum(np.abs(self.z) - l1, 0.0)
        return -shrunk / ((self.beta + np.sqrt(self.n)) / self.alpha + self.lambda2)

    def _logits(self, X: np.ndarray, w: np.ndarray) -> np.ndarray:
        return X @ w[:, :-1].T + w[:, -1]

    def _targets(self, y: np.ndarray) -> np.ndarray:
        y = np.asarray(y, dtype=np.int64)
        if self.task.kind == "binary":
            return (y == 1).astype(np.float64)[:, None]
        return (y[:, None] == np.arange(self.n_models)).astype(np.float64)

    def _update(self, X: np.ndarray, Y: np.ndarray, weight: np.ndarray | None) -> np.ndarray:
        """One mini-batch step; returns the batch's probabilities (under the weights before the step)."""
        w = self.weights()
        p = expit(self._logits(X, w))
        r = p - Y  # d logloss / d logit, (b, K)
        if weight is not None:
            r = r * weight[:, None]
        g = np.empty_like(self.z)
        g[:, :-1] = r.T @ X
        g[:, -1] = r.sum(0)
        g2 = np.empty_like(self.n)
        r2 = r * r
        g2[:, :-1] = r2.T @ (X * X)
        g2[:, -1] = r2.sum(0)
        n_new = self.n + g2
        sigma = (np.sqrt(n_new) - np.sqrt(self.n)) / self.alpha
        self.z += g - sigma * w
        self.n = n_new
        return p

    def _batches(self, rows: Rows):
        X = rows.tabular().astype(np.float64)
        Y = self._targets(rows.y)
        weight = sample_weights(self.task, rows.y)
        for start in range(0, len(X), self.batch_size):
            stop = start + self.batch_size
            yield X[start:stop], Y[start:stop], None if weight is None else weight[start:stop]

    def partial_fit(self, rows: Rows) -> "FTRLModel":
        """One online pass over ``rows`` in their given (time) order."""
        for X, Y, weight in self._batches(rows):
            self._update(X, Y, weight)
        return self

    def _loss(self, rows: Rows) -> tuple[float, float]:
        proba = self.predict_proba(rows)
        y = np.asarray(rows.y, dtype=np.int64)
        loss = float(-np.mean(np.log(np.clip(proba[np.arange(len(y)), y], _EPS, 1.0))))
        return loss, float(np.mean(proba.argmax(1) == y))

    def fit(self, train: Rows, val: Rows, ctx: FitContext) -> FitReport:
        cb = ctx.callbacks
        every = int(cb.progress.every_n_batches) if cb is not None else 10
        check_every = int(cb.cancel.check_every_n_batches) if cb is not None else 5
        token = ctx.token if ctx.hooks else None
        per_epoch = -(-len(train.rows) // self.batch_size)
        total = per_epoch * self.max_epochs
        history = {"train/loss": [], "val/loss": [], "val/acc": []}
        best = (np.inf, None, None)
        cancelled_at, it, waited = None, 0, 0
        for epoch in range(self.max_epochs):
            for X, Y, weight in self._batches(train):
                p = self._update(X, Y, weight)
                it += 1
                if ctx.hooks and it % every == 0:
                    batch_loss = float(-np.mean(np.log(np.clip(np.where(Y == 1, p, 1 - p), _EPS, 1.0))))
                    ctx.reporter.emit(
                        "fit",
                        kind="step",
                        epoch=epoch,
                        epochs=self.max_epochs,
                        iteration=it,
                        iterations=total,
                        metrics={"train/batch_loss": batch_loss},
                        eta=ctx.reporter.eta(it, total),
                    )
                if token is not None and (token.is_set() or (it % check_every == 0 and token.cancelled)):
                    cancelled_at = it
                    break
            if cancelled_at is not None:
                break
            train_loss, _ = self._loss(train)
            val_loss, val_acc = self._loss(val)
            history["train/loss"].append(train_loss)
            history["val/loss"].append(val_loss)
            history["val/acc"].append(val_acc)
            if ctx.hooks:
                ctx.reporter.emit(
                    "fit",
                    kind="epoch",
                    epoch=epoch,
                    epochs=self.max_epochs,
                    metrics={"train/loss": train_loss, "val/loss": val_loss, "val/acc": val_acc},
                )
            if val_loss < best[0]:
                best, self.best_epoch, waited = (val_loss, self.z.copy(), self.n.copy()), epoch, 0
            else:
                waited += 1
                if waited >= self.patience:
                    break
        if best[1] is not None:  # the best epoch's state (also after a cancel); else the partial pass
            self.z, self.n = best[1], best[2]
        train_loss, _ = self._loss(train)
        val_loss, val_acc = self._loss(val)
        w = self.weights()
        metrics = {
            "best_epoch": self.best_epoch,
            "epochs_run": len(history["val/loss"]),
            "iterations_run": it,
            "train/loss": train_loss,
            "val/loss": val_loss,
            "val/acc": val_acc,
            "nonzero_weights": int(np.count_nonzero(w[:, :-1])),
            "weights": int(w[:, :-1].size),
        }
        if cancelled_at is not None:
            metrics["cancelled_at"] = {"iteration": cancelled_at}
            log.info("%s stopped at batch %d", NAME, cancelled_at)
        return FitReport(metrics=metrics, cancelled=cancelled_at is not None, history=history)

    def predict_proba(self, data: Rows) -> np.ndarray:
        p = expit(self._logits(data.tabular().astype(np.float64), self.weights()))
        if self.task.kind == "binary":
            return np.column_stack([1.0 - p[:, 0], p[:, 0]])
        return p / np.maximum(p.sum(1, keepdims=True), _EPS)

    def save(self, directory: Path) -> None:
        save_file({"z": np.ascontiguousarray(self.z), "n": np.ascontiguousarray(self.n)}, str(directory / _WEIGHTS))
        (directory / _META).write_text(
            json.dumps(
                {
                    "n_features": self.n_features,
                    "best_epoch": self.best_epoch,
                    "task": vars(self.task),
                    **{k: getattr(self, k) for k in _HYPER},
                }
            )
        )

    @classmethod
    def load(cls, directory: Path) -> "FTRLModel":
        meta = json.loads((directory / _META).read_text())
        model = cls(meta["n_features"], **{k: meta[k] for k in _HYPER}, task=Task(**meta["task"]))
        state = load_file(str(directory / _WEIGHTS))
        model.z, model.n = state["z"], state["n"]
        model.best_epoch = meta["best_epoch"]
        return model

    def n_parameters(self) -> int:
        return int(self.z.size)

    def feature_importance(self, names: list[str]) -> dict:
        """|w| per (standardised) feature, summed over the one-vs-rest models."""
        mag = np.abs(self.weights()[:, :-1]).sum(0)
        total = mag.sum() or 1.0
        return {"kind": "abs_weight", "values": {n: float(m / total) for n, m in zip(names, mag)}}
