"""CatBoost direction classifier: ordered boosting, early-stopped on the time-ordered validation split,
saved in CatBoost's native .cbm format."""

import json
from pathlib import Path

import numpy as np
from catboost import CatBoostClassifier, CatBoostRegressor
from omegaconf import DictConfig, OmegaConf

from callbacks.boosting import CatBoostHooks
from core.devices import tree_gpu
from models.base import CandleModel, FitContext, FitReport, Rows, Task

_WEIGHTS = "model.cbm"
_META = "catboost.json"
_LOSS = {"binary": "Logloss", "multiclass": "MultiClass", "regression": "RMSE"}


class CatBoostModel(CandleModel):
    input = "tabular"

    def __init__(self, params: dict, task: Task = Task()):
        self.params = dict(params)
        self.task = task
        self.model: CatBoostClassifier | CatBoostRegressor | None = None

    def _estimator(self):
        return CatBoostClassifier if self.task.is_classification else CatBoostRegressor

    @classmethod
    def from_config(
        cls, cfg: DictConfig, n_features: int, seed: int, num_threads: int, task: Task = Task()
    ) -> "CatBoostModel":
        params = OmegaConf.to_container(cfg.params, resolve=True)
        loss = _LOSS[task.kind]
        params.update(
            iterations=int(cfg.n_estimators),
            od_type="Iter",
            od_wait=int(cfg.early_stopping_rounds),
            use_best_model=True,
            loss_function=loss,
            eval_metric=loss,
            random_seed=seed,
            thread_count=num_threads,
            verbose=False,
            allow_writing_files=False,
        )
        if task.is_classification:  # fixed class set: a class absent from train still gets its column
            params["class_names"] = list(range(task.n_classes))
        if task.is_classification and task.class_weight == "balanced":
            params["auto_class_weights"] = "Balanced"
        return cls(params, task)

    def fit(self, train: Rows, val: Rows, ctx: FitContext) -> FitReport:
        every = ctx.callbacks.progress.every_n_batches if ctx.callbacks is not None else 10
        hooks = CatBoostHooks(ctx.reporter, ctx.token, every, self.params["iterations"])
        params = dict(self.params)
        gpu = tree_gpu(ctx.device)
        if gpu:  # device=gpu: CatBoost's GPU trainer, on the GPU this job was given
            params.update(task_type="GPU", devices=gpu.split(":")[1])
        self.model = self._estimator()(**params)
        self.model.fit(
            train.tabular(), train.y, eval_set=(val.tabular(), val.y), callbacks=[hooks] if ctx.hooks else None
        )
        evals = self.model.get_evals_result()
        loss = self.params["loss_function"]
        train_curve = evals["learn"][loss]
        val_curve = evals["validation"][loss]
        best = self.model.get_best_iteration()
        b = best if best is not None else len(val_curve) - 1
        metrics = {
            "best_iteration": int(self.model.tree_count_),
            "iterations_run": len(val_curve),
            "train/loss": float(train_curve[b]),
            "val/loss": float(val_curve[b]),
        }
        out = self.predict_proba(val)
        if self.task.is_classification:
            metrics["val/acc"] = float(np.mean(out.argmax(1) == val.y))
        else:
            metrics["val/mae"] = float(np.mean(np.abs(out[:, 0] - val.y)))
        if hooks.cancelled_at is not None:
            metrics["cancelled_at"] = {"iteration": hooks.cancelled_at}
        return FitReport(
            metrics=metrics,
            cancelled=hooks.cancelled_at is not None,
            history={"train/loss": list(train_curve), "val/loss": list(val_curve)},
        )

    def predict_proba(self, data: Rows) -> np.ndarray:
        if self.task.is_classification:
            return self.model.predict_proba(data.tabular()).astype(np.float64)
        return self.model.predict(data.tabular()).astype(np.float64)[:, None]

    def save(self, directory: Path) -> None:
        self.model.save_model(str(directory / _WEIGHTS), format="cbm")
        (directory / _META).write_text(json.dumps({"params": self.params, "task": vars(self.task)}))

    @classmethod
    def load(cls, directory: Path) -> "CatBoostModel":
        meta = json.loads((directory / _META).read_text())
        model = cls(meta["params"], Task(**meta["task"]))
        model.model = model._estimator()()
        model.model.load_model(str(directory / _WEIGHTS), format="cbm")
        return model

    def n_parameters(self) -> int:
        """Leaf values: trees x 2^depth (CatBoost trees are oblivious)."""
        return int(self.model.tree_count_ * 2 ** int(self.params.get("depth", 6)))

    def feature_importance(self, names: list[str]) -> dict:
        values = self.model.get_feature_importance()
        total = float(np.sum(values)) or 1.0
        return {"kind": "prediction_values_change", "values": {n: float(v / total) for n, v in zip(names, values)}}
