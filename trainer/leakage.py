"""Leakage checks reported in result.json and usable as promotion gates.

- ``verify_split``: purge and embargo re-checked on the rows each fold actually used (not on the cutoffs
  the split meant to use): no training or validation label window may overlap a held-out one, and rows
  that follow a held-out segment start at least ``embargo`` after its last label ends.
- ``control_verdict``: the shuffled-label control (the same family refit on permuted training labels)
  must not score significantly above chance; if it does, the evaluation itself leaks.
- ``too_good``: scores that the timeframe does not allow (configurable ceilings; on synthetic data,
  anything significantly above the Bayes oracle).
"""

import numpy as np
import pandas as pd
from scipy.stats import binomtest, spearmanr


def _merged_spans(start: np.ndarray, end: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Union of closed intervals [start, end] as sorted, disjoint spans."""
    order = np.argsort(start, kind="stable")
    s, e = start[order], end[order]
    run_end = np.maximum.accumulate(e)
    new = np.ones(len(s), dtype=bool)
    new[1:] = s[1:] > run_end[:-1]
    first = np.flatnonzero(new)
    last = np.append(first[1:] - 1, len(s) - 1)
    return s[first], run_end[last]


def _overlapping(start: np.ndarray, end: np.ndarray, span_start: np.ndarray, span_end: np.ndarray) -> np.ndarray:
    """Which intervals [start, end] touch any of the disjoint sorted spans."""
    if len(span_start) == 0 or len(start) == 0:
        return np.zeros(len(start), dtype=bool)
    i = np.searchsorted(span_start, end, side="right") - 1  # last span starting at or before `end`
    ok = i >= 0
    return ok & (span_end[np.maximum(i, 0)] >= start)


def _gap_after(start: np.ndarray, span_end: np.ndarray) -> np.ndarray:
    """For each row, the time since the latest span that ended before it started (NaT-free: +inf if none)."""
    i = np.searchsorted(span_end, start, side="left") - 1
    gap = np.full(len(start), np.inf)
    has = i >= 0
    gap[has] = (start[has] - span_end[i[has]]).astype(np.float64)
    return gap


def verify_fold(
    rows: dict[str, np.ndarray], timestamp: np.ndarray, label_end: np.ndarray, embargo: pd.Timedelta
) -> dict:
    """Purge and embargo of one fold, from its rows (timestamps and label ends as int64 nanoseconds)."""
    emb = float(embargo.value)
    seg = {k: (timestamp[v], label_end[v]) for k, v in rows.items()}
    shared = {
        f"{a}&{b}": int(len(np.intersect1d(rows[a], rows[b])))
        for a, b in (("train", "val"), ("train", "test"), ("val", "test"))
    }
    out = {"rows_in_two_segments": shared}
    purge_violations, embargo_violations = {}, {}
    for earlier, held in (("train", "val"), ("train", "test"), ("val", "test")):
        ts, end = seg[earlier]
        h_start, h_end = _merged_spans(*seg[held])
        purge_violations[f"{earlier}~{held}"] = int(_overlapping(ts, end, h_start, h_end).sum())
        # rows of `earlier` that start after a held span must keep the embargo from its last label end
        gap = _gap_after(ts, h_end)
        embargo_violations[f"{earlier} after {held}"] = int(np.sum(np.isfinite(gap) & (gap < emb)))
    # validation and test: whichever comes later starts at least `embargo` after the other's labels end
    (v_ts, v_end), (t_ts, t_end) = seg["val"], seg["test"]
    if len(v_ts) and len(t_ts):
        if v_ts.min() < t_ts.min():
            gap = float(t_ts.min() - v_end.max())
        else:
            gap = float(v_ts.min() - t_end.max())
        embargo_violations["val/test boundary"] = int(gap < emb)
    out["purge_violations"] = purge_violations
    out["embargo_violations"] = embargo_violations
    out["passed"] = (
        not any(shared.values()) and not any(purge_violations.values()) and not any(embargo_violations.values())
    )
    return out


def verify_split(folds, frame: pd.DataFrame, embargo: pd.Timedelta) -> dict:
    """Every fold's purge and embargo, checked on the rows the fit and the evaluation really used."""
    ts = frame["timestamp"].to_numpy("datetime64[ns]").astype(np.int64)
    end = frame["purge_end"].to_numpy("datetime64[ns]").astype(np.int64)
    per_fold = {fold.name: verify_fold(fold.rows, ts, end, embargo) for fold in folds}
    return {"embargo": str(embargo), "folds": per_fold, "passed": all(f["passed"] for f in per_fold.values())}


def _binomial_above(k: int, n: int, p: float) -> float:
    return float(binomtest(k, n, p=min(max(p, 1e-9), 1 - 1e-9), alternative="greater").pvalue)


def control_verdict(
    hit: np.ndarray,
    chance: float,
    score: np.ndarray,
    forward_return: np.ndarray,
    horizon: int,
    alpha: float,
    *,
    trades: pd.DataFrame | None = None,
    up_share: float | None = None,
    max_rank_corr: float = 0.2,
    max_win_edge: float = 0.10,
) -> dict:
    """The shuffled-label control (a model fitted to permuted labels) must look like no skill on three
    counts, each tested one-sided at ``alpha`` on rows / horizon effective trials:

    - its calls: hit rate not above ``chance`` (its own call mix against the test outcomes);
    - its ranking: the rank correlation of its long-minus-short score with the realised forward return —
      this works even when a noise-fitted model collapses to one call;
    - the trading evaluation of that ranking (long above its median, short below, no costs): the win rate
      against what the long/short mix wins by chance (``up_share`` of moves were up). An evaluator that
      prices exits off entries (100% wins) fails here whatever the model.
    A function of informative features fitted to noise can rank the future a little by accident, so the
    last two fail only when significant *and* large: |rank corr| >= ``max_rank_corr``, win rate >= chance
    + ``max_win_edge``.
    ``conclusive`` is false when the score is constant: then nothing could have shown a leak."""
    n = len(hit)
    n_eff = max(1, n // max(1, int(horizon)))
    rate = float(np.mean(hit)) if n else float("nan")
    verdict = {
        "rate": rate,
        "chance": float(chance),
        "n_effective": n_eff,
        "alpha": alpha,
        "p_value": _binomial_above(int(round(rate * n_eff)), n_eff, chance),
    }
    varies = len(score) > 1 and float(np.std(score)) > 0
    rho = float(spearmanr(score, forward_return).statistic) if varies and np.std(forward_return) > 0 else 0.0
    verdict.update(rank_corr=rho, rank_corr_z=float(abs(rho) * np.sqrt(n_eff)), conclusive=bool(varies))
    ok = verdict["p_value"] >= alpha and not (verdict["rank_corr_z"] >= 3.0 and abs(rho) >= max_rank_corr)
    if trades is not None and up_share is not None and len(trades) >= 30:
        wins = int((trades["gross_return"] > 0).sum())
        longs = float(np.mean(trades["side"] > 0))
        null = longs * up_share + (1 - longs) * (1 - up_share)
        verdict["trading"] = {
            "trades": int(len(trades)),
            "win_rate": wins / len(trades),
            "chance": null,
            "p_value": _binomial_above(wins, len(trades), null),
        }
        ok = ok and not (verdict["trading"]["p_value"] < alpha and wins / len(trades) >= null + max_win_edge)
    verdict["passed"] = bool(ok)
    return verdict


def too_good(
    metrics: dict, best_baseline: float | None, trading: dict | None, timeframe: str, oracle_accuracy: float | None, cfg
) -> dict:
    """Flags scores no honest model reaches. ``cfg``: ``max_edge`` (hit rate minus the best naive baseline;
    a number or a mapping timeframe -> number with a ``default``), ``oracle_margin`` (synthetic data: the
    exact Bayes ceiling replaces ``max_edge``), ``max_win_rate`` (over >= 30 trades), ``max_sharpe``."""
    flags = []

    def ceiling(value):
        if value is None or isinstance(value, (int, float)):
            return value
        return value.get(timeframe, value.get("default"))

    acc = metrics.get("accuracy", metrics.get("directional_accuracy"))
    if oracle_accuracy is not None:
        margin = float(cfg.get("oracle_margin", 0.01))
        if acc is not None and acc > oracle_accuracy + margin:
            flags.append(f"accuracy {acc:.3f} above the Bayes oracle {oracle_accuracy:.3f}: impossible without a leak")
    else:
        limit = ceiling(cfg.get("max_edge"))
        if acc is not None and best_baseline is not None and limit is not None and acc - best_baseline > limit:
            flags.append(
                f"accuracy {acc:.3f} is {acc - best_baseline:.3f} above the best naive baseline "
                f"{best_baseline:.3f}; the {timeframe} ceiling is {limit}"
            )
    if trading:
        win, limit = trading.get("win_rate"), ceiling(cfg.get("max_win_rate"))
        if win is not None and limit is not None and (trading.get("n_trades") or 0) >= 30 and win > limit:
            flags.append(f"win rate {win:.3f} over {trading['n_trades']} trades above the ceiling {limit}")
        sharpe, limit = trading.get("sharpe"), ceiling(cfg.get("max_sharpe"))
        if sharpe is not None and limit is not None and sharpe > limit:
            flags.append(f"Sharpe {sharpe:.2f} above the ceiling {limit}")
    return {"flags": flags, "passed": not flags}
