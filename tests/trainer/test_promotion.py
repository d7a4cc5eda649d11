"""Evaluation, gates and the registry through the real pipeline: what gets promoted, and what the
`promoted` link hands to whoever loads it."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from data.providers import load_candles
from tests.conftest import ROOT, make_cfg
from trainer import load_model, train
from trainer.registry import Registry
from trainer.result import RunResult

# horizon 5 keeps the effective sample (rows / horizon) large enough for a 60k-candle test run
COMMON = ["model=lightgbm", "data.rows=60000", "target.horizon=5", "trainer.num_threads=2", "logger=none"]
SLOT = "synthetic-BTC/1m/direction_h5"  # synthetic candles never share a slot with a real market
# a planted signal that beats costs (conf/experiment/tradeable.yaml): only such a model is promoted
TRADEABLE = ["model=lightgbm", "experiment=tradeable", "trainer.num_threads=2", "logger=none"]
TRADEABLE_SLOT = "synthetic-BTC/1h/direction_h12"


def _run(tmp_path: Path, name: str, *extra: str, common: list[str] = COMMON) -> RunResult:
    cfg = make_cfg(*common, *extra, f"paths.output_dir={tmp_path}", run_dir=tmp_path / "runs" / name)
    return train(cfg)


def test_random_walk_is_not_promoted_by_the_default_gates(tmp_path):
    result = _run(tmp_path, "rw", "data.signal_strength=0")
    assert result.status == "completed"
    gates = result.gates
    assert gates["name"] == "honest" and not gates["passed"]
    assert gates["symbols"]["BTC"]["checks"]["beat_baselines"]["passed"] is False
    assert result.registry["stage"] == "candidate" and not result.registry["promoted"]
    registry = Registry(tmp_path / "registry")
    assert registry.promoted(SLOT) is None and not registry.promoted_path(SLOT).exists()
    assert result.leakage["passed"]  # no skill and no leak: it fails on skill alone


def test_planted_signal_is_promoted_and_the_link_serves_exactly_that_model(tmp_path):
    result = _run(tmp_path, "signal", common=TRADEABLE)
    assert result.gates["passed"], result.gates["reasons"]
    ev = result.evaluation["overall"]
    assert ev["significance"]["p_value"] < 0.01 and ev["hit_rate"] > ev["best_baseline"]["value"]
    assert result.verdict["label"] == "tradeable after costs"
    assert result.registry["stage"] == "promoted"

    registry = Registry(tmp_path / "registry")
    row = registry.promoted(TRADEABLE_SLOT)
    assert (row["model_id"], row["version"]) == (result.registry["model_id"], result.registry["version"])
    link = registry.promoted_path(TRADEABLE_SLOT)
    assert link == tmp_path / "registry" / "promoted" / "synthetic-BTC" / "1h" / "direction_h12"
    assert link.resolve() == Path(row["model_dir"]).resolve()
    # what the link serves is the run's model: same card, and it reproduces the run's test predictions
    served = load_model(link)
    assert served.card["run_id"] == result.run.run_id == row["run_id"]
    run_card = json.loads((Path(result.model_path) / "model_card.json").read_text())
    assert served.card == run_card
    cfg = make_cfg(*TRADEABLE)
    candles = load_candles(cfg.data, ["BTC"], cfg.seed).by_symbol["BTC"]
    evaluated = pd.read_parquet(Path(result.run.run_dir) / "predictions_test.parquet")
    proba = served.predict_proba(candles)
    got = proba.set_index(candles["timestamp"]).loc[evaluated["timestamp"], "p_up"].to_numpy()
    np.testing.assert_allclose(got, evaluated["p_up"].to_numpy(), rtol=1e-6, atol=1e-7)

    # a later, worse run of the slot leaves the link alone; rollback has nothing earlier to restore
    worse = _run(tmp_path, "worse", "model.n_estimators=3", "model.early_stopping_rounds=3", common=TRADEABLE)
    assert worse.registry["stage"] == "candidate"
    assert registry.promoted(TRADEABLE_SLOT)["run_id"] == result.run.run_id


def test_shuffled_label_control_scores_at_chance_on_a_learnable_series(tmp_path):
    result = _run(tmp_path, "control")
    control = result.leakage["shuffled_control"]
    assert control["family"] == "lightgbm" and control["passed"] is True and control["conclusive"]
    assert abs(control["rate"] - control["chance"]) < 0.02
    assert abs(control["rank_corr"]) < 0.05
    # its ranking traded at zero cost wins about as often as chance: real prices, no evaluator bias
    assert (
        control["trading"]["trades"] > 100 and abs(control["trading"]["win_rate"] - control["trading"]["chance"]) < 0.06
    )
    assert result.test_metrics["accuracy"] > control["rate"] + 0.03  # the real labels did teach it
    phases = [json.loads(x)["phase"] for x in (Path(result.run.run_dir) / "progress.jsonl").read_text().splitlines()]
    assert "control" in phases and phases.index("control") > phases.index("evaluate")


def test_a_leaking_feature_is_flagged_and_never_promoted(tmp_path, monkeypatch):
    import trainer.stages as stages

    real = stages.feature_frames

    def with_future(candles, features):  # the replaced systems' bug: a feature that looks ahead
        frames = real(candles, features)
        for sym, frame in frames.items():
            close = candles[sym].set_index("timestamp")["close"]
            ahead = np.log(close.shift(-5) / close).reindex(frame.index).fillna(0.0)
            frame["ret_1"] = ahead.to_numpy()
        return frames

    monkeypatch.setattr(stages, "feature_frames", with_future)
    result = _run(tmp_path, "leak")
    assert result.test_metrics["accuracy"] > 0.9
    flags = result.leakage["too_good"]["flags"]
    assert any("Bayes oracle" in f for f in flags)
    assert not result.gates["passed"] and "leakage check too_good failed" in result.gates["reasons"]
    assert result.registry["stage"] == "candidate"
    # the legacy gates (no leak checks) pass it; they only record a verdict and never move the promoted link
    legacy = _run(tmp_path, "leak_legacy", "eval/gates=legacy", "eval.gates.min_symbols=1")
    assert legacy.gates["passed"] and legacy.registry["stage"] == "candidate"
    assert Registry(tmp_path / "registry").promoted(SLOT) is None


def test_k_of_n_across_symbols_through_the_pipeline(tmp_path):
    result = _run(
        tmp_path,
        "majors",
        "coin=majors",
        "data.rows=30000",
        "eval.leakage.shuffled_control=false",
        "eval.gates.min_symbols=2",
    )
    gates = result.gates
    assert set(gates["symbols"]) == {"BTC", "ETH", "SOL", "BNB"} and gates["min_symbols"] == 2
    passing = [s for s, v in gates["symbols"].items() if v["passed"]]
    assert gates["symbols_passing"] == len(passing)
    # the control was switched off, so the leakage gate cannot pass, whatever the symbols say
    assert not gates["passed"] and "leakage check shuffled_control was not run" in gates["reasons"]
    assert set(result.evaluation["symbols"]) == {"BTC", "ETH", "SOL", "BNB"}
    for sym, row in result.evaluation["symbols"].items():
        assert row["n"] == result.artifacts.per_symbol_metrics[sym]["n"]
        assert row["hit_rate"] == pytest.approx(result.artifacts.per_symbol_metrics[sym]["accuracy"])


def test_report_plots_and_trades_in_the_run_folder(tmp_path):
    # a fixed threshold: the policy learned in this cost-bound 1m world is "never trade", and this test reads trades
    result = _run(tmp_path, "report", "eval.leakage.shuffled_control=false", "eval.policy.mode=fixed")
    run_dir = Path(result.run.run_dir)
    plots = result.artifacts.plot_files
    assert set(plots) == {"reliability", "confusion_matrix", "equity_curve", "feature_importance", "learning_curves"}
    for path in plots.values():
        assert Path(path).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = (run_dir / "report.md").read_text()
    for name in ("reliability.png", "confusion_matrix.png", "equity_curve.png", "feature_importance.png"):
        assert f"(plots/{name})" in report
    trades = pd.read_parquet(run_dir / "trades_test.parquet")
    assert len(trades) == result.trading["n_trades"] > 0
    cm = np.array(result.artifacts.confusion_matrix)
    assert cm.sum() == result.test_metrics["n"]
    assert np.trace(cm) / cm.sum() == pytest.approx(result.test_metrics["accuracy"])


def test_real_btc_hourly_reports_honest_numbers(shared_data, tmp_path):
    path = shared_data / "ohlcv" / "BTC-USD_1h_coinbase.parquet"
    # a fixed threshold trades often enough to check the pricing (the learned policy may rightly never trade)
    cfg = make_cfg(
        "model=lightgbm",
        "data=files",
        f"data.path='{path}'",
        "target.horizon=4",
        "split.embargo=24",
        "logger=none",
        "trainer.num_threads=2",
        "eval.policy.mode=fixed",
        f"paths.output_dir={tmp_path}",
        run_dir=tmp_path / "run",
    )
    result = train(cfg)
    assert result.leakage["split"]["passed"] and result.leakage["shuffled_control"]["passed"]
    assert result.leakage["too_good"]["passed"]
    t = result.trading
    assert t["n_trades"] > 100 and 0.3 < t["win_rate"] < 0.7  # real prices: no 100% win rate
    assert result.data_summary.oracle_accuracy is None


def test_registry_cli_lists_what_a_run_registered(tmp_path):
    result = _run(tmp_path, "cli", "eval.leakage.shuffled_control=false")
    env = {**os.environ, "CANDLELAB_OUTPUT_DIR": str(tmp_path)}
    out = subprocess.run(
        [sys.executable, "-m", "trainer.registry", "--root", str(tmp_path / "registry"), "list"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    assert result.registry["model_id"] in out.stdout and SLOT in out.stdout
