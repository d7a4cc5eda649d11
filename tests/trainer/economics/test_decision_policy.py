"""The decision policy: its card round-trips, it is chosen on validation rows only, per walk-forward fold."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from core.errors import UserError
from data.synthetic import generate
from tests.conftest import make_cfg
from tests.trainer.economics.helpers import FAST
from trainer import train
from trainer.evaluation import fixed_policy
from trainer.policy import DecisionPolicy


def test_policy_sides_round_trip_and_refuses_a_garbage_card():
    policy = DecisionPolicy(0.6, 0.7, 12, 5.0, validation={"expectancy_bps": 12.0})
    p_long, p_short = np.array([0.65, 0.2, 0.55, np.nan]), np.array([0.35, 0.8, 0.45, 0.1])
    assert policy.sides(p_long, p_short).tolist() == [1, -1, 0, 0]
    assert DecisionPolicy.from_dict(policy.to_dict()) == policy
    never = DecisionPolicy(None, None, 12)
    assert not never.trades and not never.sides(p_long, p_short).any()
    for bad in (
        {"horizon": 0},
        {"horizon": 4, "long_threshold": 1.5},
        {"horizon": 4, "long_threshold": True},
        {"horizon": 4, "chosen_on": "test"},
        {"horizon": 4, "extra": 1},
        [1, 2],
    ):
        with pytest.raises(UserError):
            DecisionPolicy.from_dict(bad)
    fixed = fixed_policy(make_cfg("eval.policy.mode=fixed", "eval.trading.threshold=0.6"))
    assert (fixed.long_threshold, fixed.short_threshold, fixed.chosen_on) == (0.6, 0.6, "fixed")


def _candle_file(path: Path, seed: int = 3, rows: int = 8000) -> pd.DataFrame:
    candles = generate(
        ["BTC"], rows=rows, timeframe="1h", seed=seed, signal_strength=1.5, signal_half_life=120, volatility=0.006
    ).candles["BTC"]
    candles.to_parquet(path, index=False)
    return candles


def test_the_policy_never_reads_test_rows(tmp_path):
    """Candles (hence test labels, features and trades) from the test cutoff on are replaced by another
    random path: the chosen thresholds and their validation score do not move, the test trades do."""
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    candles = _candle_file(tmp_path / "a" / "BTC-USD_1h_synthetic.parquet")
    args = [
        *FAST,
        "data=files",
        "coin=BTC",
        "target.horizon=12",
        "split.embargo=12",
        "registry.enabled=false",
        "eval.leakage.shuffled_control=false",
        "eval.policy.min_val_trades=10",
    ]
    first = train(
        make_cfg(*args, f"data.path={tmp_path / 'a' / 'BTC-USD_1h_synthetic.parquet'}", run_dir=tmp_path / "run_a")
    )
    test_start = pd.Timestamp(first.data_summary.split_cutoffs["test_start"])
    other = generate(
        ["BTC"], rows=len(candles), timeframe="1h", seed=99, signal_strength=1.5, signal_half_life=120, volatility=0.006
    ).candles["BTC"]
    after = candles["timestamp"] >= test_start
    scale = candles.loc[after, "open"].iloc[0] / other.loc[after, "open"].iloc[0]
    perturbed = candles.copy()
    for col in ("open", "high", "low", "close"):
        perturbed.loc[after, col] = other.loc[after, col] * scale
    perturbed.loc[after, "volume"] = other.loc[after, "volume"]
    perturbed.to_parquet(tmp_path / "b" / "BTC-USD_1h_synthetic.parquet", index=False)
    second = train(
        make_cfg(*args, f"data.path={tmp_path / 'b' / 'BTC-USD_1h_synthetic.parquet'}", run_dir=tmp_path / "run_b")
    )
    assert first.policy["long_threshold"] is not None or first.policy["short_threshold"] is not None
    assert second.policy == first.policy
    assert second.trading["total_return"] != first.trading["total_return"]  # the test did change


def test_walk_forward_chooses_each_folds_policy_on_its_own_validation_rows(tmp_path):
    result = train(
        make_cfg(
            *FAST,
            "experiment=tradeable",
            "data.rows=12000",
            "split=walk_forward",
            "split.embargo=12",
            "registry.enabled=false",
            "eval.leakage.shuffled_control=false",
            "eval.policy.min_val_trades=10",
            run_dir=tmp_path / "run",
        )
    )
    folds = result.data_summary.folds
    assert len(folds) == 4 and all(f["policy"]["chosen_on"] == "validation" for f in folds)
    for fold in folds:  # scored on at most that fold's validation rows (those closing before its test block)
        assert 0 < fold["policy"]["validation"]["rows"] <= fold["rows"]["val"]
    assert len({(f["policy"]["long_threshold"], f["policy"]["short_threshold"]) for f in folds}) > 1
    assert result.policy == folds[-1]["policy"]  # the saved model is the last fold's, with its policy
