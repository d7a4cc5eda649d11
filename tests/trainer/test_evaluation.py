"""Evaluation pieces in isolation: confidence tiers, significance, split verification, leak flags, gates."""

import numpy as np
import pandas as pd
import pytest
from omegaconf import OmegaConf

from core.errors import UserError
from data.splits import Fold, make_folds
from tests.conftest import make_cfg
from trainer.gates import evaluate_gates
from trainer.leakage import control_verdict, too_good, verify_fold, verify_split
from trainer.metrics import block_bootstrap_ci, classification_metrics, confidence_tiers, significance

STEP = pd.Timedelta(minutes=1)


def test_confidence_tiers_report_the_observed_hit_rate_of_each_tier():
    rng = np.random.default_rng(0)
    conf = np.r_[np.full(4000, 0.52), np.full(4000, 0.62), np.full(2000, 0.9)]
    truth_rate = np.r_[np.full(4000, 0.52), np.full(4000, 0.45), np.full(2000, 0.9)]  # tier 0.60-0.65 overconfident
    hit = (rng.random(len(conf)) < truth_rate).astype(float)
    tiers = {t["tier"]: t for t in confidence_tiers(conf, hit)}
    assert tiers["0.50-0.55"]["n"] == 4000 and abs(tiers["0.50-0.55"]["observed"] - 0.52) < 0.03
    assert tiers["0.60-0.65"]["observed"] < 0.50 and tiers["0.60-0.65"]["gap"] < -0.12
    assert tiers["0.80-1.00"]["n"] == 2000 and abs(tiers["0.80-1.00"]["gap"]) < 0.03
    assert tiers["0.55-0.60"]["n"] == 0 and tiers["0.55-0.60"]["observed"] is None


def test_binary_metrics_carry_tiers_from_real_outcomes():
    y = np.array([1, 1, 0, 0, 1, 0])
    p_up = np.array([0.9, 0.8, 0.85, 0.1, 0.3, 0.45])
    m = classification_metrics(np.c_[1 - p_up, p_up], y)
    # confidence max(p, 1-p) >= 0.8: rows 0, 1, 3 called right, row 2 (0.85 up, fell) wrong
    top = [t for t in m["confidence_tiers"] if t["tier"] == "0.80-1.00"][0]
    assert top["n"] == 4 and top["observed"] == 0.75


def test_binomial_p_value_is_uniform_under_no_skill():
    rng = np.random.default_rng(1)
    ps = [
        significance((rng.random(2000) < 0.5).astype(float), 0.5, 1, resamples=50, seed=i)["p_value"]
        for i in range(300)
    ]
    assert 0.01 <= np.mean(np.array(ps) < 0.05) <= 0.10  # about 5% false alarms at alpha 0.05


def test_significance_detects_a_real_edge_and_respects_overlap():
    rng = np.random.default_rng(2)
    hit = (rng.random(20000) < 0.53).astype(float)
    assert significance(hit, 0.5, 1)["p_value"] < 1e-6
    # the same rows counted as 20-candle overlapping labels carry 20x fewer independent trials
    sig = significance(hit, 0.5, 20)
    assert sig["n_effective"] == 1000 and sig["p_value"] > 1e-6


def test_block_bootstrap_widens_for_serially_dependent_hits():
    rng = np.random.default_rng(3)
    iid = (rng.random(6000) < 0.55).astype(float)
    blocky = np.repeat((rng.random(300) < 0.55).astype(float), 20)  # runs of 20 identical outcomes
    lo_i, hi_i = block_bootstrap_ci(iid, block=1)
    lo_b, hi_b = block_bootstrap_ci(blocky, block=40)
    assert lo_i < iid.mean() < hi_i and lo_b < blocky.mean() < hi_b
    assert (hi_b - lo_b) > 3 * (hi_i - lo_i)


def _table(rows_per_symbol=3000, horizon=15, symbols=("BTC", "ETH")):
    ts = pd.date_range("2024-01-01", periods=rows_per_symbol, freq=STEP, tz="UTC")
    frame = pd.concat(
        [pd.DataFrame({"symbol": s, "timestamp": ts, "purge_end": ts + horizon * STEP}) for s in symbols],
        ignore_index=True,
    )
    return frame


@pytest.mark.parametrize("split", ["holdout", "walk_forward", "purged_kfold"])
def test_every_real_split_passes_the_purge_and_embargo_check(split):
    frame = _table()
    cfg = make_cfg(f"split={split}")
    folds = make_folds(cfg.split, frame["timestamp"], frame["purge_end"], np.ones(len(frame), bool), STEP)
    check = verify_split(folds, frame, int(cfg.split.embargo) * STEP)
    assert check["passed"], check


def test_split_check_catches_unpurged_train_rows_and_a_missing_embargo():
    frame = _table(symbols=("BTC",))
    ts = frame["timestamp"].to_numpy("datetime64[ns]").astype(np.int64)
    end = frame["purge_end"].to_numpy("datetime64[ns]").astype(np.int64)
    # the replaced system's split: train right up to the validation start, test right after validation
    leaky = {"train": np.arange(0, 2000), "val": np.arange(2000, 2500), "test": np.arange(2500, 3000)}
    check = verify_fold(leaky, ts, end, 30 * STEP)
    assert not check["passed"]
    assert check["purge_violations"]["train~val"] == 15  # the last 15 train labels end inside val
    assert check["purge_violations"]["val~test"] == 15
    assert check["embargo_violations"]["val/test boundary"] == 1
    honest = {"train": np.arange(0, 1985), "val": np.arange(2030, 2485), "test": np.arange(2530, 3000)}
    assert verify_fold(honest, ts, end, 30 * STEP)["passed"]
    shared = {"train": np.arange(0, 1985), "val": np.arange(2030, 2485), "test": np.arange(2400, 3000)}
    assert verify_fold(shared, ts, end, 30 * STEP)["rows_in_two_segments"]["val&test"] == 85


def test_split_check_sees_train_rows_that_restart_too_soon_after_a_held_block():
    frame = _table(symbols=("BTC",))
    ts = frame["timestamp"].to_numpy("datetime64[ns]").astype(np.int64)
    end = frame["purge_end"].to_numpy("datetime64[ns]").astype(np.int64)
    # purged k-fold shape: test in the middle; train resumes 20 candles after the test labels end (< 30)
    rows = {
        "train": np.r_[np.arange(0, 985), np.arange(2035, 3000)],
        "val": np.arange(1030, 1200),
        "test": np.arange(1245, 2000),
    }
    check = verify_fold(rows, ts, end, 30 * STEP)
    assert check["purge_violations"]["train~test"] == 0
    # the test labels end at candle 2014: train rows 2035..2043 start fewer than 30 candles later
    assert check["embargo_violations"]["train after test"] == 9


def test_control_verdict_flags_skill_on_any_of_its_three_counts():
    rng = np.random.default_rng(4)
    n = 5000
    forward = rng.standard_normal(n)
    noise = rng.standard_normal(n)
    at_chance = (rng.random(n) < 0.52).astype(float)
    clean = control_verdict(at_chance, 0.52, noise, forward, 1, 0.01)
    assert clean["passed"] and clean["conclusive"]
    assert not control_verdict((rng.random(n) < 0.60).astype(float), 0.52, noise, forward, 1, 0.01)["passed"]
    # calls at chance, but a ranking that knows the future
    ranked = control_verdict(at_chance, 0.52, forward + rng.standard_normal(n), forward, 1, 0.01)
    assert not ranked["passed"] and ranked["rank_corr_z"] > 3
    # an evaluator that prices exits off entries: every trade of a no-skill ranking "wins"
    rigged = pd.DataFrame({"side": rng.choice([-1, 1], 400), "gross_return": np.full(400, 0.01)})
    fair = rigged.assign(gross_return=rng.standard_normal(400))
    assert not control_verdict(at_chance, 0.52, noise, forward, 1, 0.01, trades=rigged, up_share=0.5)["passed"]
    assert control_verdict(at_chance, 0.52, noise, forward, 1, 0.01, trades=fair, up_share=0.5)["passed"]
    # a control that collapsed to one constant output could not have shown anything
    assert not control_verdict(at_chance, 0.52, np.zeros(n), forward, 1, 0.01)["conclusive"]


def test_no_skill_baseline_catches_a_model_that_only_leans_with_the_test_trend():
    from trainer.metrics import no_skill_rate

    rng = np.random.default_rng(5)
    truth = (rng.random(20000) < 0.40).astype(int)  # a falling test period: 60% down
    leaning = (rng.random(20000) < 0.10).astype(int)  # calls 'down' 90% of the time, at random
    hit = (leaning == truth).astype(float)
    chance = no_skill_rate(leaning, truth)
    assert abs(chance - (0.9 * 0.6 + 0.1 * 0.4)) < 0.01
    assert hit.mean() > 0.55  # beats a training-majority 'up' call (0.40) easily
    assert significance(hit, chance, 1)["p_value"] > 0.01  # but not the no-skill rate of its own call mix


def test_too_good_flags():
    cfg = OmegaConf.create(
        {"max_edge": {"default": 0.15, "1m": 0.05}, "oracle_margin": 0.01, "max_win_rate": 0.8, "max_sharpe": 8.0}
    )
    assert too_good({"accuracy": 0.60}, 0.52, None, "1h", None, cfg)["passed"]
    assert not too_good({"accuracy": 0.60}, 0.52, None, "1m", None, cfg)["passed"]  # per-timeframe ceiling
    assert not too_good({"accuracy": 0.70}, 0.54, None, "1m", 0.67, cfg)["passed"]  # above the Bayes oracle
    assert too_good({"accuracy": 0.66}, 0.54, None, "1m", 0.67, cfg)["passed"]
    legacy = {"win_rate": 1.0, "n_trades": 500, "sharpe": 40.0}
    flags = too_good({"accuracy": 0.55}, 0.52, legacy, "1h", None, cfg)["flags"]
    assert len(flags) == 2 and "win rate" in flags[0] and "Sharpe" in flags[1]
    assert too_good({"accuracy": 0.55}, 0.52, {"win_rate": 1.0, "n_trades": 5}, "1h", None, cfg)["passed"]


def _row(hit, ece=0.02, p=0.001, best=0.52, trades=100):
    return {
        "hit_rate": hit,
        "ece": ece,
        "n": 1000,
        "trades": trades,
        "best_baseline": {"name": "majority_class", "value": best},
        "significance": {"p_value": p},
    }


def _evaluation(symbols, leak_ok=True, control=True):
    check = {"passed": leak_ok}
    return {
        "overall": _row(0.6),
        "symbols": symbols,
        "leakage": {
            "split": check,
            "shuffled_control": {"passed": True} if control else None,
            "too_good": {"passed": True},
        },
    }


def test_legacy_gates_are_two_of_three_at_068_and_ask_nothing_else():
    gates = make_cfg("eval/gates=legacy").eval.gates
    two = {"BTC": _row(0.70), "ETH": _row(0.69), "SOL": _row(0.60)}
    assert evaluate_gates(gates, _evaluation(two, leak_ok=False), 0.01)["passed"]  # leaks ignored
    one = {"BTC": _row(0.70), "ETH": _row(0.60), "SOL": _row(0.60)}
    verdict = evaluate_gates(gates, _evaluation(one), 0.01)
    assert not verdict["passed"] and verdict["symbols_passing"] == 1 and verdict["min_symbols"] == 2
    miscalibrated = {"BTC": _row(0.70, ece=0.08), "ETH": _row(0.70), "SOL": _row(0.60)}
    assert not evaluate_gates(gates, _evaluation(miscalibrated), 0.01)["passed"]


def test_honest_gates_need_every_symbol_significant_and_clean_leak_checks():
    gates = make_cfg().eval.gates
    good = {"BTC": _row(0.58), "ETH": _row(0.57)}
    assert evaluate_gates(gates, _evaluation(good), 0.01)["passed"]
    weak = {"BTC": _row(0.58), "ETH": _row(0.53, p=0.2)}
    verdict = evaluate_gates(gates, _evaluation(weak), 0.01)
    assert not verdict["passed"] and verdict["symbols"]["ETH"]["checks"]["beat_baselines"]["passed"] is False
    assert not evaluate_gates(gates, _evaluation(good, leak_ok=False), 0.01)["passed"]
    no_control = evaluate_gates(gates, _evaluation(good, control=False), 0.01)
    assert not no_control["passed"] and "shuffled_control was not run" in no_control["reasons"][0]
    # k of n from the command line: one of two symbols is enough
    k1 = make_cfg("eval.gates.min_symbols=1").eval.gates
    assert evaluate_gates(k1, _evaluation(weak), 0.01)["passed"]


def test_regression_has_no_ece_check_and_min_symbols_is_validated():
    gates = make_cfg().eval.gates
    verdict = evaluate_gates(gates, _evaluation({"BTC": _row(0.58, ece=None)}), 0.01)
    assert verdict["passed"] and verdict["symbols"]["BTC"]["checks"]["max_ece"]["passed"] is None
    with pytest.raises(UserError, match="min_symbols"):
        evaluate_gates(make_cfg("eval.gates.min_symbols=0").eval.gates, _evaluation({"BTC": _row(0.6)}), 0.01)


def test_fold_helper_is_the_one_the_pipeline_uses():
    frame = _table(symbols=("BTC",))
    fold = Fold("x", {"train": np.arange(10), "val": np.arange(10), "test": np.arange(20, 30)}, {})
    assert not verify_split([fold], frame, 0 * STEP)["passed"]  # rows in two segments


def test_a_symbol_without_test_rows_fails_and_k_cannot_exceed_n():
    gates = make_cfg("eval.gates.min_symbols=2").eval.gates
    only_btc = _evaluation({"BTC": _row(0.6)})
    verdict = evaluate_gates(gates, only_btc, 0.01, ["BTC", "XRP"])
    assert not verdict["passed"] and verdict["symbols"]["XRP"]["checks"]["test_rows"]["passed"] is False
    assert verdict["symbols_total"] == 2 and verdict["symbols_passing"] == 1
    legacy = make_cfg("eval/gates=legacy").eval.gates  # 2 of n on a one-coin run: refused, not shrunk
    assert "k of n needs n >= k" in evaluate_gates(legacy, only_btc, 0.01, ["BTC"])["reasons"][0]


def test_a_split_that_trains_on_the_future_never_qualifies():
    ev = _evaluation({"BTC": _row(0.6)})
    ev["forward_looking"] = False
    verdict = evaluate_gates(make_cfg().eval.gates, ev, 0.01, ["BTC"])
    assert not verdict["passed"] and "not forward-looking" in verdict["reasons"][0]


@pytest.mark.parametrize(
    "override,where",
    [
        ("eval.trading.threshold=0.4", "eval.trading.threshold"),
        ("eval.significance.alpha=0", "eval.significance.alpha"),
        ("eval.trading.fee_bps=-1", "eval.trading.fee_bps"),
        ("eval.gates.min_symbols=none", "eval.gates.min_symbols"),
        ("registry.keep_candidates=0", "registry.keep_candidates"),
    ],
)
def test_evaluation_settings_are_checked_before_any_work(override, where):
    from trainer.checks import check_config

    with pytest.raises(UserError) as err:
        check_config(make_cfg(override))
    assert err.value.where == where
