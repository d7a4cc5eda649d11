"""Runtime signals: what runs is what the registry promoted (loaded through its link, run id checked), its
probabilities equal the evaluation's for the same candles, and threshold, tiers, weights and rate limits."""

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from omegaconf import OmegaConf

from core.errors import UserError
from data.labels import TASKS, n_classes, output_columns
from data.providers import load_candles
from models.base import Task
from tests.conftest import make_cfg
from tests.trainer.runtime.world import register_copy
from trainer import train
from trainer.evaluation import trade_signals
from trainer.registry import Registry
from trainer.runtime.signals import PromotedModel, SignalEngine, load_promoted, long_short

SLOT = "synthetic-BTC/1m/direction_h15"  # synthetic candles register under a marked symbol
FAST = ["data.rows=20000", "trainer.num_threads=1", "logger=none", "eval.leakage.shuffled_control=false"]


def _train_promoted(out: Path, *overrides: str):
    cfg = make_cfg(*overrides, *FAST, f"paths.output_dir={out}", run_dir=out / "run")
    result = train(cfg)
    assert result.status == "completed"
    reg = result.registry
    Registry(out / "registry").promote(reg["model_id"], reg["version"], force=True)  # gates may refuse it
    return cfg, result


@pytest.fixture(scope="module")
def lightgbm_promoted(tmp_path_factory):
    out = tmp_path_factory.mktemp("runtime-lgbm")
    return (out,) + _train_promoted(out, "model=lightgbm")


def _evaluated_vs_runtime(cfg, result, engine, n):
    evaluated = pd.read_parquet(Path(result.run.run_dir) / "predictions_test.parquet")
    candles = load_candles(cfg.data, ["BTC"], cfg.seed).by_symbol["BTC"]
    picks = evaluated.iloc[np.linspace(0, len(evaluated) - 1, n).astype(int)]
    position = pd.Index(candles["timestamp"])
    got = []
    for ts in picks["timestamp"]:
        upto = candles.iloc[: position.get_loc(ts) + 1]
        p_long, p_short, per_model = engine.probabilities("BTC", upto)
        assert list(per_model.values()) == [p_long]
        got.append((p_long, p_short))
    got = np.array(got)
    return got, picks


def test_runtime_serves_the_promoted_run_and_reproduces_its_test_probabilities(lightgbm_promoted):
    out, cfg, result = lightgbm_promoted
    [promoted] = load_promoted(out / "registry", [SLOT])
    row = Registry(out / "registry").promoted(SLOT)
    assert (
        promoted.ref
        == f"{row['model_id']}:{row['version']}"
        == f"{result.registry['model_id']}:{result.registry['version']}"
    )
    assert promoted.model.card["run_id"] == result.run.run_id
    assert promoted.model.directory == Registry(out / "registry").promoted_path(SLOT)  # loaded through the link
    assert promoted.weight == 1.0 and promoted.horizon == 15 and promoted.history >= 3000
    got, picks = _evaluated_vs_runtime(cfg, result, SignalEngine([promoted]), 50)
    np.testing.assert_allclose(got[:, 0], picks["p_up"].to_numpy(), rtol=0, atol=1e-6)
    np.testing.assert_allclose(got[:, 1], picks["p_down"].to_numpy(), rtol=0, atol=1e-6)


def test_sequence_model_parity(tmp_path):
    cfg, result = _train_promoted(
        tmp_path, "model=lstm", "model.hidden=8", "model.layers=1", "model.window=16", "model.max_epochs=1"
    )
    [promoted] = load_promoted(tmp_path / "registry", [SLOT])
    assert promoted.history >= 3000 + 16
    got, picks = _evaluated_vs_runtime(cfg, result, SignalEngine([promoted]), 20)
    np.testing.assert_allclose(got[:, 0], picks["p_up"].to_numpy(), rtol=0, atol=1e-6)


def test_nothing_promoted_says_what_to_promote(tmp_path):
    with pytest.raises(UserError, match="no model registry") as missing:
        load_promoted(tmp_path / "nowhere", [SLOT])
    assert missing.value.where == "registry" and not (tmp_path / "nowhere").exists()
    reg = Registry(tmp_path / "registry")
    with pytest.raises(UserError) as empty:
        load_promoted(tmp_path / "registry", ["BTC/1h/direction_h4"])
    assert empty.value.where == "registry"
    assert "no promoted model for slot BTC/1h/direction_h4" in empty.value.what
    assert "python -m trainer.registry promote" in empty.value.what and "train one" in empty.value.what
    refs = []
    for i in range(4):
        store = tmp_path / f"dir-r{i}"
        store.mkdir()
        (store / "model_card.json").write_text(json.dumps({"run_id": f"r{i}"}))
        row = reg.register(
            {
                "family": "lightgbm",
                "symbol": "BTC",
                "timeframe": "1h",
                "target": "direction_h4",
                "headline": "accuracy",
                "headline_value": 0.5,
                "metrics": {},
                "gates": {"passed": False},
                "run_id": f"r{i}",
                "run_dir": None,
                "git_commit": None,
                "config_hash": f"c{i}",
                "data_fingerprint": "d",
            },
            store,
        )
        refs.append(f"{row['model_id']}:{row['version']}")
    with pytest.raises(UserError) as listed:
        load_promoted(tmp_path / "registry", ["BTC/1h/direction_h4"])
    assert f"(candidates: {refs[3]}, {refs[2]}, {refs[1]})" in listed.value.what  # the newest three
    assert "python -m trainer.registry promote <id>:<version>" in listed.value.what


def _copy_registry(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, symlinks=True)  # links are relative: the copy serves its own store
    return dst


def test_a_link_pointing_at_another_model_is_repaired_and_a_foreign_card_refused(lightgbm_promoted, tmp_path):
    out, _, result = lightgbm_promoted
    root = _copy_registry(out / "registry", tmp_path / "registry")
    reg = Registry(root)
    other = register_copy(reg, Path(result.model_path), tmp_path, "synthetic-ETH", "run-other")
    link = reg.promoted_path(SLOT)
    assert len(load_promoted(root, [SLOT])) == 1
    os.unlink(link)
    os.symlink(os.path.relpath(other["model_dir"], link.parent), link)  # tampered: the DB still says the run
    (served,) = load_promoted(root, [SLOT])  # reading through the link puts it back where the DB says
    assert served.model.card["run_id"] == result.run.run_id
    assert link.resolve() == Path(reg.promoted(SLOT)["model_dir"]).resolve()
    card = link / "model_card.json"  # the promoted copy itself names another run: refused
    card.write_text(json.dumps({**json.loads(card.read_text()), "run_id": "run-other"}))
    with pytest.raises(UserError, match=f"serves run run-other but the registry promoted run {result.run.run_id}"):
        load_promoted(root, [SLOT])


def test_weights_are_per_slot_and_regression_models_are_refused(lightgbm_promoted, tmp_path):
    out, cfg, result = lightgbm_promoted
    root = _copy_registry(out / "registry", tmp_path / "registry")
    reg = Registry(root)
    register_copy(reg, Path(result.model_path), tmp_path, "synthetic-SOL", "run-sol")
    second = "synthetic-SOL/1m/direction_h15"
    a, b = load_promoted(root, [SLOT, second], weights={SLOT: 3.0}, history=500)
    assert (a.weight, b.weight) == (0.75, 0.25) and a.history == b.history == 500
    with pytest.raises(UserError, match="weights name slot"):
        load_promoted(root, [SLOT], weights={second: 1.0})
    with pytest.raises(UserError, match="sum to 0"):
        load_promoted(root, [SLOT, second], weights={SLOT: 0.0, second: 0.0})

    def to_regression(d: Path):
        label = json.loads((d / "label.json").read_text())
        label["type"] = label["target"]["type"] = "forward_return"
        (d / "label.json").write_text(json.dumps(label))

    register_copy(reg, Path(result.model_path), tmp_path, "synthetic-BNB", "run-bnb", to_regression)
    with pytest.raises(UserError, match="classifiers only"):
        load_promoted(root, ["synthetic-BNB/1m/direction_h15"])


class FakeModel:
    """Stands in for a LoadedModel: a fixed P(up) (settable) for every candle it is given."""

    def __init__(self, p_up: float, symbols=("BTC",), kind="direction", horizon=15, long=0.55, short=0.55):
        self.p_up = p_up
        self.card = {
            "symbols": list(symbols),
            "window": 1,
            "run_id": "fake",
            "policy": {"long_threshold": long, "short_threshold": short, "horizon": horizon},
        }
        self.label = {"type": kind, "horizon": horizon, "timeframe": "1m", "target": {"type": kind}}
        self.calls: list[int] = []

    def predict_proba(self, candles: pd.DataFrame, last: int | None = None) -> pd.DataFrame:
        self.calls.append(len(candles))
        p = np.full(len(candles), self.p_up, dtype=np.float64)
        return pd.DataFrame({"p_down": 1.0 - p, "p_up": p}, index=candles.index)


def _fake(p_up, ref="m:1", weight=1.0, history=50, **kw) -> PromotedModel:
    model = FakeModel(p_up, **kw)
    return PromotedModel(
        ref=ref, slot=f"X/1m/{ref}", model=model, weight=weight, horizon=model.label["horizon"], history=history
    )


def _candles(n: int, start="2024-01-01") -> pd.DataFrame:
    ts = pd.date_range(start, periods=n, freq="1min", tz="UTC")
    close = np.linspace(100, 101, n)
    return pd.DataFrame(
        {"timestamp": ts, "open": close, "high": close + 0.1, "low": close - 0.1, "close": close, "volume": 1.0}
    )


def test_weights_change_the_ensemble_and_only_covering_models_count():
    a = _fake(0.8, "a:1", weight=0.75, history=30)
    b = _fake(0.4, "b:1", weight=0.25, horizon=60)
    eth = _fake(0.99, "eth:1", symbols=("ETH",))
    engine = SignalEngine([a, b, eth])
    p_long, p_short, per_model = engine.probabilities("BTC", _candles(100))
    assert p_long == pytest.approx(0.7) and p_short == pytest.approx(0.3)
    assert per_model == {"a:1": 0.8, "b:1": 0.4}
    assert a.model.calls == [30] and b.model.calls == [50] and eth.model.calls == []  # only its own history
    signal = engine.on_candle("BTC", _candles(100))
    assert (signal.side, signal.tier, signal.horizon, signal.status) == (1, "high", 60, "emitted")
    assert signal.timestamp == _candles(100)["timestamp"].iloc[-1]
    b.weight = 0.75  # equal weights now
    assert engine.probabilities("BTC", _candles(100))[0] == pytest.approx(0.6)
    # a model still warming up is left out; none scoring -> no signal
    a.model.p_up = np.nan
    assert engine.probabilities("BTC", _candles(100))[0] == pytest.approx(0.4)
    assert engine.on_candle("SOL", _candles(100)).status == "no_models"


def test_card_policy_sides_and_tiers():
    model = _fake(0.5)  # the card's policy: long or short at 0.55
    engine = SignalEngine([model], tiers={"high": 0.65, "medium": 0.55}, max_per_hour=None, max_high_per_hour=None)
    expect = {
        0.5: (0, None, "below_threshold"),
        0.54: (0, None, "below_threshold"),
        0.56: (1, "medium", "emitted"),
        0.3: (-1, "high", "emitted"),
        0.65: (1, "high", "emitted"),
        0.4: (-1, "medium", "emitted"),
    }
    for p, (side, tier, status) in expect.items():
        model.model.p_up = p
        s = engine.on_candle("BTC", _candles(60))
        assert (s.side, s.tier, s.status) == (side, tier, status), p
        assert s.confidence == pytest.approx(max(p, 1 - p))
        assert s.p_long == pytest.approx(p) and s.p_short == pytest.approx(1 - p) and s.models == {"m:1": p}
    # a policy threshold above the lowest tier floor: the tier still follows the confidence
    strict = SignalEngine([_fake(0.58, long=0.6, short=0.6)], tiers={"high": 0.7, "medium": 0.5})
    assert strict.on_candle("BTC", _candles(60)).status == "below_threshold"
    strict.models[0].model.p_up = 0.62
    assert strict.on_candle("BTC", _candles(60)).tier == "medium"
    with pytest.raises(UserError, match="long_threshold"):
        SignalEngine([_fake(0.5, long=1.5)])


def test_rate_limits_count_candle_time_not_wall_clock():
    model = _fake(0.6)  # medium
    engine = SignalEngine([model], max_per_hour=3, max_high_per_hour=1)
    candles = _candles(200)
    statuses = []
    for i in range(59, 59 + 70, 10):  # one candle every 10 minutes of candle time
        statuses.append(engine.on_candle("BTC", candles.iloc[: i + 1]).status)
    # 0, 10, 20 min emitted; 30, 40, 50 limited (three in the trailing hour); 60 min: the first has aged out
    assert statuses == ["emitted"] * 3 + ["rate_limited"] * 3 + ["emitted"]

    model.model.p_up = 0.9  # high tier: at most one per hour, beside the overall limit
    engine = SignalEngine([model], max_per_hour=10, max_high_per_hour=1)
    got = [engine.on_candle("BTC", candles.iloc[: i + 1]) for i in (59, 70, 118, 119)]
    assert [s.status for s in got] == ["emitted", "rate_limited_high", "rate_limited_high", "emitted"]
    assert got[1].side == 1 and got[1].tier == "high"  # a limited signal still says what it would have been
    model.model.p_up = 0.6
    assert engine.on_candle("BTC", candles.iloc[:121]).status == "emitted"  # medium is not high-limited
    # a limit counts every symbol's emitted signals
    eth = _fake(0.6, "eth:1", symbols=("ETH",))
    shared = SignalEngine([model, eth], max_per_hour=1, max_high_per_hour=None)
    assert shared.on_candle("BTC", candles).status == "emitted"
    assert shared.on_candle("ETH", candles).status == "rate_limited"


@pytest.mark.parametrize("target", ["direction", "direction3", "triple_barrier", "quantile"])
def test_long_short_is_the_evaluation_rule(target):
    cfg = make_cfg(f"target={target}")
    columns = output_columns(cfg.target)
    rng = np.random.default_rng(0)
    proba = rng.dirichlet(np.ones(len(columns)), size=40)
    model = FakeModel(0.5, kind=target)
    model.label["target"] = OmegaConf.to_container(cfg.target, resolve=True)
    task = Task(TASKS[target], n_classes(cfg.target))
    got = long_short(model, pd.DataFrame(proba, columns=columns))
    want = trade_signals(task, cfg.target, proba, 0.0)
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])
