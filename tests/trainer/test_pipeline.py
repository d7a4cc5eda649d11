"""The pipeline through the Python API: result contract, reload parity, leak and signal controls."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from data.providers import load_candles
from data.table import build_table
from tests.conftest import FAST_DATA, FAST_LSTM, make_cfg
from trainer import load_model, train
from trainer.result import RunResult

RESULT_KEYS = {
    "status",
    "model_path",
    "training_metrics",
    "test_metrics",
    "baselines",
    "artifacts",
    "model_info",
    "data_summary",
    "run",
}
TEST_METRIC_KEYS = {"accuracy", "balanced_accuracy", "log_loss", "brier", "ece", "auc", "n"}


@pytest.fixture(scope="module")
def lightgbm_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("lgbm")
    cfg = make_cfg("model=lightgbm", "coin=BTC", "logger=csv", "trainer.num_threads=2", run_dir=run_dir)
    return cfg, train(cfg)


@pytest.fixture(scope="module")
def lstm_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("lstm")
    cfg = make_cfg(*FAST_LSTM, *FAST_DATA, "data.rows=30000", run_dir=run_dir)
    return cfg, train(cfg)


def _check_contract(result: RunResult, family: str):
    run_dir = Path(result.run.run_dir)
    written = json.loads((run_dir / "result.json").read_text())
    assert written == json.loads(json.dumps(result.to_json(), default=str))  # train() returns what the file holds
    assert RESULT_KEYS <= written.keys()
    assert result.status == "completed"
    assert TEST_METRIC_KEYS <= result.test_metrics.keys()
    assert {"majority_class", "persistence"} <= result.baselines.keys()
    assert {"feature_importance", "per_symbol_metrics", "plots"} <= written["artifacts"].keys()
    assert {"family", "stage", "device", "n_parameters"} <= written["model_info"].keys()
    assert result.model_info.family == family and result.model_info.n_parameters > 0
    ds = written["data_summary"]
    assert {"symbols", "timeframe", "rows_per_split", "split_cutoffs", "oracle_accuracy"} <= ds.keys()
    assert {"run_id", "git_commit", "config_hash", "started_at", "finished_at"} <= written["run"].keys()
    assert (run_dir / "config.yaml").is_file()
    for plot in result.artifacts.plots:
        assert Path(plot).stat().st_size > 1000
    model_dir = Path(result.model_path)
    for name in ("model_card.json", "scaler.json", "features.json", "label.json", "config.yaml"):
        assert (model_dir / name).is_file(), name
    assert not list(model_dir.rglob("*.pkl")) and not list(model_dir.rglob("*.pickle"))


def _assert_reload_parity(cfg, result, atol):
    """load_model(dir).predict_proba(candles) reproduces the probabilities the run evaluated."""
    evaluated = pd.read_parquet(Path(result.run.run_dir) / "predictions_test.parquet")
    candles = load_candles(cfg.data, ["BTC"], cfg.seed).by_symbol["BTC"]
    model = load_model(result.model_path)
    out = model.predict_proba(candles)
    assert out.index.equals(candles.index)
    reloaded = pd.Series(out["p_up"].to_numpy(), index=candles["timestamp"]).loc[evaluated["timestamp"]]
    np.testing.assert_allclose(reloaded.to_numpy(), evaluated["p_up"].to_numpy(), rtol=0, atol=atol)
    # Only the test window plus its history, as a user replaying it would pass: same numbers.
    first = evaluated["timestamp"].min() - pd.Timedelta(minutes=400)
    recent = candles[candles["timestamp"] >= first].reset_index(drop=True)
    again = pd.Series(model.predict_proba(recent)["p_up"].to_numpy(), index=recent["timestamp"])
    np.testing.assert_allclose(
        again.loc[evaluated["timestamp"]].to_numpy(), evaluated["p_up"].to_numpy(), rtol=0, atol=atol
    )


def test_lightgbm_result_contract(lightgbm_run):
    _check_contract(lightgbm_run[1], "lightgbm")
    assert lightgbm_run[1].artifacts.feature_importance["kind"] == "gain"


def test_lstm_result_contract(lstm_run):
    _check_contract(lstm_run[1], "lstm")
    assert lstm_run[1].artifacts.feature_importance["kind"] == "permutation_val_logloss"
    assert Path(lstm_run[1].model_path, "model.safetensors").is_file()


def test_lightgbm_reload_parity(lightgbm_run):
    _assert_reload_parity(*lightgbm_run, atol=0.0)


def test_lstm_reload_parity(lstm_run):
    _assert_reload_parity(*lstm_run, atol=1e-6)


def test_signal_control_beats_baselines_without_beating_the_oracle(lightgbm_run):
    result = lightgbm_run[1]
    acc = result.test_metrics["accuracy"]
    base = result.baselines
    oracle = result.data_summary.oracle_accuracy
    assert acc > base["majority_class"]["accuracy"] + 0.03
    assert acc > base["persistence"]["accuracy"] + 0.015
    assert acc <= oracle + 0.01, "more than the Bayes oracle means a leak"


def test_lstm_does_not_beat_the_oracle(lstm_run):
    result = lstm_run[1]
    assert result.test_metrics["accuracy"] <= result.data_summary.oracle_accuracy + 0.01


@pytest.mark.parametrize("family", ["lightgbm", "lstm"])
def test_no_leak_control_random_walk_scores_chance(tmp_path, family):
    extra = FAST_LSTM if family == "lstm" else ["model=lightgbm"]
    cfg = make_cfg(
        *extra,
        "data.signal_strength=0",
        "data.rows=200000",
        "target.horizon=5",
        "trainer.num_threads=2",
        "logger=none",
        run_dir=tmp_path,
    )
    result = train(cfg)
    assert abs(result.test_metrics["accuracy"] - 0.5) <= 0.02
    assert abs(result.data_summary.oracle_accuracy - 0.5) <= 0.02


def test_scaler_statistics_come_from_train_rows_only(lightgbm_run):
    """Pitfall: test data normalised with its own statistics."""
    cfg, result = lightgbm_run
    scaler = json.loads(Path(result.model_path, "scaler.json").read_text())
    candles = load_candles(cfg.data, ["BTC"], cfg.seed)
    table = build_table(candles.by_symbol, cfg.features, cfg.target, candles.step)
    frame = table.frame
    cut = pd.Timestamp(result.data_summary.split_cutoffs["val_start"])
    train_rows = frame["label"].notna() & (frame["timestamp"] < cut) & (frame["t1"] < cut)
    assert train_rows.sum() == result.data_summary.rows_per_split["train"]
    raw = table.matrix()
    np.testing.assert_allclose(scaler["mean"], raw[train_rows.to_numpy()].mean(0), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(scaler["std"], raw[train_rows.to_numpy()].std(0), rtol=1e-9, atol=1e-12)
    test_ts = pd.read_parquet(Path(result.run.run_dir) / "predictions_test.parquet")["timestamp"]
    test_mean = raw[frame["timestamp"].isin(test_ts).to_numpy()].mean(0)
    assert not np.allclose(scaler["mean"], test_mean, rtol=1e-3)


def test_files_provider_trains_end_to_end_on_real_btc(shared_data, tmp_path):
    path = shared_data / "ohlcv" / "BTC-USD_1h_coinbase.parquet"
    cfg = make_cfg(
        "model=lightgbm",
        "data=files",
        f"data.path='{path}'",
        "target.horizon=4",
        "split.embargo=24",
        "logger=none",
        "trainer.num_threads=2",
        run_dir=tmp_path,
    )
    result = train(cfg)
    _check_contract(result, "lightgbm")
    ds = result.data_summary
    assert ds.timeframe == "1h" and ds.oracle_accuracy is None and ds.provider == "files"
    assert result.test_metrics["n"] > 2500
    # Real hourly BTC is close to unpredictable at this horizon: anything far from chance is a leak.
    assert 0.44 <= result.test_metrics["accuracy"] <= 0.58


def test_wandb_logger_runs_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    cfg = make_cfg("model=lightgbm", "data.rows=20000", "trainer.num_threads=2", "logger=wandb", run_dir=tmp_path)
    result = train(cfg)
    assert result.status == "completed"
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and any(runs[0].rglob("*.wandb"))


def test_multi_symbol_reload_parity_and_timeframe_guard(tmp_path):
    cfg = make_cfg(
        "model=lightgbm", "coin=majors", "data.rows=20000", "trainer.num_threads=2", "logger=none", run_dir=tmp_path
    )
    result = train(cfg)
    assert set(result.artifacts.per_symbol_metrics) == {"BTC", "ETH", "SOL", "BNB"}
    evaluated = pd.read_parquet(tmp_path / "predictions_test.parquet")
    by_symbol = load_candles(cfg.data, list(cfg.coin.symbols), cfg.seed).by_symbol
    stacked = pd.concat([c.assign(symbol=s) for s, c in by_symbol.items()], ignore_index=True)
    model = load_model(tmp_path)
    out = model.predict_proba(stacked)
    got = stacked[["symbol", "timestamp"]].assign(p_up=out["p_up"].to_numpy())
    merged = evaluated.merge(got, on=["symbol", "timestamp"], suffixes=("", "_reloaded"))
    assert len(merged) == len(evaluated)
    np.testing.assert_array_equal(merged["p_up_reloaded"].to_numpy(), merged["p_up"].to_numpy())
    from core.errors import UserError

    five_minute = by_symbol["BTC"].iloc[::5].reset_index(drop=True)
    with pytest.raises(UserError, match="trained on 1m"):
        model.predict_proba(five_minute)


@pytest.mark.parametrize("target", ["direction3", "forward_return", "quantile", "triple_barrier"])
def test_every_target_trains_and_reports_task_metrics(tmp_path, target):
    cfg = make_cfg(
        "model=lightgbm",
        f"target={target}",
        "data.rows=30000",
        "trainer.num_threads=2",
        "logger=none",
        run_dir=tmp_path,
    )
    result = train(cfg)
    m, kind = result.test_metrics, result.data_summary.task["kind"]
    if kind == "regression":
        assert {"ic", "rank_ic", "mae", "rmse", "directional_accuracy"} <= m.keys()
        assert m["ic"] > 0.05 and result.baselines["persistence"]["ic"] is not None
        assert m["directional_accuracy"] <= result.data_summary.oracle_accuracy + 0.01
    else:
        assert {"accuracy", "balanced_accuracy", "log_loss", "brier", "ece", "auc"} <= m.keys()
        assert m["accuracy"] > result.baselines["majority_class"]["accuracy"]
    evaluated = pd.read_parquet(tmp_path / "predictions_test.parquet")
    columns = [c for c in evaluated.columns if c.startswith("p_") or c == "prediction"]
    candles = load_candles(cfg.data, ["BTC"], cfg.seed).by_symbol["BTC"]
    out = load_model(tmp_path).predict_proba(candles)
    assert list(out.columns) == columns
    got = out.set_index(candles["timestamp"]).loc[evaluated["timestamp"]]
    np.testing.assert_array_equal(got.to_numpy(), evaluated[columns].to_numpy())


def test_lstm_regression_head(tmp_path):
    cfg = make_cfg(*FAST_LSTM, *FAST_DATA, "target=forward_return", run_dir=tmp_path)
    result = train(cfg)
    assert result.status == "completed" and "ic" in result.test_metrics
    assert load_model(tmp_path).model.net.head.out_features == 1


@pytest.mark.parametrize("family", ["xgboost", "catboost"])
def test_tree_family_reload_parity(tmp_path, family):
    cfg = make_cfg(f"model={family}", "data.rows=20000", "trainer.num_threads=1", "logger=none", run_dir=tmp_path)
    result = train(cfg)
    _check_contract(result, family)
    _assert_reload_parity(cfg, result, atol=0.0)
