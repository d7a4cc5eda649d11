"""CatBoost direction classifier: ordered boosting, early-stopped on the time-ordered validation split,
saved in CatBoost's native .cbm format."""
import json
from pathlib import Path

import numpy as np
from catboost import CatBoostClassifier
from omegaconf import DictConfig, OmegaConf

from callbacks.boosting import CatBoostHooks
from models.base import CandleModel, FitContext, FitReport, Rows

_WEIGHTS = "model.cbm"
_META = "catboost.json"


class CatBoostModel(CandleModel):
    input = "tabular"

    def __init__(self, params: dict):
        self.params = dict(params)
        self.model: CatBoostClassifier | None = None

    @classmethod
    def from_config(cls, cfg: DictConfig, n_features: int, seed: int, num_threads: int) -> "CatBoostModel":
        params = OmegaConf.to_container(cfg.params, resolve=True)
        params.update(iterations=int(cfg.n_estimators), od_type="Iter", od_wait=int(cfg.early_stopping_rounds),
                      use_best_model=True, loss_function="Logloss", eval_metric="Logloss", random_seed=seed,
                      thread_count=num_threads, verbose=False, allow_writing_files=False)
        return cls(params)

    def fit(self, train: Rows, val: Rows, ctx: FitContext) -> FitReport:
        every = ctx.callbacks.progress.every_n_batches if ctx.callbacks is not None else 10
        hooks = CatBoostHooks(ctx.reporter, ctx.token, every, self.params["iterations"])
        self.model = CatBoostClassifier(**self.params)
        self.model.fit(train.tabular(), train.y, eval_set=(val.tabular(), val.y),
                       callbacks=[hooks] if ctx.hooks else None)
        evals = self.model.get_evals_result()
        train_curve = evals["learn"]["Logloss"]
        val_curve = evals["validation"]["Logloss"]
        best = self.model.get_best_iteration()
        b = best if best is not None else len(val_curve) - 1
        val_pred = (self.model.predict_proba(val.tabular())[:, 1] > 0.5).astype(int)
        metrics = {"best_iteration": int(self.model.tree_count_), "iterations_run": len(val_curve),
                   "train/loss": float(train_curve[b]), "val/loss": float(val_curve[b]),
                   "val/acc": float(np.mean(val_pred == val.y))}
        if hooks.cancelled_at is not None:
            metrics["cancelled_at"] = {"iteration": hooks.cancelled_at}
        return FitReport(metrics=metrics, cancelled=hooks.cancelled_at is not None,
                         history={"train/loss": list(train_curve), "val/loss": list(val_curve)})

    def predict_proba(self, data: Rows) -> np.ndarray:
        return self.model.predict_proba(data.tabular()).astype(np.float64)

    def save(self, directory: Path) -> None:
        self.model.save_model(str(directory / _WEIGHTS), format="cbm")
        (directory / _META).write_text(json.dumps({"params": self.params}))

    @classmethod
    def load(cls, directory: Path) -> "CatBoostModel":
        model = cls(json.loads((directory / _META).read_text())["params"])
        model.model = CatBoostClassifier()
        model.model.load_model(str(directory / _WEIGHTS), format="cbm")
        return model

    def n_parameters(self) -> int:
        """Leaf values: trees x 2^depth (CatBoost trees are oblivious)."""
        return int(self.model.tree_count_ * 2 ** int(self.params.get("depth", 6)))

    def feature_importance(self, names: list[str]) -> dict:
        values = self.model.get_feature_importance()
        total = float(np.sum(values)) or 1.0
        return {"kind": "prediction_values_change", "values": {n: float(v / total) for n, v in zip(names, values)}}
