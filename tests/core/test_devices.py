"""Device selection on a machine without a GPU (CI), and what each family asks of a GPU when one is asked for."""

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from core.devices import resolve_device, tree_gpu
from core.errors import UserError
from models.base import FitContext, Rows, Task
from tests.conftest import make_cfg

pytestmark = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU fallback")


def test_auto_falls_back_to_cpu_with_full_precision():
    dev = resolve_device(make_cfg("device=auto").device, "gpu")
    assert (dev.accelerator, dev.precision, dev.strategy, dev.requested) == ("cpu", "32-true", "auto", "auto")
    assert not tree_gpu(dev)


def test_gpu_without_a_gpu_is_a_user_error():
    with pytest.raises(UserError, match="no CUDA GPU") as err:
        resolve_device(make_cfg("device=gpu").device, "gpu")
    assert err.value.where == "device"


def test_strategy_and_precision_choices_are_checked():
    from trainer.checks import check_config

    with pytest.raises(UserError) as err:
        check_config(make_cfg("device.strategy=horovod"))
    assert err.value.where == "device.strategy"
    check_config(make_cfg("device=gpu", "device.strategy=ddp", "device.devices=2", "device.precision=bf16-mixed"))


def _rows(n=400, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, 4)).astype(np.float32)
    y = (X[:, 0] + 0.5 * rng.standard_normal(n) > 0).astype(np.int64)
    return Rows(features=X, rows=np.arange(n), y=y)


@pytest.mark.parametrize(
    "requested,gpu,expect", [("gpu", "cuda:0", "cuda:0"), ("gpu", "cuda:2", "cuda:2"), ("auto", "cuda:0", "cpu")]
)
def test_xgboost_trains_on_cuda_only_when_gpu_was_asked_for(monkeypatch, tmp_path, requested, gpu, expect):
    import xgboost as xgb

    from models.xgboost import XGBoostModel

    seen = {}
    real = xgb.train

    def spy(params, *args, **kwargs):  # record what reached XGBoost; train on the CPU build here
        seen.update(params)
        return real({**params, "device": "cpu"}, *args, **kwargs)

    monkeypatch.setattr(xgb, "train", spy)
    model = XGBoostModel.from_config(make_cfg("model=xgboost", "model.n_estimators=5").model, 4, 0, 1, Task())
    device = OmegaConf.create({"requested": requested, "accelerator": "gpu", "name": "gpu", "gpu": gpu})
    ctx = FitContext(run_dir=tmp_path, seed=0, reporter=None, device=device, hooks=False)
    model.fit(_rows(), _rows(seed=1), ctx)
    assert seen["device"] == expect
    assert model.params["device"] == "cpu"  # the saved model predicts on a machine without a GPU


def test_catboost_asks_for_its_gpu_trainer_only_on_device_gpu(monkeypatch, tmp_path):
    import models.catboost as cb

    seen = []
    real = cb.CatBoostClassifier

    class Spy(real):
        def __init__(self, **params):
            seen.append(dict(params))
            params.pop("task_type", None)
            params.pop("devices", None)
            super().__init__(**params)

    monkeypatch.setattr(cb, "CatBoostClassifier", Spy)
    model = cb.CatBoostModel.from_config(make_cfg("model=catboost", "model.n_estimators=5").model, 4, 0, 1, Task())
    for requested in ("gpu", "cpu"):
        device = OmegaConf.create(
            {"requested": requested, "accelerator": "gpu" if requested == "gpu" else "cpu", "gpu": "cuda:3"}
        )
        model.fit(
            _rows(), _rows(seed=1), FitContext(run_dir=tmp_path, seed=0, reporter=None, device=device, hooks=False)
        )
    assert seen[0].get("task_type") == "GPU" and seen[0].get("devices") == "3" and "task_type" not in seen[1]


def test_window_batches_moved_together_share_one_matrix_and_yield_the_same_windows():
    from data.windows import WindowBatches

    features = torch.arange(200, dtype=torch.float32).reshape(50, 4)
    ends, labels = np.arange(9, 50), np.arange(41) % 2
    a = WindowBatches(features, ends, labels, window=5, batch_size=8, shuffle_seed=3)
    b = WindowBatches(features.clone(), ends, labels, window=5, batch_size=8, shuffle_seed=3)
    shared = b.features.to("cpu")
    b.to("cpu", shared)
    assert b.features is shared
    for (xa, ya), (xb, yb) in zip(a, b):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
        assert torch.all(xa[:, 1:, 0] - xa[:, :-1, 0] == 4)  # each window is 5 consecutive rows


def test_the_feature_matrix_goes_to_the_gpu_only_when_asked_or_when_it_fits():
    from models.nets import data_placement

    X = np.zeros((10, 3), dtype=np.float32)
    gpu = {"accelerator": "gpu", "devices": 1}
    assert data_placement(None, X) == "cpu"
    assert data_placement(OmegaConf.create({"accelerator": "cpu", "data": "gpu"}), X) == "cpu"
    assert data_placement(OmegaConf.create({**gpu, "data": "host"}), X) == "cpu"
    assert data_placement(OmegaConf.create({**gpu, "data": "gpu"}), X) == "cuda:0"
    assert data_placement(OmegaConf.create({**gpu, "gpu": "cuda:1", "data": "gpu"}), X) == "cuda:1"  # pinned job
    assert data_placement(OmegaConf.create({**gpu, "processes": 2, "data": "gpu"}), X) == "cpu"  # DDP ranks


def test_a_pinned_plan_job_resolves_to_its_own_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # resolution only: nothing runs on a GPU
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    dev = resolve_device(make_cfg("device=gpu", "device.devices=[2]").device, "gpu")
    assert (dev.gpu, dev.processes, dev.precision) == ("cuda:2", 1, "bf16-mixed")
    assert tree_gpu(dev) == "cuda:2"
    assert resolve_device(make_cfg("device=gpu").device, "gpu").gpu == "cuda:0"
    with pytest.raises(UserError, match="strategy=ddp") as err:  # several GPUs for one fit must say how
        resolve_device(make_cfg("device=gpu", "device.devices=2").device, "gpu")
    assert err.value.where == "device.devices"
