"""Ensemble of families trained in the same fit (e.g. LightGBM + XGBoost + CatBoost), combined by
weights on the simplex (``average``) or by a logistic regression on the members' outputs (``stacking``).

Members are family names: each is built through the project's family list (``models.families``) from the
small member config embedded in the ensemble config, each fitted on the training rows and early-stopped on
the validation rows through its own native callbacks.

Honesty note: the combination (weights or stacker) is fitted on the same validation rows the members
early-stop on, so after the fit ``val`` metrics are in-sample for the combiner and val is no longer a clean
early-stopping / model-selection set. The test split is never seen by any part of the fit; judge the
ensemble on test metrics only.

Combination, with p_m the member outputs on a row:
  average:  p = sum_m w_m p_m, w >= 0, sum w = 1, w minimising val log loss (MSE for regression; SLSQP from
            equal weights; never worse than the best single member on val, which is a vertex of the simplex)
  stacking: classification: softmax(b + W [log p_1, ..., log p_M]) - a multinomial logistic regression
            (L2, C = ``stacking_C``) on the members' log-probabilities; regression: least squares on p_m.
Saved as: members/<name>/ in each member's native format + ensemble.json (weights or stacker coefficients,
member family names; loading resolves them through the family list, never a class path from the file).
"""

import json
from pathlib import Path

import numpy as np
from omegaconf import DictConfig, OmegaConf
from scipy.optimize import minimize
from sklearn.linear_model import LogisticRegression

from core.errors import UserError
from models.base import CandleModel, FitContext, FitReport, Rows, Task
from models.composite import log_loss, member_context
from models.families import family_class, family_target

_META = "ensemble.json"
_MEMBERS = "members"
_TASKS = ("binary", "multiclass", "regression")
_METHODS = ("average", "stacking")
_EPS = 1e-7


def _loss(task: Task, out: np.ndarray, y: np.ndarray) -> float:
    return log_loss(out, y) if task.is_classification else float(np.mean((out[:, 0] - y) ** 2))


def simplex_weights(outputs: list[np.ndarray], y: np.ndarray, task: Task) -> np.ndarray:
    """Non-negative weights summing to 1 that minimise the loss of the weighted average on (outputs, y)."""
    k = len(outputs)
    stack = np.stack(outputs)  # (k, n, c)

    def objective(w):
        return _loss(task, np.tensordot(w, stack, axes=1), y)

    start = np.full(k, 1.0 / k)
    res = minimize(
        objective,
        start,
        method="SLSQP",
        bounds=[(0.0, 1.0)] * k,
        constraints=[{"type": "eq", "fun": lambda w: np.sum(w) - 1.0}],
        options={"ftol": 1e-10, "maxiter": 200},
    )
    w = np.where(res.x > 1e-9, res.x, 0.0)  # SLSQP leaves ~1e-17 residues on the bounds
    w = w / w.sum() if w.sum() > 0 else start
    # the optimiser may stop short; a single member (a vertex) or equal weights are candidates too
    candidates = [w, start, *np.eye(k)]
    return min(candidates, key=objective)


def stacking_inputs(outputs: list[np.ndarray], task: Task) -> np.ndarray:
    if not task.is_classification:
        return np.column_stack([o[:, 0] for o in outputs])
    logs = [np.log(np.clip(o, _EPS, 1.0)) for o in outputs]
    if task.kind == "binary":  # log-odds of up: one column per member
        return np.column_stack([lg[:, 1] - lg[:, 0] for lg in logs])
    return np.concatenate(logs, axis=1)


def stacking_apply(coef: np.ndarray, intercept: np.ndarray, Z: np.ndarray, task: Task) -> np.ndarray:
    z = Z @ coef.T + intercept
    if not task.is_classification:
        return z[:, :1]
    if task.kind == "binary":
        up = 1.0 / (1.0 + np.exp(-z[:, 0]))
        return np.column_stack([1.0 - up, up])
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


class EnsembleModel(CandleModel):
    input = "tabular"

    def __init__(self, names: list[str], method: str, task: Task = Task(), stacking_c: float = 1.0):
        self.names = list(names)
        self.method = method
        self.task = task
        self.stacking_c = float(stacking_c)
        self.members: dict[str, CandleModel] = {}
        self.member_totals: dict[str, int] = {}
        self.weights: np.ndarray | None = None
        self.coef: np.ndarray | None = None
        self.intercept: np.ndarray | None = None

    @classmethod
    def from_config(
        cls, cfg: DictConfig, n_features: int, seed: int, num_threads: int, task: Task = Task()
    ) -> "EnsembleModel":
        if task.kind not in _TASKS:
            raise UserError(f"{cfg.name} supports {', '.join(_TASKS)}, not {task.kind}", "target.type")
        if cfg.method not in _METHODS:
            raise UserError(f"model.method must be one of {', '.join(_METHODS)}, got {cfg.method!r}", "model.method")
        names = [str(n) for n in cfg.members]
        if len(names) < 2 or len(set(names)) != len(names):
            raise UserError(f"an ensemble needs two or more distinct members, got {names}", "model.members")
        model = cls(names, str(cfg.method), task, float(cfg.stacking_C))
        for name in names:
            member_cls = family_class(name, "model.members")
            member_cfg = cfg.member_configs.get(name)
            if member_cfg is None:
                raise UserError(f"member {name!r} has no config in model.member_configs", "model.member_configs")
            if member_cfg.get("_target_") not in (None, family_target(name)):
                raise UserError(
                    f"member {name}: _target_ {member_cfg._target_} is not the family's class {family_target(name)}",
                    f"model.member_configs.{name}._target_",
                )
            member_cfg = OmegaConf.create({**OmegaConf.to_container(member_cfg, resolve=True), "name": name})
            model.members[name] = member_cls.from_config(member_cfg, n_features, seed, num_threads, task=task)
            model.member_totals[name] = int(member_cfg.get("n_estimators") or member_cfg.get("max_epochs") or 0)
        return model

    def fit(self, train: Rows, val: Rows, ctx: FitContext) -> FitReport:
        total = sum(self.member_totals.values()) or None
        metrics: dict = {"members": {}}
        history: dict[str, list[float]] = {}
        offset, cancelled_at, fitted = 0, None, {}
        for name, member in self.members.items():
            report = member.fit(train, val, member_context(ctx, offset, total or 0))
            fitted[name] = member
            metrics["members"][name] = report.metrics
            for key, values in report.history.items():
                history[f"{name}/{key}"] = list(values)
            if report.cancelled:  # the members fitted so far (the last one partial) still form a model
                at = report.metrics.get("cancelled_at", {}).get("iteration", 0)
                cancelled_at = {"iteration": offset + int(at)}
                metrics["cancelled_member"] = name
                break
            offset += self.member_totals[name]
        self.members = fitted
        self.names = list(fitted)
        outputs = [m.predict_proba(val) for m in fitted.values()]
        if len(outputs) == 1:
            self.method, self.weights = "average", np.ones(1)
        elif self.method == "average":
            self.weights = simplex_weights(outputs, val.y, self.task)
        else:
            self._fit_stacker(outputs, val.y, ctx.seed)
        out_val = self._combine(outputs)
        out_train = self._combine([m.predict_proba(train) for m in fitted.values()])
        member_val = {name: _loss(self.task, o, val.y) for name, o in zip(fitted, outputs)}
        metrics.update(
            {
                "method": self.method,
                "member_val_loss": member_val,
                "train/loss": _loss(self.task, out_train, train.y),
                "val/loss": _loss(self.task, out_val, val.y),
            }
        )  # in-sample for the combiner
        if self.weights is not None:
            metrics["weights"] = dict(zip(self.names, map(float, self.weights)))
        if self.task.is_classification:
            metrics["val/acc"] = float(np.mean(out_val.argmax(1) == val.y))
        else:
            metrics["val/mae"] = float(np.mean(np.abs(out_val[:, 0] - val.y)))
        if cancelled_at is not None:
            metrics["cancelled_at"] = cancelled_at
        return FitReport(metrics=metrics, cancelled=cancelled_at is not None, history=history)

    def _fit_stacker(self, outputs: list[np.ndarray], y: np.ndarray, seed: int) -> None:
        Z = stacking_inputs(outputs, self.task)
        if self.task.is_classification:
            lr = LogisticRegression(C=self.stacking_c, max_iter=1000, random_state=seed).fit(Z, y)
            if len(lr.classes_) != self.task.n_classes:
                raise UserError(
                    f"stacking needs every class in the validation rows, found {lr.classes_.tolist()}", "model.method"
                )
            self.coef, self.intercept = lr.coef_.astype(np.float64), lr.intercept_.astype(np.float64)
        else:
            A = np.column_stack([Z, np.ones(len(Z))])
            sol, *_ = np.linalg.lstsq(A, y.astype(np.float64), rcond=None)
            self.coef, self.intercept = sol[None, :-1], sol[-1:]

    def _combine(self, outputs: list[np.ndarray]) -> np.ndarray:
        if self.method == "average":
            return np.tensordot(self.weights, np.stack(outputs), axes=1)
        return stacking_apply(self.coef, self.intercept, stacking_inputs(outputs, self.task), self.task)

    def predict_proba(self, data: Rows) -> np.ndarray:
        return self._combine([m.predict_proba(data) for m in self.members.values()])

    def save(self, directory: Path) -> None:
        meta = {
            "names": self.names,
            "method": self.method,
            "task": vars(self.task),
            "stacking_C": self.stacking_c,
            "families": {},
            "weights": None if self.weights is None else self.weights.tolist(),
            "coef": None if self.coef is None else self.coef.tolist(),
            "intercept": None if self.intercept is None else self.intercept.tolist(),
        }
        for name, member in self.members.items():
            sub = directory / _MEMBERS / name
            sub.mkdir(parents=True, exist_ok=True)
            member.save(sub)
            meta["families"][name] = name  # a member is named by its family
        (directory / _META).write_text(json.dumps(meta, indent=2))

    @classmethod
    def load(cls, directory: Path) -> "EnsembleModel":
        meta = json.loads((directory / _META).read_text())
        model = cls(meta["names"], meta["method"], Task(**meta["task"]), meta["stacking_C"])
        where = str(directory / _META)
        for name in meta["names"]:
            family = (meta.get("families") or {}).get(name, name)
            member_cls = family_class(family, where)  # also keeps ``name`` a plain folder name
            old = (meta.get("targets") or {}).get(name)  # ensembles saved before members were family names
            if family != name or (old is not None and old != family_target(family, where)):
                raise UserError(
                    f"member {str(name)[:80]!r} names {str(old or family)[:120]!r}, not the class of family {name}",
                    where,
                )
            model.members[name] = member_cls.load(directory / _MEMBERS / name)
        if meta["weights"] is not None:
            model.weights = np.asarray(meta["weights"], dtype=np.float64)
        if meta["coef"] is not None:
            model.coef = np.asarray(meta["coef"], dtype=np.float64)
            model.intercept = np.asarray(meta["intercept"], dtype=np.float64)
        return model

    def n_parameters(self) -> int:
        own = self.weights.size if self.weights is not None else self.coef.size + self.intercept.size
        return int(sum(m.n_parameters() for m in self.members.values()) + own)

    def feature_importance(self, names: list[str]) -> dict | None:
        """The members' normalised importances, averaged with the ensemble weights (equal when stacking)."""
        parts = [(m.feature_importance(names), name) for name, m in self.members.items()]
        if any(p is None for p, _ in parts):
            return None
        w = self.weights if self.weights is not None else np.full(len(parts), 1.0 / len(parts))
        values = {n: float(sum(wi * p["values"].get(n, 0.0) for wi, (p, _) in zip(w, parts))) for n in names}
        return {"kind": "weighted_member_importance", "values": values}
