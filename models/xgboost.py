"""XGBoost direction classifier: native Booster, early-stopped on the time-ordered validation split,
saved in XGBoost's own JSON format."""
import json
from pathlib import Path

import numpy as np
import xgboost as xgb
from omegaconf import DictConfig, OmegaConf

from callbacks.boosting import xgboost_hooks
from models.base import CandleModel, FitContext, FitReport, Rows, Task, sample_weights
from trainer.devices import tree_gpu

_WEIGHTS = "model.json"
_META = "xgboost.json"
# objective, eval metrics (the last one early-stops; the first is shown as val/acc or val/mae)
_OBJECTIVES = {"binary": ("binary:logistic", ["error", "logloss"]),
               "multiclass": ("multi:softprob", ["merror", "mlogloss"]),
               "regression": ("reg:squarederror", ["mae", "rmse"])}


class XGBoostModel(CandleModel):
    input = "tabular"

    def __init__(self, params: dict, n_estimators: int = 500, early_stopping_rounds: int = 50,
                 task: Task = Task()):
        self.params = dict(params)
        self.task = task
        self.n_estimators = int(n_estimators)
        self.early_stopping_rounds = int(early_stopping_rounds)
        self.booster: xgb.Booster | None = None
        self.best_iteration: int | None = None   # number of rounds kept

    @classmethod
    def from_config(cls, cfg: DictConfig, n_features: int, seed: int, num_threads: int,
                    task: Task = Task()) -> "XGBoostModel":
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
        if gpu:   # device=gpu: XGBoost's CUDA hist, on the GPU this job was given
            self.params["device"] = gpu
        dtrain = xgb.DMatrix(train.tabular(), label=train.y, weight=sample_weights(self.task, train.y),
                             nthread=self.params["nthread"])
        dval = xgb.DMatrix(val.tabular(), label=val.y, nthread=self.params["nthread"])
        self.booster = xgb.train(self.params, dtrain, num_boost_round=self.n_estimators,
                                 evals=[(dtrain, "train"), (dval, "val")], evals_result=evals,
                                 early_stopping_rounds=self.early_stopping_rounds,
                                 callbacks=[hooks] if ctx.hooks else [],
                                 verbose_eval=False)
        self.params["device"] = "cpu"
        self.booster.set_param({"device": "cpu"})   # the saved model predicts on any machine
        rounds = self.booster.num_boosted_rounds()
        best = getattr(self.booster, "best_iteration", None)
        self.best_iteration = (int(best) + 1) if best is not None else rounds
        first, loss = _OBJECTIVES[self.task.kind][1]
        b = self.best_iteration - 1
        metrics = {"best_iteration": self.best_iteration, "iterations_run": len(evals["val"][loss]),
                   "train/loss": float(evals["train"][loss][b]), "val/loss": float(evals["val"][loss][b])}
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
        (directory / _META).write_text(json.dumps({"best_iteration": self.best_iteration, "params": self.params,
                                                   "task": vars(self.task)}))

    @classmethod
    def load(cls, directory: Path) -> "XGBoostModel":
        meta = json.loads((directory / _META).read_text())
        model = cls(meta["params"], task=Task(**meta["task"]))
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
