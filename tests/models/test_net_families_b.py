"""Multitask, VAE and GAN families: end to end with reload parity and cancellation, plus what makes each
one what its name says (three losses, an ELBO, two adversarial optimisers)."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from omegaconf import OmegaConf

from callbacks.cancel import CancellationToken
from callbacks.progress import ProgressReporter
from models.base import FitContext, Rows, Task
from models.gan import GANModel
from models.multitask import MultitaskModel
from models.vae import VAEModel
from tests.conftest import make_cfg
from tests.trainer.test_pipeline import _assert_reload_parity
from trainer import train

FAST = {
    "multitask": ["model=multitask", "model.hidden=16", "model.window=16"],
    "vae": ["model=vae", "model.hidden=16", "model.window=16", "model.latent=8"],
    "gan": ["model=gan", "model.hidden=16", "model.window=16", "model.latent=8"],
}
DATA = ["data.rows=20000", "trainer.num_threads=2", "model.batch_size=512"]
CLASSES = {"multitask": MultitaskModel, "vae": VAEModel, "gan": GANModel}
ARCH = {"n_features": 5, "window": 8, "hidden": 8, "layers": 1, "dropout": 0.0, "latent": 4}


def _logged_run(family: str, tmp_path_factory):
    """A 3-epoch run with the CSV logger, so the logged per-epoch training curves can be read back."""
    run_dir = tmp_path_factory.mktemp(family)
    cfg = make_cfg(*FAST[family], *DATA, "model.max_epochs=3", "model.patience=3", "logger=csv", run_dir=run_dir)
    result = train(cfg)
    metrics = pd.read_csv(run_dir / "logs" / "metrics.csv")
    return cfg, result, metrics.dropna(subset=["train/loss"]).sort_values("epoch")


@pytest.fixture(scope="module")
def multitask_run(tmp_path_factory):
    return _logged_run("multitask", tmp_path_factory)


@pytest.fixture(scope="module")
def vae_run(tmp_path_factory):
    return _logged_run("vae", tmp_path_factory)


@pytest.fixture(scope="module")
def gan_run(tmp_path_factory):
    return _logged_run("gan", tmp_path_factory)


def _rows(n=1200, f=5, n_classes=2, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, f)).astype(np.float32)
    y = rng.integers(0, n_classes, n) if n_classes else rng.standard_normal(n)
    aux = {"forward_return": rng.normal(0.001, 0.01, n), "forward_volatility": rng.gamma(2.0, 0.005, n)}

    def part(lo, hi):
        return Rows(X, np.arange(lo, hi), y[lo:hi], {k: v[lo:hi] for k, v in aux.items()})

    return part(20, 900), part(920, n)


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


def _opts(epochs=1):
    return {
        "batch_size": 128,
        "max_epochs": epochs,
        "patience": 3,
        "seed": 0,
        "optimizer": {"_target_": "torch.optim.AdamW", "_partial_": True, "lr": 1e-3},
    }


@pytest.mark.parametrize("family", sorted(FAST))
def test_family_completes_and_reloads_with_identical_predictions(request, family):
    cfg, result, _ = request.getfixturevalue(f"{family}_run")
    assert result.status == "completed" and result.model_info.family == family
    assert Path(result.model_path, "model.safetensors").is_file()
    _assert_reload_parity(cfg, result, atol=1e-6)


@pytest.mark.parametrize("family", sorted(FAST))
def test_family_cancelled_mid_epoch_by_token(tmp_path, family):
    token = CancellationToken()
    steps = []

    def on_event(event):
        if event.kind == "step":
            steps.append(event)
            if event.batch >= 4:
                token.cancel("test")

    cfg = make_cfg(
        *FAST[family],
        *DATA,
        "model.batch_size=256",
        "model.max_epochs=2",
        "logger=none",
        "callbacks.progress.every_n_batches=2",
        "callbacks.cancel.check_every_n_batches=3",
        run_dir=tmp_path,
    )
    result = train(cfg, progress_callback=on_event, cancellation_token=token)
    assert result.status == "cancelled" and result.model_path is None
    stopped = result.training_metrics["cancelled_at"]
    assert stopped["epoch"] == 0 and 4 <= stopped["batch"] < steps[-1].batches
    # one step of progress per batch, even where a batch takes two optimiser steps (GAN)
    assert [e.iteration for e in steps] == [e.batch for e in steps]
    assert "state_dict" in torch.load(result.artifacts.checkpoint, weights_only=True)


@pytest.mark.parametrize(
    "family,kind,n_classes",
    [
        ("multitask", "binary", 2),
        ("multitask", "multiclass", 3),
        ("vae", "binary", 2),
        ("vae", "multiclass", 3),
        ("vae", "regression", None),
        ("gan", "binary", 2),
        ("gan", "multiclass", 3),
    ],
)
def test_every_listed_task_fits_and_reloads(tmp_path, family, kind, n_classes):
    assert kind in make_cfg(f"model={family}").model.tasks
    train_rows, val_rows = _rows(n_classes=n_classes)
    model = CLASSES[family](ARCH, _opts(), Task(kind, n_classes))
    assert model.fit(train_rows, val_rows, _ctx(tmp_path)).cancelled is False
    proba = model.predict_proba(val_rows)
    assert proba.shape == (len(val_rows.rows), n_classes or 1) and np.isfinite(proba).all()
    if n_classes:
        np.testing.assert_allclose(proba.sum(1), 1.0, atol=1e-6)
    model.save(tmp_path)
    np.testing.assert_array_equal(type(model).load(tmp_path).predict_proba(val_rows), proba)


def test_gan_refuses_regression():
    with pytest.raises(ValueError, match="regression"):
        GANModel(ARCH, _opts(), Task("regression", None))


def test_multitask_logs_each_weighted_loss_component(multitask_run):
    cfg, _, epochs = multitask_run
    parts = {name: epochs[f"train/loss_{name}"].to_numpy() for name in ("target", "forward_return", "volatility")}
    assert all(np.isfinite(v).all() and (v > 0).all() for v in parts.values())
    w = cfg.model.loss_weights
    weighted = sum(w[name] * parts[name] for name in parts)
    np.testing.assert_allclose(epochs["train/loss"].to_numpy(), weighted, rtol=1e-5)


def test_multitask_aux_heads_receive_gradients():
    model = MultitaskModel(ARCH, _opts(), Task())
    net = model.net
    x, labels = torch.randn(32, 8, 5), torch.cat([torch.randint(0, 2, (32, 1)).float(), torch.randn(32, 2)], 1)
    _, losses = net.components(x, labels)
    sum(net.loss_weights[k] * v for k, v in losses.items()).backward()
    for head in (net.return_head, net.volatility_head, net.head):
        assert head.weight.grad is not None and head.weight.grad.abs().sum() > 0


def test_multitask_aux_standardisation_comes_from_train_rows_and_reloads(tmp_path):
    train_rows, val_rows = _rows()
    model = MultitaskModel({**ARCH, "loss_weights": {"volatility": 0.0}}, _opts(), Task())
    assert model.net.loss_weights == {"target": 1.0, "forward_return": 0.5, "volatility": 0.0}
    model.fit(train_rows, val_rows, _ctx(tmp_path))
    aux = np.column_stack([train_rows.aux["forward_return"], train_rows.aux["forward_volatility"]])
    np.testing.assert_allclose(model.net.aux_mean.numpy(), aux.mean(0), rtol=1e-5)
    np.testing.assert_allclose(model.net.aux_std.numpy(), aux.std(0), rtol=1e-5)
    model.save(tmp_path)
    again = MultitaskModel.load(tmp_path)
    assert torch.equal(again.net.aux_mean, model.net.aux_mean) and torch.equal(again.net.aux_std, model.net.aux_std)
    with pytest.raises(ValueError, match="loss_weights"):
        MultitaskModel({**ARCH, "loss_weights": {"price": 1.0}}, _opts(), Task())


def test_vae_elbo_decreases_with_a_positive_kl(vae_run):
    epochs = vae_run[2]
    assert (epochs["train/kl"] > 0).all()
    elbo = epochs["train/elbo"].to_numpy()
    assert elbo[-1] < elbo[0]
    np.testing.assert_allclose(elbo, epochs["train/recon"] + epochs["train/kl"], rtol=1e-5)  # beta = 1


def test_vae_reconstructs_the_window_and_predicts_from_the_mean():
    model = VAEModel(ARCH, _opts(), Task())
    net = model.net.eval()
    x = torch.randn(16, 8, 5)
    with torch.no_grad():
        mu, logvar = net.body.encode(x)
        assert mu.shape == logvar.shape == (16, ARCH["latent"])
        assert net.body.decode(mu).shape == x.shape
        assert torch.equal(net(x), net.head(mu)) and torch.equal(net(x), net(x))  # deterministic at inference


def test_gan_logs_adversarial_and_class_losses(gan_run):
    epochs = gan_run[2]
    for name in ("train/d_loss", "train/g_loss", "train/cls_loss"):
        assert np.isfinite(epochs[name]).all() and (epochs[name] > 0).all()
    assert (epochs["train/d_loss"] > epochs["train/cls_loss"]).all()  # the class loss is part of D's objective


def test_gan_steps_both_generator_and_discriminator(tmp_path):
    train_rows, val_rows = _rows()
    halve_each_epoch = {"_target_": "torch.optim.lr_scheduler.StepLR", "_partial_": True, "step_size": 1, "gamma": 0.5}
    model = GANModel(ARCH, {**_opts(), "scheduler": halve_each_epoch}, Task())
    net = model.net
    assert net.automatic_optimization is False
    before = {k: v.clone() for k, v in net.state_dict().items()}
    model.fit(train_rows, val_rows, _ctx(tmp_path))
    after = net.state_dict()
    for part in ("body.generator.", "body.discriminator.", "adversary.", "head."):
        keys = [k for k in before if k.startswith(part)]
        assert keys and any(not torch.equal(before[k], after[k]) for k in keys), part
    assert [o.param_groups[0]["lr"] for o in net.trainer.optimizers] == [5e-4, 5e-4]  # both schedulers stepped
    with torch.no_grad():
        assert net.sample(7).shape == (7, ARCH["window"], ARCH["n_features"])


def test_gan_resumes_a_cancelled_fit_with_both_optimisers(tmp_path):
    common = [
        *FAST["gan"],
        *DATA,
        "model.batch_size=256",
        "model.max_epochs=3",
        "model.patience=10",
        "logger=none",
        f"paths.output_dir={tmp_path}",
    ]
    token = CancellationToken()

    def cancel_in_epoch_1(event):
        if event.kind == "step" and event.epoch == 1:
            token.cancel("test")

    cut = train(
        make_cfg(*common, run_dir=tmp_path / "runs" / "cut"),
        progress_callback=cancel_in_epoch_1,
        cancellation_token=token,
    )
    assert cut.status == "cancelled" and cut.training_metrics["epochs_completed"] == 1
    for name in ("latest.ckpt", "cancelled.ckpt"):  # the epoch-end state and the mid-epoch one it stopped at
        saved = torch.load(tmp_path / "runs" / "cut" / "checkpoints" / name, weights_only=True)
        assert len(saved["optimizer_states"]) == 2
    resumed = train(make_cfg(*common, "resume=true", run_dir=tmp_path / "runs" / "resumed"))
    assert resumed.status == "completed" and resumed.training_metrics["epochs_run"] == 3
    # the newer of the two: the batch the cancel stopped at, not the start of its epoch
    assert resumed.training_metrics["resumed_from"].endswith("cancelled.ckpt")
