"""Family-level behaviour: logits without a sigmoid, best (not last) weights, native save/load."""

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from callbacks.progress import ProgressReporter
from models.base import FitContext, Rows
from models.lightgbm import LightGBMModel
from models.lstm import LSTMModel
from tests.conftest import make_cfg


def _noise_rows(n=3000, f=6, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, f)).astype(np.float32)
    y = rng.integers(0, 2, n)
    start = 40
    train = Rows(X, np.arange(start, 2000), y[start:2000])
    val = Rows(X, np.arange(2100, n), y[2100:])
    return train, val


def _adamw(lr: float) -> dict:
    return {"_target_": "torch.optim.AdamW", "_partial_": True, "lr": lr}


def _ctx(tmp_path: Path) -> FitContext:
    cfg = make_cfg()
    return FitContext(
        run_dir=tmp_path,
        seed=0,
        reporter=ProgressReporter([]),
        callbacks=cfg.callbacks,
        trainer=cfg.trainer,
        device=OmegaConf.create({"accelerator": "cpu", "devices": 1, "precision": "32-true", "name": "cpu"}),
    )


def test_lstm_head_emits_logits_and_probabilities_use_one_softmax():
    """Pitfall: a sigmoid at the head followed by a with-logits loss (double sigmoid)."""
    model = LSTMModel({"n_features": 4, "window": 10, "hidden": 8, "layers": 1, "dropout": 0.0})
    net = model.net
    assert not any(isinstance(m, (torch.nn.Sigmoid, torch.nn.Softmax, torch.nn.LogSoftmax)) for m in net.modules())
    torch.manual_seed(0)
    with torch.no_grad():
        net.head.bias.fill_(3.0)  # push logits outside [0, 1]
        x = torch.randn(64, 10, 4)
        logits = net(x)
    assert logits.shape == (64, 2) and logits.max() > 1.0
    y = torch.randint(0, 2, (64,))
    assert torch.allclose(net.loss(logits, y), F.cross_entropy(logits, y))
    feats = x.reshape(-1, 4).numpy()
    ends = np.arange(9, len(feats), 10)
    proba = model.predict_proba(Rows(feats, ends))
    np.testing.assert_allclose(proba, torch.softmax(logits, 1).numpy(), atol=1e-6)
    np.testing.assert_allclose(proba.sum(1), 1.0, atol=1e-6)


def test_lstm_keeps_the_best_epoch_not_the_last(tmp_path):
    """Pitfall: 'restore best weights' that restores the last ones."""
    train, val = _noise_rows()
    model = LSTMModel(
        {"n_features": 6, "window": 8, "hidden": 64, "layers": 1, "dropout": 0.0},
        {"batch_size": 64, "max_epochs": 6, "patience": 6, "seed": 0, "optimizer": _adamw(0.02)},
    )
    report = model.fit(train, val, _ctx(tmp_path))
    history = report.history["val/loss"]
    best = int(np.argmin(history))
    assert report.metrics["best_epoch"] == best
    assert best != len(history) - 1, "setup must overfit so that best != last; otherwise the test proves nothing"
    best_ckpt = torch.load(report.metrics["best_checkpoint"], weights_only=True)["state_dict"]
    last_ckpt = torch.load(tmp_path / "checkpoints" / "latest.ckpt", weights_only=True)["state_dict"]
    assert torch.load(tmp_path / "checkpoints" / "latest.ckpt", weights_only=True)["epoch"] == len(history) - 1
    held = model.net.state_dict()
    assert all(torch.equal(held[k], best_ckpt[k]) for k in held)
    assert not all(torch.equal(held[k], last_ckpt[k]) for k in held)
    # The saved model holds the best weights too.
    out = tmp_path / "saved"
    out.mkdir()
    model.save(out)
    again = LSTMModel.load(out)
    assert all(torch.equal(again.net.state_dict()[k], best_ckpt[k]) for k in held)


def test_lightgbm_early_stops_on_validation_and_reloads_identically(tmp_path):
    rng = np.random.default_rng(1)
    X = rng.standard_normal((4000, 5)).astype(np.float32)
    y = ((X[:, 0] + 0.8 * rng.standard_normal(4000)) > 0).astype(int)
    train, val = Rows(X, np.arange(0, 3000), y[:3000]), Rows(X, np.arange(3000, 4000), y[3000:])
    cfg = make_cfg("model=lightgbm", "model.n_estimators=400", "model.early_stopping_rounds=20")
    model = LightGBMModel.from_config(cfg.model, 5, seed=0, num_threads=1)
    report = model.fit(train, val, _ctx(tmp_path))
    assert report.metrics["best_iteration"] < report.metrics["iterations_run"] <= 400
    assert report.metrics["val/acc"] > 0.7
    model.save(tmp_path)
    again = LightGBMModel.load(tmp_path)
    np.testing.assert_array_equal(model.predict_proba(val), again.predict_proba(val))
    imp = model.feature_importance([f"f{i}" for i in range(5)])
    assert max(imp["values"], key=imp["values"].get) == "f0"


def test_lstm_fit_in_a_reused_run_folder_ignores_old_checkpoints(tmp_path):
    train, val = _noise_rows()
    opts = {"batch_size": 256, "max_epochs": 2, "patience": 2, "seed": 0, "optimizer": _adamw(0.01)}
    arch = {"n_features": 6, "window": 8, "hidden": 8, "layers": 1, "dropout": 0.0}
    LSTMModel(arch, opts).fit(train, val, _ctx(tmp_path))
    second_model = LSTMModel(arch, opts)
    second = second_model.fit(train, val, _ctx(tmp_path))
    assert second.metrics["best_epoch"] == int(np.argmin(second.history["val/loss"]))
    best = torch.load(second.metrics["best_checkpoint"], weights_only=True)["state_dict"]
    assert all(torch.equal(second_model.net.state_dict()[k], best[k]) for k in best)
