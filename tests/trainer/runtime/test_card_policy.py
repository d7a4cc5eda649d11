"""The runtime trades exactly the decision policy on a model's card and refuses a model without one."""

import json
from pathlib import Path

import numpy as np
import pytest

from tests.trainer.runtime.world import register_copy
from trainer.registry import Registry
from trainer.result import RunResult

SLOT = "synthetic-BTC/1m/direction_h15"
TRAIN = [
    "model=lightgbm",
    "data.rows=20000",
    "trainer.num_threads=1",
    "logger=none",
    "eval.leakage.shuffled_control=false",
    "eval.policy.mode=fixed",
    "eval.trading.threshold=0.51",
]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A LightGBM on synthetic candles whose card policy trades (fixed at 0.51), promoted by force."""
    from tests.conftest import make_cfg
    from trainer import train

    out = tmp_path_factory.mktemp("served")
    cfg = make_cfg(*TRAIN, f"paths.output_dir={out}", run_dir=out / "run")
    result = train(cfg)
    assert result.status == "completed"
    reg = result.registry
    Registry(out / "registry").promote(reg["model_id"], reg["version"], force=True)
    return out, cfg, result


def _serve_copy(result: RunResult, root, tmp, run_id: str, policy) -> None:
    """The trained model registered and promoted in a registry of its own, its card's policy replaced."""

    def set_policy(staged):
        card = json.loads((staged / "model_card.json").read_text())
        if policy is None:
            card.pop("policy", None)
        else:
            card["policy"] = policy
        (staged / "model_card.json").write_text(json.dumps(card))

    register_copy(Registry(root), Path(result.model_path), tmp, "synthetic-BTC", run_id, edit=set_policy)


def _runtime_sides(cfg, result, engine, n: int = 40):
    from pathlib import Path

    import pandas as pd

    from data.providers import load_candles

    evaluated = pd.read_parquet(Path(result.run.run_dir) / "predictions_test.parquet")
    candles = load_candles(cfg.data, ["BTC"], cfg.seed).by_symbol["BTC"]
    picks = evaluated.iloc[np.linspace(0, len(evaluated) - 1, n).astype(int)]
    position = pd.Index(candles["timestamp"])
    sides = [engine.on_candle("BTC", candles.iloc[: position.get_loc(ts) + 1]).side for ts in picks["timestamp"]]
    return np.array(sides), picks


def test_runtime_trades_exactly_the_cards_policy(served, tmp_path, caplog):
    from trainer.policy import DecisionPolicy
    from trainer.runtime.signals import SignalEngine, load_promoted

    out, cfg, result = served
    with caplog.at_level("INFO", logger="candlelab.runtime"):
        [model] = load_promoted(out / "registry", [SLOT])
    card = json.loads((model.model.directory / "model_card.json").read_text())
    assert model.policy == DecisionPolicy.from_dict(card["policy"]) and card["policy"] == result.policy
    assert (model.policy.long_threshold, model.policy.short_threshold) == (0.51, 0.51)
    messages = [r.getMessage() for r in caplog.records]
    assert any("did not pass its economic checks" in m for m in messages)  # forced promotion: warned
    assert any("expected net edge per trade" in m and "test period" in m for m in messages)
    engine = SignalEngine([model], max_per_hour=None, max_high_per_hour=None)
    got, picks = _runtime_sides(cfg, result, engine)
    want = model.policy.sides(picks["p_up"].to_numpy(), picks["p_down"].to_numpy())  # as the evaluation traded
    np.testing.assert_array_equal(got, want)
    assert (want != 0).sum() >= 5  # the comparison means something: the policy trades at these candles

    # another card policy on the same model: the runtime follows the card, not a threshold of its own
    root = tmp_path / "registry"
    _serve_copy(
        result, root, tmp_path, "run-long-only", {"long_threshold": 0.0, "short_threshold": None, "horizon": 15}
    )
    [long_only] = load_promoted(root, [SLOT])
    got, picks = _runtime_sides(cfg, result, SignalEngine([long_only], max_per_hour=None, max_high_per_hour=None))
    np.testing.assert_array_equal(got, np.where(picks["p_up"] > picks["p_down"], 1, 0))


def test_runtime_refuses_a_model_without_a_policy(served, tmp_path):
    import os
    import subprocess
    import sys

    from tests.conftest import ROOT

    out, cfg, result = served
    root = tmp_path / "registry"
    _serve_copy(result, root, tmp_path, "run-no-policy", None)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "trainer.runtime",
            "mode=dry",
            "data.rows=20000",
            "logger=none",
            f"runtime.registry_root={root}",
            f"runtime.run_dir={tmp_path / 'session'}",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "HYDRA_FULL_ERROR": "0"},
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()
    assert len([line for line in last if line.startswith("error:")]) == 1 and "Traceback" not in proc.stderr
    assert last[-1].startswith("error: ") and "no decision policy" in last[-1]
    assert "retrain it with this version" in last[-1] and last[-1].endswith(f"({SLOT})")
