"""NGBoost: natural-gradient boosting of a predictive distribution (Bernoulli / k-categorical for direction
classes, Normal for returns), early-stopped on the time-ordered validation split.

Progress and cancellation: ngboost has no callback API. Its fit loop calls ``val_loss_monitor(D, Y)`` once
per boosting iteration, after that iteration's trees and line-search scaling are in place; the monitor we
pass computes the usual validation score and then runs the shared step hooks. To stop, it raises a private
exception that ``fit`` catches: every list the library keeps (trees, scalings, column samples) is then
consistent, so the rounds boosted so far form a usable partial model. No library code is patched.

Saving without pickle: the fitted sklearn trees are flattened into arrays (children, feature, threshold,
NaN direction, leaf value) in safetensors, the scalings and initial parameters in JSON. Prediction always
runs through ``TreeEnsemblePredictor`` - right after the fit as after a load - which repeats ngboost's
``pred_param`` arithmetic in the same order (init + sum of lr * tree_i(X) * scaling_i per parameter), so a
reload reproduces predictions bit for bit, and a test checks it against the library's own ``pred_dist``.
"""

import json
import logging
from pathlib import Path

import numpy as np
import scipy.special
from ngboost import NGBClassifier, NGBRegressor
from ngboost.distns import Normal, k_categorical
from omegaconf import DictConfig
from safetensors.numpy import load_file, save_file
from sklearn.tree import DecisionTreeRegressor

from callbacks.steps import StepHooks
from core.errors import UserError
from models.base import CandleModel, FitContext, FitReport, Rows, Task, sample_weights

log = logging.getLogger(__name__)

_WEIGHTS = "trees.safetensors"
_META = "ngboost.json"
_TASKS = ("binary", "multiclass", "regression")
_ROWS_PER_CHUNK = 4096  # bounds the (rows x trees) node matrix while predicting


class _Stop(Exception):
    """Raised from the per-iteration monitor to leave ngboost's loop once cancellation is seen."""


class TreeEnsemblePredictor:
    """ngboost's parameter prediction from flattened tree arrays (no sklearn objects, no pickle).

    Trees are stored iteration-major: tree ``t = i * n_params + j`` is iteration i's learner for
    distribution parameter j. Node indices are global; a leaf points at itself so every row can walk
    ``max_depth`` steps in lock-step.
    """

    def __init__(
        self,
        arrays: dict[str, np.ndarray],
        init_params: np.ndarray,
        scalings: np.ndarray,
        learning_rate: float,
        n_params: int,
    ):
        self.arrays = arrays
        self.init_params = np.asarray(init_params, dtype=np.float64)
        self.scalings = np.asarray(scalings, dtype=np.float64)
        self.learning_rate = float(learning_rate)
        self.n_params = int(n_params)

    @classmethod
    def from_ngboost(cls, ngb, n_iterations: int) -> "TreeEnsemblePredictor":
        """Flatten the first ``n_iterations`` rounds of a fitted ngboost model."""
        left, right, feature, threshold, nan_left, value, roots, gain = [], [], [], [], [], [], [], []
        offset = 0
        for models, col_idx in zip(ngb.base_models[:n_iterations], ngb.col_idxs[:n_iterations]):
            for tree in models:
                t = tree.tree_
                n = t.node_count
                is_leaf = t.children_left == -1
                nodes = np.arange(n)
                left.append(np.where(is_leaf, nodes, t.children_left) + offset)
                right.append(np.where(is_leaf, nodes, t.children_right) + offset)
                # trees see X[:, col_idx]: store the original column index
                feature.append(np.where(is_leaf, 0, np.asarray(col_idx)[np.maximum(t.feature, 0)]))
                threshold.append(np.where(is_leaf, np.inf, t.threshold))
                nan_left.append(np.where(is_leaf, 1, t.missing_go_to_left).astype(np.uint8))
                value.append(t.value[:, 0, 0].astype(np.float64))
                w, imp = t.weighted_n_node_samples, t.impurity
                cl, cr = t.children_left, t.children_right
                split_gain = np.where(
                    is_leaf,
                    0.0,
                    w * imp
                    - w[np.maximum(cl, 0)] * imp[np.maximum(cl, 0)]
                    - w[np.maximum(cr, 0)] * imp[np.maximum(cr, 0)],
                )
                gain.append(split_gain)
                roots.append(offset)
                offset += n

        def cat(xs: list, dt) -> np.ndarray:
            return np.concatenate(xs).astype(dt) if xs else np.zeros(0, dt)

        arrays = {
            "left": cat(left, np.int64),
            "right": cat(right, np.int64),
            "feature": cat(feature, np.int64),
            "threshold": cat(threshold, np.float64),
            "nan_left": cat(nan_left, np.uint8),
            "value": cat(value, np.float64),
            "roots": np.asarray(roots, np.int64),
            "split_gain": cat(gain, np.float64),
            "max_depth": np.asarray(
                [max([m.tree_.max_depth for ms in ngb.base_models[:n_iterations] for m in ms], default=0)], np.int64
            ),
        }
        return cls(
            arrays,
            ngb.init_params,
            np.asarray(ngb.scalings[:n_iterations], np.float64),
            ngb.learning_rate,
            ngb.Manifold.n_params,
        )

    @property
    def n_iterations(self) -> int:
        return len(self.scalings)

    def leaf_values(self, X: np.ndarray) -> np.ndarray:
        """(n, n_trees) value of the leaf each row reaches in each tree."""
        a = self.arrays
        roots = a["roots"]
        out = np.empty((len(X), len(roots)), dtype=np.float64)
        for start in range(0, len(X), _ROWS_PER_CHUNK):
            x = X[start : start + _ROWS_PER_CHUNK]
            node = np.broadcast_to(roots, (len(x), len(roots))).copy()
            r = np.arange(len(x))[:, None]
            for _ in range(int(a["max_depth"][0])):
                v = x[r, a["feature"][node]]
                go_left = np.where(np.isnan(v), a["nan_left"][node] == 1, v <= a["threshold"][node])
                node = np.where(go_left, a["left"][node], a["right"][node])
            out[start : start + len(x)] = a["value"][node]
        return out

    def params(self, X: np.ndarray) -> np.ndarray:
        """(n, n_params) distribution parameters, in ngboost's own order of operations."""
        # sklearn trees compare float32 inputs against float64 thresholds
        X = np.asarray(X, dtype=np.float32).astype(np.float64)
        params = np.ones((len(X), self.n_params)) * self.init_params
        if self.n_iterations == 0:
            return params
        leaves = self.leaf_values(X).reshape(len(X), self.n_iterations, self.n_params)
        for i, s in enumerate(self.scalings):
            params -= self.learning_rate * leaves[:, i, :] * float(s)
        return params


def class_probs(params: np.ndarray) -> np.ndarray:
    """ngboost's k-categorical: class 0's logit is fixed at 0, the others are the parameters."""
    logits = np.zeros((params.shape[1] + 1, len(params)))
    logits[1:] = params.T
    return scipy.special.softmax(logits, axis=0).T


class NGBoostModel(CandleModel):
    input = "tabular"

    def __init__(self, params: dict, task: Task = Task()):
        self.params = dict(params)
        self.task = task
        self.predictor: TreeEnsemblePredictor | None = None

    @classmethod
    def from_config(
        cls, cfg: DictConfig, n_features: int, seed: int, num_threads: int, task: Task = Task()
    ) -> "NGBoostModel":
        if task.kind not in _TASKS:
            raise UserError(f"{cfg.name} supports {', '.join(_TASKS)}, not {task.kind}", "target.type")
        params = {
            "n_estimators": int(cfg.n_estimators),
            "early_stopping_rounds": int(cfg.early_stopping_rounds),
            "learning_rate": float(cfg.learning_rate),
            "minibatch_frac": float(cfg.minibatch_frac),
            "col_sample": float(cfg.col_sample),
            "natural_gradient": bool(cfg.natural_gradient),
            "max_depth": int(cfg.max_depth),
            "min_samples_leaf": int(cfg.min_samples_leaf),
            "seed": int(seed),
        }
        return cls(params, task)

    def _estimator(self):
        p = self.params
        base = DecisionTreeRegressor(
            criterion="squared_error",
            max_depth=p["max_depth"],
            min_samples_leaf=p["min_samples_leaf"],
            random_state=p["seed"],
        )
        common = dict(
            Base=base,
            n_estimators=p["n_estimators"],
            learning_rate=p["learning_rate"],
            minibatch_frac=p["minibatch_frac"],
            col_sample=p["col_sample"],
            natural_gradient=p["natural_gradient"],
            verbose=False,
            random_state=p["seed"],
            early_stopping_rounds=None,
        )  # passed to fit instead: the constructor route prints
        if self.task.is_classification:
            return NGBClassifier(Dist=k_categorical(self.task.n_classes), **common)
        return NGBRegressor(Dist=Normal, **common)

    def fit(self, train: Rows, val: Rows, ctx: FitContext) -> FitReport:
        X, Xv = train.tabular(), val.tabular()
        y = train.y.astype(np.int64) if self.task.is_classification else train.y.astype(np.float64)
        yv = val.y.astype(np.int64) if self.task.is_classification else val.y.astype(np.float64)
        if self.task.is_classification and len(np.unique(y)) < self.task.n_classes:
            raise UserError(
                f"ngboost needs every class in the training rows, found {np.unique(y).tolist()}", "target.type"
            )
        hooks = StepHooks(ctx, self.params["n_estimators"])
        val_curve: list[float] = []

        def val_monitor(dist, Y):  # called once per round, after its trees and scaling are in place
            loss = float(dist.total_score(Y))
            val_curve.append(loss)
            if hooks.step(len(val_curve), lambda: {"val/loss": loss}):
                raise _Stop
            return loss

        ngb = self._estimator()
        try:
            ngb.fit(
                X,
                y,
                X_val=Xv,
                Y_val=yv,
                sample_weight=sample_weights(self.task, train.y),
                val_loss_monitor=val_monitor,
                early_stopping_rounds=self.params["early_stopping_rounds"],
            )
        except _Stop:
            log.info("ngboost stopped at round %d by cancellation", hooks.cancelled_at)
        n_rounds = len(ngb.scalings)
        best = int(np.argmin(val_curve)) + 1 if val_curve else n_rounds
        self.predictor = TreeEnsemblePredictor.from_ngboost(ngb, best)
        self._library = ngb  # kept in memory only, so a test can compare with the library's pred_dist
        metrics = {
            "best_iteration": best,
            "iterations_run": n_rounds,
            **self._losses(train, "train"),
            **self._losses(val, "val"),
        }
        if hooks.cancelled_at is not None:
            metrics["cancelled_at"] = {"iteration": hooks.cancelled_at}
        return FitReport(metrics=metrics, cancelled=hooks.cancelled_at is not None, history={"val/loss": val_curve})

    def _losses(self, data: Rows, prefix: str) -> dict:
        """Mean log score of the kept model (ngboost's own loss), plus accuracy or MAE."""
        params = self.predictor.params(data.tabular())
        if self.task.is_classification:
            p = class_probs(params)
            y = data.y.astype(np.int64)
            out = {f"{prefix}/loss": float(-np.mean(np.log(np.clip(p[np.arange(len(y)), y], 1e-15, 1.0))))}
            if prefix == "val":
                out["val/acc"] = float(np.mean(p.argmax(1) == y))
            return out
        loc, scale = params[:, 0], np.exp(params[:, 1])
        z = (data.y - loc) / scale
        out = {f"{prefix}/loss": float(np.mean(0.5 * z**2 + np.log(scale) + 0.5 * np.log(2 * np.pi)))}
        if prefix == "val":
            out["val/mae"] = float(np.mean(np.abs(loc - data.y)))
        return out

    def predict_distribution(self, data: Rows) -> dict[str, np.ndarray]:
        """The predicted distribution's parameters: class probabilities, or the Normal's loc and scale."""
        params = self.predictor.params(data.tabular())
        if self.task.is_classification:
            return {"probs": class_probs(params)}
        return {"loc": params[:, 0], "scale": np.exp(params[:, 1])}

    def predict_proba(self, data: Rows) -> np.ndarray:
        dist = self.predict_distribution(data)
        return dist["probs"] if self.task.is_classification else dist["loc"][:, None]

    def save(self, directory: Path) -> None:
        p = self.predictor
        save_file({k: np.ascontiguousarray(v) for k, v in p.arrays.items()}, str(directory / _WEIGHTS))
        (directory / _META).write_text(
            json.dumps(
                {
                    "params": self.params,
                    "task": vars(self.task),
                    "n_params": p.n_params,
                    "learning_rate": p.learning_rate,
                    "init_params": p.init_params.tolist(),
                    "scalings": p.scalings.tolist(),
                }
            )
        )  # JSON floats round-trip exactly (repr)

    @classmethod
    def load(cls, directory: Path) -> "NGBoostModel":
        meta = json.loads((directory / _META).read_text())
        model = cls(meta["params"], Task(**meta["task"]))
        model.predictor = TreeEnsemblePredictor(
            load_file(str(directory / _WEIGHTS)),
            np.asarray(meta["init_params"]),
            np.asarray(meta["scalings"]),
            meta["learning_rate"],
            meta["n_params"],
        )
        return model

    def n_parameters(self) -> int:
        """Leaf values of the kept trees plus the initial distribution parameters."""
        a = self.predictor.arrays
        n_nodes = len(a["left"])
        leaves = int(np.sum(a["left"] == np.arange(n_nodes)))
        return leaves + self.predictor.n_params

    def feature_importance(self, names: list[str]) -> dict:
        """Impurity decrease per feature, each tree weighted by its round's |scaling|."""
        a, p = self.predictor.arrays, self.predictor
        tree_of_node = np.searchsorted(a["roots"], np.arange(len(a["left"])), side="right") - 1
        weight = np.abs(np.repeat(p.scalings, p.n_params))[tree_of_node] if len(a["roots"]) else np.zeros(0)
        gain = np.bincount(a["feature"], weights=a["split_gain"] * weight, minlength=len(names))
        total = gain.sum() or 1.0
        return {"kind": "gain", "values": {n: float(g / total) for n, g in zip(names, gain)}}
