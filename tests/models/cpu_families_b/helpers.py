"""Fast and slow settings, planted-signal rows, a fit context and save/reload for ngboost, reward_based,
ensemble and meta_learning."""

import dataclasses
from pathlib import Path

import numpy as np
from hydra.utils import get_class

from callbacks.progress import ProgressReporter
from models.base import FitContext, Rows, Task
from tests.conftest import make_cfg
from trainer.model_dir import check_model_files

# overrides that keep each family's fit to a second or two on the tiny data below
FAST = {
    "ngboost": [
        "model.n_estimators=60",
        "model.early_stopping_rounds=10",
        "model.learning_rate=0.1",
        "model.min_samples_leaf=20",
    ],
    "reward_based": [
        "model.hidden=16",
        "model.max_epochs=12",
        "model.batch_size=256",
        "model.lr=0.01",
        "model.patience=3",
    ],
    "ensemble": [f"model.member_configs.{m}.n_estimators=60" for m in ("lightgbm", "xgboost", "catboost")]
    + [f"model.member_configs.{m}.early_stopping_rounds=10" for m in ("lightgbm", "xgboost", "catboost")]
    + ["model.member_configs.lightgbm.params.min_child_samples=20"],
    "meta_learning": [
        "model.primary.n_estimators=60",
        "model.secondary.n_estimators=40",
        "model.primary.params.min_child_samples=20",
        "model.secondary.params.min_child_samples=20",
        "model.purge_rows=5",
    ],
}
# overrides under which a fit runs long enough to be cancelled at round/batch 12
SLOW = {
    "ngboost": [
        "model.n_estimators=60",
        "model.early_stopping_rounds=60",
        "model.learning_rate=0.01",
        "model.min_samples_leaf=20",
    ],
    "reward_based": ["model.hidden=16", "model.max_epochs=20", "model.batch_size=128", "model.patience=20"],
    # lightgbm's 8 rounds, then xgboost's rounds continue the count: 12 is xgboost's 4th round
    "ensemble": [
        "model.member_configs.lightgbm.n_estimators=8",
        "model.member_configs.lightgbm.early_stopping_rounds=8",
        "model.member_configs.xgboost.n_estimators=60",
        "model.member_configs.xgboost.early_stopping_rounds=60",
        "model.member_configs.xgboost.params.learning_rate=0.001",
        "model.member_configs.catboost.n_estimators=20",
    ],
    "meta_learning": [
        "model.primary.n_estimators=60",
        "model.primary.early_stopping_rounds=60",
        "model.primary.params.learning_rate=0.001",
        "model.primary.params.min_child_samples=20",
    ],
}
FAMILIES = sorted(FAST)


@dataclasses.dataclass
class AuxRows(Rows):
    """Rows with the forward return attached, whether or not models.base.Rows has ``aux`` yet."""

    aux: dict | None = None


def planted(n=3000, f=6, seed=0, kind="binary"):
    """Time-ordered train/val/test rows; the label (and the forward return) follow feature 0."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, f)).astype(np.float32)
    ret = 0.002 * X[:, 0] + 0.002 * rng.standard_normal(n)
    if kind == "binary":
        y = (ret > 0).astype(np.int64)
    elif kind == "multiclass":
        y = np.digitize(ret, [-0.001, 0.001]).astype(np.int64)
    else:
        y = ret * 1000.0
    cuts = [int(n * 0.6), int(n * 0.8)]
    parts = np.split(np.arange(n), cuts)
    return tuple(AuxRows(X, idx, y[idx], aux={"forward_return": ret[idx]}) for idx in parts)


def context(tmp_path: Path, sinks=None, token=None, every=5, hooks=True) -> FitContext:
    cfg = make_cfg(f"callbacks.progress.every_n_batches={every}")
    return FitContext(
        run_dir=tmp_path,
        seed=0,
        reporter=ProgressReporter(sinks if sinks is not None else []),
        token=token,
        callbacks=cfg.callbacks,
        trainer=cfg.trainer,
        hooks=hooks,
    )


def build(family: str, *overrides: str, task: Task = Task(), n_features: int = 6):
    cfg = make_cfg(f"model={family}", *overrides)
    return get_class(cfg.model._target_).from_config(cfg.model, n_features, seed=0, num_threads=1, task=task)


def reload(model, tmp_path: Path):
    out = tmp_path / "saved"
    out.mkdir()
    model.save(out)
    assert not list(out.rglob("*.pkl")) and not list(out.rglob("*.joblib"))
    check_model_files(out)  # only formats the loader accepts from an untrusted folder
    return type(model).load(out)
