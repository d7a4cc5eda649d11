"""The probability of backtest overfitting: hand-checked, a coin flip on noise, refused where it cannot split."""

import math

import numpy as np
import pytest

from trainer.selection import probability_of_backtest_overfitting


def test_pbo_hand_checked_two_configs_two_partitions():
    # A: block 0 [1, 3] (SR 1.414), block 1 [0, 2] (SR 0.707); B: block 0 [0, 1] (SR 0.707), block 1 [1, 4] (SR 1.179)
    overfit = np.array([[1.0, 0.0], [3.0, 1.0], [0.0, 1.0], [2.0, 4.0]])
    got = probability_of_backtest_overfitting(overfit, 2)
    # IS block 0 picks A, which is worst on block 1; IS block 1 picks B, worst on block 0: rank 1 of 2 both times
    assert got["pbo"] == 1.0 and got["median_logit"] == pytest.approx(math.log(0.5))
    assert (got["n_splits"], got["n_configurations"], got["n_periods"]) == (2, 2, 4)
    # B block 0 [2, 5] (SR 1.650): B is best in every half, in sample and out: never overfit
    honest = overfit.copy()
    honest[:2, 1] = [2.0, 5.0]
    got = probability_of_backtest_overfitting(honest, 2)
    assert got["pbo"] == 0.0 and got["median_logit"] == pytest.approx(math.log(2.0))


def test_pbo_noise_is_a_coin_flip_and_a_dominant_config_is_not_overfit():
    noise = [
        probability_of_backtest_overfitting(np.random.default_rng(seed).normal(0, 0.01, (256, 10)), 8)["pbo"]
        for seed in range(30)
    ]
    assert 0.4 < np.mean(noise) < 0.6
    rng = np.random.default_rng(7)
    returns = rng.normal(0, 0.01, (256, 10))
    returns[:, 3] += 0.005  # a real edge of half a standard deviation per period
    got = probability_of_backtest_overfitting(returns)  # default 16 partitions: C(16, 8) splits
    assert got["n_splits"] == 12870 and got["pbo"] < 0.02


def test_pbo_refuses_what_it_cannot_split():
    for matrix, s in (
        (np.zeros((64, 1)), 8),
        (np.zeros((10, 3)), 8),
        (np.zeros((64, 3)), 7),
        (np.full((64, 3), np.nan), 8),
    ):
        with pytest.raises(ValueError):
            probability_of_backtest_overfitting(matrix, s)
