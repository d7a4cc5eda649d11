"""Regime mixture: a Gaussian mixture over the training rows' features names the market regime, one LightGBM
model per regime is trained on the training rows assigned to it (argmax posterior), and a prediction is the
posterior-weighted mixture of the regime models' outputs.

The mixture sees the configured feature columns (``columns``; null = every feature, the honest default since
feature names do not reach ``fit``), fitted on training rows only. A global LightGBM model, trained first on
every training row, stands in for regimes with too few training rows and for regimes a cancelled fit did not
reach. Every booster early-stops on the time-ordered validation rows, weighted by the regime posterior. The
mixture's parameters are saved as safetensors and the GaussianMixture rebuilt from them (no pickle); the
boosters as LightGBM text."""

import json
import logging
import re
from pathlib import Path

import lightgbm as lgb
import numpy as np
from omegaconf import DictConfig, OmegaConf
from safetensors.numpy import load_file, save_file
from sklearn.mixture import GaussianMixture
from threadpoolctl import threadpool_limits

from callbacks.boosting import LightGBMHooks
from core.errors import UserError
from models.base import CandleModel, FitContext, FitReport, Rows, Task, sample_weights
from models.lightgbm import OBJECTIVES, booster_params

log = logging.getLogger(__name__)

NAME = "gmm_regime"
_GMM = "gmm.safetensors"
_META = "gmm_regime.json"
_GLOBAL = "global"
_BOOSTER_KEY = re.compile(r"(global|regime_[0-9]{1,4})\Z")
_EPS = 1e-7
_GMM_ARRAYS = ("weights_", "means_", "covariances_", "precisions_cholesky_")


class _OffsetHooks(LightGBMHooks):
    """LightGBMHooks numbering rounds across the successive boosters of one fit (global, then regimes)."""

    def __init__(self, reporter, token, every_n: int, total: int):
        super().__init__(reporter, token, every_n, total)
        self.offset = 0

    def __call__(self, env: lgb.callback.CallbackEnv) -> None:
        def metrics():
            return {f"{data}/{name}": float(value) for data, name, value, _ in env.evaluation_result_list}

        if self._round(self.offset + env.iteration + 1, metrics):
            raise lgb.callback.EarlyStopException(env.iteration, env.evaluation_result_list)


def gmm_to_arrays(gmm: GaussianMixture) -> dict[str, np.ndarray]:
    return {name: np.ascontiguousarray(getattr(gmm, name), dtype=np.float64) for name in _GMM_ARRAYS}


def gmm_from_arrays(arrays: dict[str, np.ndarray], covariance_type: str) -> GaussianMixture:
    """A fitted GaussianMixture rebuilt from its parameters (what predict_proba reads), without pickle."""
    gmm = GaussianMixture(n_components=len(arrays["weights_"]), covariance_type=covariance_type)
    for name in _GMM_ARRAYS:
        setattr(gmm, name, arrays[name])
    prec_chol = arrays["precisions_cholesky_"]
    if covariance_type == "full":
        gmm.precisions_ = np.einsum("kij,klj->kil", prec_chol, prec_chol)
    elif covariance_type == "tied":
        gmm.precisions_ = prec_chol @ prec_chol.T
    else:
        gmm.precisions_ = prec_chol**2
    gmm.n_features_in_ = arrays["means_"].shape[1]
    gmm.converged_ = True
    return gmm


class GMMRegimeModel(CandleModel):
    input = "tabular"

    def __init__(
        self,
        params: dict,
        n_components: int = 3,
        covariance_type: str = "full",
        columns: list[int] | None = None,
        max_rows: int = 50000,
        min_regime_rows: int = 1000,
        gmm_max_iter: int = 100,
        reg_covar: float = 1e-4,
        n_estimators: int = 500,
        early_stopping_rounds: int = 50,
        seed: int = 0,
        task: Task = Task(),
    ):
        self.params = dict(params)
        self.task = task
        self.n_components, self.covariance_type = int(n_components), str(covariance_type)
        self.columns = None if columns is None else [int(c) for c in columns]
        self.max_rows, self.min_regime_rows = int(max_rows), int(min_regime_rows)
        self.gmm_max_iter, self.reg_covar = int(gmm_max_iter), float(reg_covar)
        self.n_estimators, self.early_stopping_rounds = int(n_estimators), int(early_stopping_rounds)
        self.seed = int(seed)
        self.gmm: GaussianMixture | None = None
        self.boosters: dict[str, lgb.Booster] = {}
        self.best_iterations: dict[str, int] = {}
        self.regime_model: list[str] = []  # per regime: its own booster's key, or "global"

    @classmethod
    def from_config(
        cls, cfg: DictConfig, n_features: int, seed: int, num_threads: int, task: Task = Task()
    ) -> "GMMRegimeModel":
        if int(cfg.n_components) < 1:
            raise UserError(f"n_components must be >= 1, got {cfg.n_components}", "model.n_components")
        if cfg.covariance_type not in ("full", "tied", "diag", "spherical"):
            raise UserError(
                f"covariance_type must be full, tied, diag or spherical, got {cfg.covariance_type}",
                "model.covariance_type",
            )
        columns = OmegaConf.to_container(cfg.columns) if cfg.get("columns") is not None else None
        if columns is not None and (not columns or any(not 0 <= int(c) < n_features for c in columns)):
            raise UserError(f"columns must be feature indices in [0, {n_features}), got {columns}", "model.columns")
        params = booster_params(cfg.params, task, seed, num_threads)
        return cls(
            params,
            cfg.n_components,
            cfg.covariance_type,
            columns,
            cfg.max_rows,
            cfg.min_regime_rows,
            cfg.gmm_max_iter,
            cfg.reg_covar,
            cfg.n_estimators,
            cfg.early_stopping_rounds,
            seed,
            task,
        )

    def _gmm_input(self, X: np.ndarray) -> np.ndarray:
        return (X if self.columns is None else X[:, self.columns]).astype(np.float64)

    def _posterior(self, X: np.ndarray) -> np.ndarray:
        with threadpool_limits(self.params["num_threads"], user_api="blas"):  # the configured threads, no more
            return self.gmm.predict_proba(self._gmm_input(X))

    def regime_posterior(self, data: Rows) -> np.ndarray:
        """(n, n_components) P(regime | features) for ``data.rows``."""
        return self._posterior(data.tabular())

    def _boost(self, key: str, X, y, w, Xv, yv, wv, hooks: _OffsetHooks | None) -> tuple[dict, bool]:
        evals: dict = {}
        dtrain = lgb.Dataset(X, label=y, weight=w, free_raw_data=False)
        dval = lgb.Dataset(Xv, label=yv, weight=wv, reference=dtrain)
        booster = lgb.train(
            self.params,
            dtrain,
            num_boost_round=self.n_estimators,
            valid_sets=[dtrain, dval],
            valid_names=["train", "val"],
            keep_training_booster=True,
            callbacks=[
                lgb.early_stopping(self.early_stopping_rounds, first_metric_only=True, verbose=False),
                lgb.record_evaluation(evals),
            ]
            + ([hooks] if hooks is not None else []),
        )
        self.boosters[key] = booster
        self.best_iterations[key] = int(booster.best_iteration or booster.current_iteration())
        cancelled = hooks is not None and hooks.cancelled_at is not None
        if hooks is not None:
            hooks.offset += booster.current_iteration()
        return evals, cancelled

    def fit(self, train: Rows, val: Rows, ctx: FitContext) -> FitReport:
        X, Xv = train.tabular(), val.tabular()
        every = ctx.callbacks.progress.every_n_batches if ctx.callbacks is not None else 10
        hooks = (
            _OffsetHooks(ctx.reporter, ctx.token, every, self.n_estimators * (1 + self.n_components))
            if ctx.hooks
            else None
        )
        # The regimes: fitted on training rows only (evenly spaced in time when there are more than max_rows).
        fit_rows = np.linspace(0, len(X) - 1, min(len(X), self.max_rows)).round().astype(np.int64)
        self.gmm = GaussianMixture(
            self.n_components,
            covariance_type=self.covariance_type,
            max_iter=self.gmm_max_iter,
            reg_covar=self.reg_covar,
            random_state=self.seed,
        )
        with threadpool_limits(self.params["num_threads"], user_api="blas"):
            self.gmm.fit(self._gmm_input(X[fit_rows]))
        post, post_val = self._posterior(X), self._posterior(Xv)
        regime = post.argmax(1)
        occupancy = np.bincount(regime, minlength=self.n_components)
        weight = sample_weights(self.task, train.y)
        weight_all = np.ones(len(X)) if weight is None else weight

        self.boosters, self.best_iterations = {}, {}
        self.regime_model = [_GLOBAL] * self.n_components
        evals, cancelled = self._boost(_GLOBAL, X, train.y, weight, Xv, val.y, None, hooks)
        global_evals = evals
        for k in range(self.n_components):
            if cancelled:
                break
            if occupancy[k] < self.min_regime_rows or post_val[:, k].sum() < 1.0:
                log.info(
                    "regime %d has %d training rows (< %d): it uses the global model",
                    k,
                    occupancy[k],
                    self.min_regime_rows,
                )
                continue
            mine = regime == k
            _, cancelled = self._boost(
                f"regime_{k}",
                X[mine],
                train.y[mine],
                weight_all[mine],
                Xv,
                val.y,
                np.maximum(post_val[:, k], 0.0),
                hooks,
            )
            self.regime_model[k] = f"regime_{k}"

        out_train, out_val = self._mix(X, post), self._mix(Xv, post_val)
        metrics = {
            "best_iteration": dict(self.best_iterations),
            "regime_model": list(self.regime_model),
            "regime_occupancy_train": (occupancy / max(len(X), 1)).round(6).tolist(),
            "regime_occupancy_val": (np.bincount(post_val.argmax(1), minlength=self.n_components) / max(len(Xv), 1))
            .round(6)
            .tolist(),
            "regime_probability_val": post_val.mean(0).round(6).tolist(),
            "regime_weights": self.gmm.weights_.round(6).tolist(),
            "gmm_converged": bool(self.gmm.converged_),
        }
        metrics.update(self._scores("train", out_train, train.y))
        metrics.update(self._scores("val", out_val, val.y))
        if self.task.is_classification:
            metrics["val/acc_global"] = float(np.mean(self._predict_one(_GLOBAL, Xv).argmax(1) == val.y))
        if hooks is not None and hooks.cancelled_at is not None:
            metrics["cancelled_at"] = {"iteration": hooks.cancelled_at}
        loss = OBJECTIVES[self.task.kind][1][0]
        history = {name: list(global_evals.get(name, {}).get(loss, [])) for name in ("train", "val")}
        history = {"train/loss": history["train"], "val/loss": history["val"]}  # empty if cancelled at once
        return FitReport(metrics=metrics, cancelled=bool(cancelled), history=history)

    def _scores(self, split: str, out: np.ndarray, y: np.ndarray) -> dict:
        if not self.task.is_classification:
            return {
                f"{split}/loss": float(np.mean((out[:, 0] - y) ** 2)),
                f"{split}/mae": float(np.mean(np.abs(out[:, 0] - y))),
            }
        y = np.asarray(y, dtype=np.int64)
        scores = {f"{split}/loss": float(-np.mean(np.log(np.clip(out[np.arange(len(y)), y], _EPS, 1.0))))}
        if split == "val":
            scores["val/acc"] = float(np.mean(out.argmax(1) == y))
        return scores

    def _predict_one(self, key: str, X: np.ndarray) -> np.ndarray:
        out = self.boosters[key].predict(X, num_iteration=self.best_iterations[key])
        if self.task.kind == "binary":
            return np.column_stack([1.0 - out, out])
        return out if out.ndim == 2 else out[:, None]

    def _mix(self, X: np.ndarray, post: np.ndarray) -> np.ndarray:
        outputs = {key: self._predict_one(key, X) for key in set(self.regime_model)}
        return sum(post[:, [k]] * outputs[key] for k, key in enumerate(self.regime_model))

    def predict_proba(self, data: Rows) -> np.ndarray:
        X = data.tabular()
        out = self._mix(X, self._posterior(X))
        if self.task.is_classification:
            out = out / out.sum(1, keepdims=True)
        return out

    def save(self, directory: Path) -> None:
        save_file(gmm_to_arrays(self.gmm), str(directory / _GMM))
        for key, booster in self.boosters.items():
            booster.save_model(str(directory / f"{key}.txt"), num_iteration=self.best_iterations[key])
        (directory / _META).write_text(
            json.dumps(
                {
                    "params": self.params,
                    "n_components": self.n_components,
                    "covariance_type": self.covariance_type,
                    "columns": self.columns,
                    "max_rows": self.max_rows,
                    "min_regime_rows": self.min_regime_rows,
                    "gmm_max_iter": self.gmm_max_iter,
                    "reg_covar": self.reg_covar,
                    "n_estimators": self.n_estimators,
                    "early_stopping_rounds": self.early_stopping_rounds,
                    "seed": self.seed,
                    "task": vars(self.task),
                    "best_iterations": self.best_iterations,
                    "regime_model": self.regime_model,
                }
            )
        )

    @classmethod
    def load(cls, directory: Path) -> "GMMRegimeModel":
        meta = json.loads((directory / _META).read_text())
        model = cls(
            meta["params"],
            meta["n_components"],
            meta["covariance_type"],
            meta["columns"],
            meta["max_rows"],
            meta["min_regime_rows"],
            meta["gmm_max_iter"],
            meta["reg_covar"],
            meta["n_estimators"],
            meta["early_stopping_rounds"],
            meta["seed"],
            Task(**meta["task"]),
        )
        model.gmm = gmm_from_arrays(load_file(str(directory / _GMM)), model.covariance_type)
        model.best_iterations = {k: int(v) for k, v in meta["best_iterations"].items()}
        for key in [*model.best_iterations, *meta["regime_model"]]:  # keys name files: only the ones fit() makes
            if not isinstance(key, str) or not _BOOSTER_KEY.match(key):
                raise UserError(f"booster key {str(key)[:80]!r} is not {_GLOBAL} or regime_<n>", str(directory / _META))
        model.boosters = {k: lgb.Booster(model_file=str(directory / f"{k}.txt")) for k in model.best_iterations}
        model.regime_model = list(meta["regime_model"])
        return model

    def n_parameters(self) -> int:
        """Mixture parameters plus fitted leaf values of every kept tree."""
        gmm = sum(getattr(self.gmm, name).size for name in ("weights_", "means_", "covariances_"))
        leaves = sum(
            t["num_leaves"]
            for key, b in self.boosters.items()
            for t in b.dump_model(num_iteration=self.best_iterations[key])["tree_info"]
        )
        return int(gmm + leaves)

    def feature_importance(self, names: list[str]) -> dict:
        """Gain summed over the boosters in use, each weighted by the training share of the regimes it serves."""
        share = np.asarray(self.gmm.weights_)
        gain = np.zeros(len(names))
        for k, key in enumerate(self.regime_model):
            g = self.boosters[key].feature_importance("gain", iteration=self.best_iterations[key])
            gain += share[k] * g / (g.sum() or 1.0)
        total = gain.sum() or 1.0
        return {"kind": "gain", "values": {n: float(v / total) for n, v in zip(names, gain)}}
