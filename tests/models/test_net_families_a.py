"""Neural families mlp, cnn1d, transformer, tab_cnn, tab_lstm, tab_transformer, fuzzy_mlp: each trains
through the pipeline, reloads to the evaluated predictions, emits raw outputs, cancels with a checkpoint;
and each body is what its name says (time vs feature axis, tokens per feature, differentiable memberships)."""

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from hydra.utils import get_class

from callbacks.cancel import CancellationToken
from core.errors import UserError
from data.providers import load_candles
from models.base import Rows, Task
from tests.conftest import FAST_DATA, make_cfg
from trainer import load_model, train

# Small variants of every family for tests (2 epochs on 20k candles).
SMALL = {
    "mlp": ["model.hidden_sizes=[16]"],
    "cnn1d": ["model.window=8", "model.channels=8", "model.layers=2"],
    "transformer": ["model.window=8", "model.d_model=16", "model.heads=2", "model.layers=1"],
    "tab_cnn": ["model.embed_dim=4", "model.channels=8", "model.layers=1"],
    "tab_lstm": ["model.embed_dim=4", "model.hidden=8"],
    "tab_transformer": ["model.d_model=16", "model.heads=2", "model.layers=1"],
    "fuzzy_mlp": ["model.hidden_sizes=[16]", "model.n_sets=2"],
}
FAMILIES = sorted(SMALL)
TABULAR = ["tab_cnn", "tab_lstm", "tab_transformer"]


def _cfg(name: str, run_dir: Path, *extra: str):
    # One thread: on a shared CPU, two threads of tiny ops wait on each other (measured: 46 s against 2 s).
    return make_cfg(
        f"model={name}",
        "model.max_epochs=2",
        "model.batch_size=1024",
        *SMALL[name],
        *FAST_DATA,
        "trainer.num_threads=1",
        *extra,
        run_dir=run_dir,
    )


def _body(name: str, n_features: int = 7, **arch):
    """The family's body as a run builds it (default config plus overrides), outside any training run."""
    cfg = make_cfg(f"model={name}").model
    cfg.merge_with(arch)
    model = get_class(cfg._target_).from_config(cfg, n_features, seed=0, num_threads=1, task=Task())
    return model.net.body, model.arch


def _input_of(module: torch.nn.Module, run) -> tuple:
    seen = []
    handle = module.register_forward_hook(lambda m, args, out: seen.append(args[0].shape))
    try:
        run()
    finally:
        handle.remove()
    assert seen, "the hooked module never ran"
    return tuple(seen[0])


@pytest.fixture(scope="module", params=FAMILIES)
def family_run(request, tmp_path_factory):
    name = request.param
    cfg = _cfg(name, tmp_path_factory.mktemp(name))
    return name, cfg, train(cfg)


def test_family_trains_through_the_pipeline(family_run):
    name, _, result = family_run
    assert result.status == "completed"
    assert result.model_info.family == name and result.model_info.n_parameters > 0
    acc = result.test_metrics["accuracy"]
    assert isinstance(acc, float) and math.isfinite(acc) and 0.0 <= acc <= 1.0
    assert result.test_metrics["n"] > 0 and math.isfinite(result.test_metrics["log_loss"])


def test_reloaded_family_reproduces_the_evaluated_predictions(family_run):
    _, cfg, result = family_run
    run_dir = Path(result.run.run_dir)
    evaluated = pd.read_parquet(run_dir / "predictions_test.parquet")
    candles = load_candles(cfg.data, ["BTC"], cfg.seed).by_symbol["BTC"]
    out = load_model(run_dir).predict_proba(candles)
    reloaded = pd.Series(out["p_up"].to_numpy(), index=candles["timestamp"]).loc[evaluated["timestamp"]]
    np.testing.assert_allclose(reloaded.to_numpy(), evaluated["p_up"].to_numpy(), rtol=0, atol=1e-6)


@pytest.mark.parametrize("name", FAMILIES)
def test_network_emits_raw_outputs_without_sigmoid_or_softmax(name):
    cfg = make_cfg(f"model={name}")
    model = get_class(cfg.model._target_).from_config(cfg.model, 7, seed=0, num_threads=1, task=Task())
    assert not any(
        isinstance(m, (torch.nn.Sigmoid, torch.nn.Softmax, torch.nn.LogSoftmax)) for m in model.net.modules()
    )
    assert model.window == (cfg.model.window if cfg.model.input == "sequence" else 1)
    with torch.no_grad():
        model.net.head.bias.fill_(3.0)
        logits = model.net(torch.randn(16, model.window, 7))
    assert logits.shape == (16, 2) and logits.max() > 1.0  # logits, not probabilities


@pytest.mark.parametrize("name", FAMILIES)
def test_regression_target_gives_one_output(tmp_path, name):
    cfg = _cfg(name, tmp_path, "target=forward_return", "model.max_epochs=1", "trainer.limit_train_batches=3")
    result = train(cfg)
    assert result.status == "completed"
    loaded = load_model(tmp_path)
    assert loaded.model.net.head.out_features == 1
    window = loaded.model.window
    rows = Rows(
        np.random.default_rng(0).standard_normal((50, len(loaded.scaler.names))).astype(np.float32),
        np.arange(window - 1, 50),
    )
    assert loaded.model.predict_proba(rows).shape == (50 - window + 1, 1)
    columns = list(pd.read_parquet(tmp_path / "predictions_test.parquet").columns)
    assert "prediction" in columns and not [c for c in columns if c.startswith("p_")]


@pytest.mark.parametrize("name", FAMILIES)
def test_cancelled_mid_epoch_by_token_keeps_a_checkpoint(tmp_path, name):
    token = CancellationToken()
    stopped_events = []

    def progress(event):
        if event.kind == "step" and event.epoch == 0 and event.batch >= 4 and not token.cancelled:
            stopped_events.append(event)
            token.cancel("test")

    cfg = _cfg(
        name,
        tmp_path,
        "model.batch_size=256",
        "model.max_epochs=3",
        "callbacks.progress.every_n_batches=2",
        "callbacks.cancel.check_every_n_batches=3",
    )
    result = train(cfg, progress_callback=progress, cancellation_token=token)
    assert result.status == "cancelled" and result.reason == "test" and result.model_path is None
    stopped = result.training_metrics["cancelled_at"]
    assert stopped["epoch"] == 0 and 4 <= stopped["batch"] <= 4 + 3 < stopped_events[0].batches
    ckpt = torch.load(result.artifacts.checkpoint, weights_only=True)
    assert any(k.startswith("body.") for k in ckpt["state_dict"])
    assert not (tmp_path / "model").exists()


@pytest.mark.parametrize("name", TABULAR)
def test_tabular_bodies_read_the_row_as_a_sequence_of_feature_tokens(name):
    body, spec = _body(name, n_features=7)
    body.eval()
    x = torch.randn(4, 1, 7)
    tokens = body.tokens(x)
    width = spec.get("embed_dim") or spec["d_model"]
    assert tokens.shape == (4, 7, width)
    bumped = x.clone()
    bumped[:, 0, 3] += 1.0
    changed = (body.tokens(bumped) - tokens).abs().sum(dim=(0, 2)) > 0
    assert changed.tolist() == [i == 3 for i in range(7)]  # one token per feature, its own embedding
    inner = {
        "tab_cnn": lambda: body.convs[0],
        "tab_lstm": lambda: body.lstm,
        "tab_transformer": lambda: body.encoder.layers[0].self_attn,
    }[name]()
    expected = {
        "tab_cnn": (4, width, 7),  # channels-first: convolution slides over the 7 features
        "tab_lstm": (4, 7, width),  # the LSTM steps through 7 feature tokens
        "tab_transformer": (4, 1 + 7, width),
    }[name]  # [CLS] + 7 feature tokens
    assert _input_of(inner, lambda: body(x)) == expected
    assert body(x).shape == (4, body.out_features)


def test_sequence_transformer_attends_across_time_and_can_be_causal():
    body, _ = _body("transformer", n_features=5, window=12, d_model=16, heads=2, layers=2, dropout=0.0)
    body.eval()
    x = torch.randn(3, 12, 5)
    assert _input_of(body.encoder.layers[0].self_attn, lambda: body(x)) == (3, 12, 16)  # 12 time-step tokens
    first = x.clone()
    first[:, 0] += 1.0
    assert not torch.allclose(body.encode(first)[:, -1], body.encode(x)[:, -1])  # the last step sees the first

    causal, _ = _body(
        "transformer",
        n_features=5,
        window=12,
        d_model=16,
        heads=2,
        layers=2,
        dropout=0.0,
        causal=True,
        positions="sinusoidal",
        pooling="mean",
    )
    causal.eval()
    last = x.clone()
    last[:, -1] += 1.0
    with torch.no_grad():
        before, after = causal.encode(x), causal.encode(last)
    torch.testing.assert_close(after[:, :-1], before[:, :-1])  # earlier steps never attend to later ones
    assert not torch.allclose(after[:, -1], before[:, -1])
    assert "positions" not in causal.state_dict()  # sinusoidal table is rebuilt, not a weight


def test_tab_transformer_cls_attends_to_every_feature():
    body, _ = _body("tab_transformer", n_features=6, d_model=16, heads=2, layers=1, dropout=0.0)
    body.eval()
    x = torch.randn(2, 1, 6, requires_grad=True)
    body(x).sum().backward()
    assert (x.grad[:, 0].abs() > 0).all()


def test_cnn1d_convolves_over_time_causally():
    body, spec = _body("cnn1d", n_features=5, window=16, channels=8, layers=3, dropout=0.0)
    body.eval()
    x = torch.randn(2, 16, 5)
    pad = spec["kernel_size"] - 1
    assert _input_of(body.convs[0], lambda: body(x)) == (2, 5, 16 + pad)  # features in, time along the axis
    last = x.clone()
    last[:, -1] += 1.0
    with torch.no_grad():
        torch.testing.assert_close(body.feature_maps(last)[..., :-1], body.feature_maps(x)[..., :-1])


def test_mlp_options():
    body, _ = _body("mlp", n_features=7, hidden_sizes=[])
    assert body.out_features == 7 and body(torch.randn(3, 1, 7)).shape == (3, 7)
    with pytest.raises(UserError, match="unknown activation"):
        _body("mlp", activation="swishy")


@pytest.mark.parametrize("membership", ["gaussian", "triangular"])
@pytest.mark.parametrize("rule", ["product", "min", "dense"])
def test_fuzzy_memberships_lie_in_unit_interval_and_learn(membership, rule):
    body, spec = _body("fuzzy_mlp", n_features=4, membership=membership, rule=rule, n_sets=3, dropout=0.0)
    x = torch.linspace(-40, 40, 401)[:, None].expand(-1, 4).contiguous()
    mu = body.memberships(x)
    assert mu.shape == (401, 4, 3) and mu.min() >= 0.0 and mu.max() <= 1.0
    assert mu[0, :, 0].eq(1.0).all() and mu[-1, :, -1].eq(1.0).all()  # shoulders: tails fully in the outer set
    assert (mu.amax(dim=-1) > 0).all()  # no value falls outside every set
    if rule != "dense":
        assert body.firing(x[:, None]).shape == (401, 6 * 9)  # 4 features -> 6 pairs x 3 x 3 sets
    z = torch.randn(64, 1, 4)
    out = body(z)
    (out**2).mean().backward()
    for p in (body.memberships.centres, body.memberships.raw_width):
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0


def test_fuzzy_fixed_memberships_are_saved_but_not_trained():
    body, _ = _body("fuzzy_mlp", n_features=3, learn_memberships=False)
    names = {n for n, _ in body.named_parameters()}
    assert not any(n.startswith("memberships.") for n in names)
    assert {"memberships.centres", "memberships.raw_width"} <= set(body.state_dict())
