"""XGBoost direction classifier: native Booster, early-stopped on the time-ordered validation split,
saved in XGBoost's own JSON format."""

import json
from pathlib import Path

import numpy as np
import xgboost as xgb
from omegaconf import DictConfig, OmegaConf

from callbacks.boosting import xgboost_hooks
from core.devices import tree_gpu
from core.errors import UserError
from models.base import CandleModel, FitContext, FitReport, Rows, Task, sample_weights

_WEIGHTS = "model.json"
_META = "xgboost.json"


# objective, eval metrics (the last one early-stops; the first is shown as val/acc or val/mae)
def check_trees(saved: dict, where: str) -> None:
    """XGBoost trusts its JSON model: a split on a feature or a child it does not have reads outside its
    arrays (a crash at prediction). Refuse any tree this project never writes: a booster other than gbtree,
    categorical splits, and every index (features, children, output groups) out of its range."""

    def bad(what: str):
        raise UserError(f"not an XGBoost model this project reads: {what}", where)

    try:
        learner = saved["learner"]
        n_features = int(learner["learner_model_param"]["num_feature"])
        n_groups = max(
            1,
            int(learner["learner_model_param"]["num_class"]),
            int(learner["learner_model_param"].get("num_target", 1)),
        )
        booster = learner["gradient_booster"]
        trees, info = booster["model"]["trees"], booster["model"]["tree_info"]
        declared = int(booster["model"]["gbtree_model_param"]["num_trees"])
    except (KeyError, TypeError, ValueError):
        bad("no gbtree learner with feature and tree counts")
    if (
        booster.get("name") != "gbtree"
        or not isinstance(trees, list)
        or len(trees) != declared
        or not isinstance(info, list)
        or len(info) != declared
        or n_features < 1
    ):
        bad("not a gbtree booster whose tree counts agree")
    if any(not isinstance(g, int) or not 0 <= g < n_groups for g in info):
        bad("a tree's output group out of range")
    keys = (
        "left_children",
        "right_children",
        "split_indices",
        "split_conditions",
        "default_left",
        "parents",
        "base_weights",
        "split_type",
    )
    for number, tree in enumerate(trees):
        try:
            n = int(tree["tree_param"]["num_nodes"])
            arrays = [tree[k] for k in keys]
            left, right, features = arrays[:3]
        except (KeyError, TypeError, ValueError):
            bad(f"tree {number} lacks its node arrays")
        if (
            n < 1
            or any(not isinstance(a, list) or len(a) != n for a in arrays)
            or any(t != 0 for t in tree["split_type"])
        ):
            bad(f"tree {number}: node arrays of other lengths than {n}, or a categorical split")
        seen, stack = set(), [0]  # from the root, every node reached once: no loop, no shared child
        while stack:
            node = stack.pop()
            l, r, f = left[node], right[node], features[node]
            if node in seen or not all(isinstance(v, int) for v in (l, r, f)):
                bad(f"tree {number} node {node}: reached twice, or indices that are not integers")
            seen.add(node)
            if l == -1 and r == -1:
                continue
            if not (0 <= l < n and 0 <= r < n and 0 <= f < n_features):
                bad(f"tree {number} node {node}: child {l}/{r} or feature {f} out of range")
            stack += [l, r]


_OBJECTIVES = {
    "binary": ("binary:logistic", ["error", "logloss"]),
    "multiclass": ("multi:softprob", ["merror", "mlogloss"]),
    "regression": ("reg:squarederror", ["mae", "rmse"]),
}


class XGBoostModel(CandleModel):
    input = "tabular"

    def __init__(self, params: dict, n_estimators: int = 500, early_stopping_rounds: int = 50, task: Task = Task()):
        self.params = dict(params)
        self.task = task
        self.n_estimators = int(n_estimators)
        self.early_stopping_rounds = int(early_stopping_rounds)
        self.booster: xgb.Booster | None = None
        self.best_iteration: int | None = None  # number of rounds kept

    @classmethod
    def from_config(
        cls, cfg: DictConfig, n_features: int, seed: int, num_threads: int, task: Task = Task()
    ) -> "XGBoostModel":
        params = OmegaConf.to_container(cfg.params, resolve=True)
        objective, metrics = _OBJECTIVES[task.kind]
        params.update(objective=objective, eval_metric=metrics, seed=seed, nthread=num_threads, device="cpu")
        if task.kind == "multiclass":
            params["num_class"] = task.n_classes
        return cls(params, cfg.n_estimators, cfg.early_stopping_rounds, task)

    def fit(self, train: Rows, val: Rows, ctx: FitContext) -> FitReport:
        every = ctx.callbacks.progress.every_n_batches if ctx.callbacks is not None else 10
        hooks = xgboost_hooks(ctx.reporter, ctx.token, every, self.n_estimators)
        evals: dict = {}
        gpu = tree_gpu(ctx.device)
        if gpu:  # device=gpu: XGBoost's CUDA hist, on the GPU this job was given
            self.params["device"] = gpu
        dtrain = xgb.DMatrix(
            train.tabular(), label=train.y, weight=sample_weights(self.task, train.y), nthread=self.params["nthread"]
        )
        dval = xgb.DMatrix(val.tabular(), label=val.y, nthread=self.params["nthread"])
        self.booster = xgb.train(
            self.params,
            dtrain,
            num_boost_round=self.n_estimators,
            evals=[(dtrain, "train"), (dval, "val")],
            evals_result=evals,
            early_stopping_rounds=self.early_stopping_rounds,
            callbacks=[hooks] if ctx.hooks else [],
            verbose_eval=False,
        )
        self.params["device"] = "cpu"
        self.booster.set_param({"device": "cpu"})  # the saved model predicts on any machine
        rounds = self.booster.num_boosted_rounds()
        best = getattr(self.booster, "best_iteration", None)
        self.best_iteration = (int(best) + 1) if best is not None else rounds
        first, loss = _OBJECTIVES[self.task.kind][1]
        b = self.best_iteration - 1
        metrics = {
            "best_iteration": self.best_iteration,
            "iterations_run": len(evals["val"][loss]),
            "train/loss": float(evals["train"][loss][b]),
            "val/loss": float(evals["val"][loss][b]),
        }
        if self.task.is_classification:
            metrics["val/acc"] = float(1.0 - evals["val"][first][b])
        else:
            metrics["val/mae"] = float(evals["val"][first][b])
        if hooks.cancelled_at is not None:
            metrics["cancelled_at"] = {"iteration": hooks.cancelled_at}
        history = {"train/loss": evals["train"][loss], "val/loss": evals["val"][loss]}
        return FitReport(metrics=metrics, cancelled=hooks.cancelled_at is not None, history=history)

    def predict_proba(self, data: Rows) -> np.ndarray:
        out = self.booster.predict(xgb.DMatrix(data.tabular()), iteration_range=(0, self.best_iteration))
        out = out.astype(np.float64)
        if self.task.kind == "binary":
            return np.column_stack([1.0 - out, out])
        return out if out.ndim == 2 else out[:, None]

    def save(self, directory: Path) -> None:
        self.booster.save_model(str(directory / _WEIGHTS))
        (directory / _META).write_text(
            json.dumps({"best_iteration": self.best_iteration, "params": self.params, "task": vars(self.task)})
        )

    @classmethod
    def load(cls, directory: Path) -> "XGBoostModel":
        meta = json.loads((directory / _META).read_text())
        model = cls(meta["params"], task=Task(**meta["task"]))
        check_trees(json.loads((directory / _WEIGHTS).read_text()), str(directory / _WEIGHTS))
        model.booster = xgb.Booster()
        model.booster.load_model(str(directory / _WEIGHTS))
        model.best_iteration = meta["best_iteration"]
        return model

    def n_parameters(self) -> int:
        """Fitted leaf values in the kept rounds."""
        trees = self.booster.get_dump()[: self.best_iteration]
        return int(sum(t.count("leaf=") for t in trees))

    def feature_importance(self, names: list[str]) -> dict:
        gain = self.booster[: self.best_iteration].get_score(importance_type="total_gain")
        total = sum(gain.values()) or 1.0
        return {"kind": "gain", "values": {n: float(gain.get(f"f{i}", 0.0) / total) for i, n in enumerate(names)}}
