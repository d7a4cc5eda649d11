"""Selection-aware statistics: how much a strategy's test returns say once we know how many were tried.

- ``probabilistic_sharpe``: P(true Sharpe > benchmark) from an estimated per-period Sharpe, its sample size,
  skewness and (non-excess) kurtosis (Bailey & Lopez de Prado 2012).
- ``expected_max_sharpe``: the Sharpe the best of N unskilled trials reaches by luck, from the variance of the
  trials' Sharpes (Bailey & Lopez de Prado 2014, eq. for SR0 with the Euler-Mascheroni constant).
- ``deflated_sharpe``: the probabilistic Sharpe against that expected maximum (the Deflated Sharpe Ratio).
  When the competing trials' Sharpes are unknown, their variance is taken as the null variance of a Sharpe
  estimated from T returns, 1 / (T - 1): what N skill-less strategies of the same length would scatter by.
- ``mean_return_p_value``: one-sided circular block-bootstrap p of "mean return <= 0".
- ``n_trials``: how many configurations competed for this run's slot (``eval.selection.n_trials``).
- ``probability_of_backtest_overfitting``: PBO by combinatorially symmetric cross-validation over the competing
  configurations' per-period returns (Bailey, Borwein, Lopez de Prado & Zhu 2017).

Sharpe ratios here are per period (per trade for trade returns), never annualised.
"""

from __future__ import annotations

import itertools
import logging
import math
from pathlib import Path

import numpy as np
from scipy import stats

from core.errors import UserError

log = logging.getLogger(__name__)

EULER_GAMMA = 0.5772156649015329


def sharpe(returns: np.ndarray) -> float | None:
    """Per-period Sharpe ratio (mean / sample std); None with fewer than 2 returns or no dispersion."""
    r = np.asarray(returns, dtype=np.float64)
    if len(r) < 2:
        return None
    sd = float(r.std(ddof=1))
    return float(r.mean() / sd) if sd > 0 else None


def probabilistic_sharpe(sr: float, sr_benchmark: float, n: int, skew: float, kurtosis: float) -> float:
    """P(true SR > sr_benchmark) given the estimate ``sr`` from ``n`` returns; ``kurtosis`` is non-excess
    (3 for a normal distribution)."""
    if n < 2:
        return float("nan")
    var = 1.0 - skew * sr + (kurtosis - 1.0) / 4.0 * sr * sr
    if var <= 0:  # the estimator's variance formula breaks down for extreme higher moments
        var = 1e-12
    return float(stats.norm.cdf((sr - sr_benchmark) * math.sqrt(n - 1) / math.sqrt(var)))


def expected_max_sharpe(n_trials: int, trial_sharpe_variance: float) -> float:
    """E[max SR] over ``n_trials`` skill-less trials whose Sharpes vary with ``trial_sharpe_variance``.
    Zero for a single trial (nothing was selected)."""
    n = int(n_trials)
    if n < 1:
        raise ValueError(f"n_trials must be >= 1, got {n_trials}")
    if n == 1:
        return 0.0
    z1 = stats.norm.ppf(1.0 - 1.0 / n)
    z2 = stats.norm.ppf(1.0 - 1.0 / (n * math.e))
    return float(math.sqrt(max(trial_sharpe_variance, 0.0)) * ((1 - EULER_GAMMA) * z1 + EULER_GAMMA * z2))


def deflated_sharpe(
    returns: np.ndarray,
    n_trials: int,
    trial_sharpes: list[float] | None = None,
    trial_sharpe_variance: float | None = None,
) -> dict:
    """The Deflated Sharpe Ratio of ``returns`` selected as the best of ``n_trials``.

    The variance of the trials' Sharpes comes from ``trial_sharpe_variance``, else from ``trial_sharpes`` (the
    competing configurations' own per-period Sharpes, two or more), else the null default 1 / (T - 1).
    Returns a JSON-ready dict; ``dsr`` is None when fewer than 2 returns or no dispersion."""
    r = np.asarray(returns, dtype=np.float64)
    r = r[np.isfinite(r)]
    n = len(r)
    sr = sharpe(r)
    if trial_sharpe_variance is not None:
        variance, source = float(trial_sharpe_variance), "given"
    elif trial_sharpes is not None and len([s for s in trial_sharpes if s is not None]) >= 2:
        known = np.asarray([s for s in trial_sharpes if s is not None], dtype=np.float64)
        variance, source = float(known.var(ddof=1)), "competing trials"
    else:
        variance, source = (1.0 / (n - 1) if n >= 2 else float("nan")), "null 1/(T-1)"
    out = {
        "n_returns": n,
        "n_trials": int(n_trials),
        "sharpe": sr,
        "skew": None,
        "kurtosis": None,
        "trial_sharpe_variance": variance if math.isfinite(variance) else None,
        "variance_source": source,
        "expected_max_sharpe": None,
        "dsr": None,
        "psr": None,
    }
    if sr is None:
        return out
    skew = float(stats.skew(r, bias=False)) if n > 2 else 0.0
    kurt = float(stats.kurtosis(r, fisher=False, bias=False)) if n > 3 else 3.0
    sr0 = expected_max_sharpe(n_trials, variance)
    out.update(
        skew=skew,
        kurtosis=kurt,
        expected_max_sharpe=sr0,
        dsr=probabilistic_sharpe(sr, sr0, n, skew, kurt),
        psr=probabilistic_sharpe(sr, 0.0, n, skew, kurt),
    )
    return out


def mean_return_p_value(returns: np.ndarray, block: int, resamples: int, seed: int) -> float | None:
    """One-sided p of "the mean return is <= 0": circular block bootstrap of the demeaned returns (the null
    world), share of resampled means at or above the observed one. Blocks keep serial dependence."""
    r = np.asarray(returns, dtype=np.float64)
    r = r[np.isfinite(r)]
    n = len(r)
    if n < 2:
        return None
    observed = float(r.mean())
    centred = r - observed
    block = int(min(max(1, block), n))
    n_blocks = int(np.ceil(n / block))
    cum = np.concatenate([[0.0], np.cumsum(np.concatenate([centred, centred[:block]]))])
    rng = np.random.default_rng(seed)
    starts = rng.integers(0, n, size=(int(resamples), n_blocks))
    means = (cum[starts + block] - cum[starts]).sum(axis=1) / (n_blocks * block)
    return float((1 + np.sum(means >= observed)) / (int(resamples) + 1))


def sweep_size(sweep_dir: Path) -> int | None:
    """The number of jobs of a Hydra multirun, read from the ``multirun.yaml`` the sweeper wrote into its
    sweep folder: an Optuna search's ``n_trials``, else the product of the swept overrides' choices."""
    path = Path(sweep_dir) / "multirun.yaml"
    if not path.is_file():
        return None
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from omegaconf import OmegaConf

    conf = OmegaConf.load(path)
    sweeper = conf.hydra.get("sweeper") or {}
    if sweeper.get("n_trials") is not None:
        return int(sweeper.n_trials)
    overrides = list(conf.hydra.overrides.get("task") or [])
    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
        batches = BasicSweeper.split_arguments(parsed, None)
    except Exception:  # a sweeper with its own override grammar: its size is not ours to guess
        log.warning("could not count the jobs of the sweep in %s", sweep_dir)
        return None
    return sum(len(b) for b in batches)


def n_trials(selection_cfg) -> dict:
    """How many configurations competed for this run's slot: ``eval.selection.n_trials`` as a number, or
    ``auto`` = the size of the Hydra multirun this job belongs to, 1 for a lone run."""
    value = selection_cfg.get("n_trials", "auto") if selection_cfg is not None else "auto"
    if value is None or str(value) == "auto":
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
            hc = HydraConfig.get()
            # a search (Optuna) knows its trial budget in the job's own config
            searched = (hc.get("sweeper") or {}).get("n_trials")
            size = int(searched) if searched is not None else sweep_size(Path(hc.sweep.dir))
            if size is None:  # at least every job numbered so far competed
                size = int(hc.job.num) + 1
                log.warning("eval.selection.n_trials=auto: sweep size unknown, counting %d trials (set it)", size)
            return {"n_trials": max(1, size), "source": "multirun"}
        return {"n_trials": 1, "source": "single run"}
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        try:
            value = int(str(value))
        except ValueError:
            value = 0
        if value < 1:
            raise UserError(
                f"n_trials must be 'auto' or a whole number >= 1, got {selection_cfg.get('n_trials')!r}",
                "eval.selection.n_trials",
            )
    return {"n_trials": int(value), "source": "config"}


def probability_of_backtest_overfitting(returns_matrix, n_partitions: int = 16) -> dict:
    """Probability of Backtest Overfitting by combinatorially symmetric cross-validation (Bailey, Borwein,
    López de Prado & Zhu, 2017).

    ``returns_matrix``: T periods (rows, in time order, on one common grid) x N competing configurations.
    The rows are cut into ``n_partitions`` (S, even) equal blocks (the oldest ``T mod S`` rows are dropped).
    For each of the C(S, S/2) ways to pick half the blocks as in-sample, the configuration with the best
    in-sample Sharpe ratio (mean / std of its period returns) is ranked among all N on the other half;
    ``logit = log(w / (1 - w))`` with ``w = rank / (N + 1)`` (rank 1 = worst out of sample). PBO is the share
    of splits whose logit is below 0 (a rank exactly at the median counts half): the chance that the
    configuration a search would pick is no better than the median one out of sample.

    Returns ``pbo``, the median logit, and the sizes used. ValueError on a matrix it cannot split."""
    m = np.asarray(returns_matrix, dtype=np.float64)
    s = n_partitions
    if isinstance(s, bool) or not isinstance(s, (int, np.integer)) or s < 2 or s % 2:
        raise ValueError(f"n_partitions must be an even whole number >= 2, got {n_partitions!r}")
    if m.ndim != 2:
        raise ValueError(f"returns_matrix must be periods x configurations, got shape {m.shape}")
    t, n = m.shape
    if n < 2:
        raise ValueError(f"needs at least 2 competing configurations, got {n}")
    if t < 2 * s:
        raise ValueError(f"needs at least 2 periods per partition: {t} periods for {s} partitions")
    if not np.isfinite(m).all():
        raise ValueError("returns_matrix holds NaN or infinite returns")
    per = t // s
    blocks = m[t - per * s :].reshape(s, per, n)
    sums, squares = blocks.sum(axis=1), (blocks**2).sum(axis=1)  # S x N
    chosen = np.array(list(itertools.combinations(range(s), s // 2)))
    in_sample = np.zeros((len(chosen), s))
    in_sample[np.arange(len(chosen))[:, None], chosen] = 1.0
    half = per * (s // 2)

    def sharpe(total: np.ndarray, total_sq: np.ndarray) -> np.ndarray:
        mean = total / half
        var = np.maximum(total_sq - half * mean**2, 0.0) / (half - 1)
        std = np.sqrt(var)
        tiny = std <= 1e-12 * np.maximum(np.abs(mean), 1e-300)
        # a constant return: its Sharpe is +-inf (or 0 when it is 0), so it ranks above/below every other
        return np.where(tiny, np.sign(mean) * np.inf, mean / np.where(tiny, 1.0, std))

    is_sr = sharpe(in_sample @ sums, in_sample @ squares)  # C x N
    oos_sr = sharpe((1.0 - in_sample) @ sums, (1.0 - in_sample) @ squares)
    best = np.argmax(is_sr, axis=1)
    best_oos = oos_sr[np.arange(len(best)), best][:, None]
    below = (oos_sr < best_oos).sum(axis=1)
    ties = (oos_sr == best_oos).sum(axis=1) - 1
    rank = below + 1 + ties / 2.0  # 1 = worst, N = best; ties share
    w = rank / (n + 1)
    logits = np.log(w / (1.0 - w))
    pbo = float(np.mean(np.where(np.isclose(logits, 0.0), 0.5, logits < 0)))
    return {
        "pbo": pbo,
        "median_logit": float(np.median(logits)),
        "n_configurations": int(n),
        "n_periods": int(per * s),
        "n_partitions": int(s),
        "n_splits": int(len(chosen)),
    }
