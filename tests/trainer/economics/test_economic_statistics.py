"""Deflated and probabilistic Sharpe, the block-bootstrap p of the mean return, and the trial count of a sweep."""

import math

import numpy as np
import pytest
from omegaconf import OmegaConf

from core.errors import UserError
from trainer.selection import (
    deflated_sharpe,
    expected_max_sharpe,
    mean_return_p_value,
    n_trials,
    probabilistic_sharpe,
    sweep_size,
)


def test_deflated_sharpe_matches_the_papers_worked_example():
    # Bailey & Lopez de Prado (2014): annualised SR 2.5 over 5 years of daily returns (T = 1250), skew -3,
    # kurtosis 10, N = 100 trials whose annualised Sharpes vary by 0.5: SR0 = 0.1132 per day, DSR = 0.9004
    sr0 = expected_max_sharpe(100, 0.5 / 250)
    assert sr0 == pytest.approx(0.1132, abs=5e-4)
    assert probabilistic_sharpe(2.5 / math.sqrt(250), sr0, 1250, -3.0, 10.0) == pytest.approx(0.9004, abs=5e-4)


def test_probabilistic_sharpe_by_hand_and_the_single_trial_benchmark():
    # normal returns: Phi(0.1 * sqrt(99) / sqrt(1 + (3 - 1) / 4 * 0.01)) = Phi(0.99251) = 0.83953
    assert probabilistic_sharpe(0.1, 0.0, 100, 0.0, 3.0) == pytest.approx(0.83953, abs=1e-4)
    assert expected_max_sharpe(1, 0.04) == 0.0  # one trial: nothing was selected
    r = np.random.default_rng(0).normal(0.002, 0.01, 400)
    one, fifty = deflated_sharpe(r, 1), deflated_sharpe(r, 50)
    assert one["dsr"] == pytest.approx(one["psr"])
    # the null default: the trials' Sharpes scatter like a Sharpe of T returns, variance 1 / (T - 1)
    assert fifty["trial_sharpe_variance"] == pytest.approx(1 / 399)
    assert fifty["expected_max_sharpe"] == pytest.approx(expected_max_sharpe(50, 1 / 399))
    assert fifty["dsr"] < one["dsr"]
    given = deflated_sharpe(r, 50, trial_sharpes=[0.0, 0.1, 0.2])
    assert given["trial_sharpe_variance"] == pytest.approx(0.01) and given["variance_source"] == "competing trials"


def test_block_bootstrap_p_of_the_mean_return():
    rng = np.random.default_rng(1)
    assert mean_return_p_value(rng.normal(0.01, 0.01, 200), 5, 2000, 0) < 0.001
    assert mean_return_p_value(rng.normal(-0.01, 0.01, 200), 5, 2000, 0) > 0.99
    assert mean_return_p_value(np.array([0.1]), 1, 100, 0) is None


def test_sweep_size_counts_the_jobs_hydra_wrote_down(tmp_path):
    (tmp_path / "multirun.yaml").write_text(
        "hydra:\n  overrides:\n    task: ['seed=1,2,3', 'model=lightgbm,xgboost', 'coin=BTC']\n  sweeper: {}\n"
    )
    assert sweep_size(tmp_path) == 6
    (tmp_path / "multirun.yaml").write_text("hydra:\n  overrides:\n    task: []\n  sweeper: {n_trials: 40}\n")
    assert sweep_size(tmp_path) == 40
    assert n_trials(OmegaConf.create({"n_trials": "auto"})) == {"n_trials": 1, "source": "single run"}
    assert n_trials(OmegaConf.create({"n_trials": 12}))["n_trials"] == 12
    with pytest.raises(UserError, match="n_trials"):
        n_trials(OmegaConf.create({"n_trials": 0}))
