"""Everything said about a run's test predictions beyond the metrics themselves: significance against
the naive baselines (overall and per symbol), the trading evaluation, and the leakage checks. Metrics
are computed by ``trainer.metrics``; this module decides which rows and which calls they are given."""

import numpy as np
import pandas as pd
from omegaconf import DictConfig

from core.errors import UserError
from data.labels import TASKS
from data.providers import Candles
from models.base import Task
from trainer.backtest import backtest
from trainer.leakage import too_good
from trainer.metrics import calls, no_skill_rate, significance, truths
from trainer.policy import DecisionPolicy
from trainer.selection import deflated_sharpe, mean_return_p_value

HIT_METRIC = {True: "accuracy", False: "directional_accuracy"}


def _row(
    metrics: dict,
    call: np.ndarray,
    truth: np.ndarray,
    base_hits: dict[str, np.ndarray],
    horizon: int,
    sig_cfg,
    seed: int,
) -> dict:
    """Hit rate against every baseline on the same rows; significance against the best of them. The
    ``no_skill`` baseline (the model's own call mix, independent of the outcome) keeps a model that merely
    leans to the side the test period favoured from passing for skill."""
    model_hit = (call == truth).astype(np.float64)
    rates = {k: float(v.mean()) for k, v in base_hits.items()}
    rates["no_skill"] = no_skill_rate(call, truth)
    best = max(rates, key=rates.get)
    return {
        "hit_rate": float(model_hit.mean()),
        "ece": metrics.get("ece"),
        "n": int(len(model_hit)),
        "baselines": rates,
        "best_baseline": {"name": best, "value": rates[best]},
        "significance": significance(
            model_hit, rates[best], horizon, sig_cfg.get("block"), int(sig_cfg.resamples), float(sig_cfg.level), seed
        ),
    }


def significance_table(
    task: Task,
    proba: np.ndarray,
    y: np.ndarray,
    *,
    symbols: np.ndarray,
    base_hits: dict[str, np.ndarray],
    per_symbol: dict,
    overall: dict,
    horizon: int,
    cfg: DictConfig,
) -> dict:
    """Hit rate, baselines and significance overall and per symbol."""
    call, truth = calls(task, proba), truths(task, y)
    sig = cfg.eval.significance
    out = {
        "hit_metric": HIT_METRIC[task.is_classification],
        "overall": _row(overall, call, truth, base_hits, horizon, sig, cfg.seed),
        "symbols": {},
    }
    for sym, metrics in per_symbol.items():
        m = symbols == sym
        out["symbols"][sym] = _row(
            metrics, call[m], truth[m], {k: v[m] for k, v in base_hits.items()}, horizon, sig, cfg.seed
        )
    return out


def class_long_short(target_type: str, proba: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """P(a long wins), P(a short wins) per row from a classifier's outputs; None for a regression target."""
    if TASKS.get(target_type) == "binary":
        return proba[:, 1], proba[:, 0]
    if target_type in ("direction3", "triple_barrier"):  # classes: 0 down/stop, 1 flat/hold, 2 up/take
        return proba[:, 2], proba[:, 0]
    if target_type == "quantile":  # the buckets above the middle against those below it
        k = proba.shape[1]
        return proba[:, k - k // 2 :].sum(1), proba[:, : k // 2].sum(1)
    return None


def trade_signals(task: Task, target: DictConfig, proba: np.ndarray, cost: float) -> tuple[np.ndarray, np.ndarray]:
    """P(a long wins), P(a short wins) per row from the model's outputs for this target."""
    sides = class_long_short(str(target.type), proba)
    if sides is not None:
        return sides
    pred = proba[:, 0]  # regression: trade a forecast return that clears the round-trip cost
    return (pred > cost).astype(np.float64), (pred < -cost).astype(np.float64)


def signal_score(task: Task, target: DictConfig, proba: np.ndarray) -> np.ndarray:
    """One number per row, higher = more bullish: P(long wins) - P(short wins), or the forecast return."""
    if task.kind == "regression":
        return proba[:, 0].astype(np.float64)
    p_long, p_short = trade_signals(task, target, proba, 0.0)
    return (p_long - p_short).astype(np.float64)


def ranked_trades(score: np.ndarray, frame: pd.DataFrame, rows: np.ndarray, candles: Candles, cfg: DictConfig):
    """Trades from a score's ranking alone (long above its median, short below), at zero cost: what the
    shuffled-label control is traded with, so a collapsed call mix still yields trades to check."""
    median = np.median(score)
    signals = (
        frame.iloc[rows][["symbol", "timestamp"]]
        .reset_index(drop=True)
        .assign(p_long=(score > median).astype(np.float64), p_short=(score < median).astype(np.float64))
    )
    free = {
        "threshold": 0.55,
        "allow_short": True,
        "fee_bps": 0.0,
        "slippage_bps": 0.0,
        "spread_bps": 0.0,
        "periods_per_year": cfg.eval.trading.get("periods_per_year"),
    }
    return backtest(signals, candles.by_symbol, candles.step, int(cfg.target.horizon), free).trades


def causal_spread(frame: pd.DataFrame, rows: np.ndarray, window: int) -> np.ndarray | None:
    """The Corwin-Schultz spread averaged over the last ``window`` candles of the same symbol (known at t)."""
    if "cs_spread" not in frame.columns:
        return None
    smooth = frame.groupby("symbol", sort=False)["cs_spread"].transform(
        lambda s: s.rolling(window, min_periods=1).mean()
    )
    return smooth.to_numpy(np.float64)[rows]


def round_trip_cost(tcfg) -> float:
    """Fees and slippage on both sides plus the fallback full spread, as a fraction of notional."""
    return 2 * (float(tcfg.fee_bps) + float(tcfg.slippage_bps)) / 1e4 + float(tcfg.spread_bps) / 1e4


def _signal_frame(frame: pd.DataFrame, rows: np.ndarray, p_long: np.ndarray, p_short: np.ndarray, tcfg) -> pd.DataFrame:
    signals = frame.iloc[rows][["symbol", "timestamp"]].reset_index(drop=True).assign(p_long=p_long, p_short=p_short)
    spread = causal_spread(frame, rows, int(tcfg.spread_window)) if tcfg.spread_from_features else None
    if spread is not None:
        signals["spread"] = spread
    return signals


def trading_evaluation(
    cfg: DictConfig,
    task: Task,
    proba: np.ndarray,
    *,
    frame: pd.DataFrame,
    rows: np.ndarray,
    candles: Candles,
    sides: np.ndarray | None = None,
):
    """Backtest of the test signals (see trainer.backtest for the pricing rules). ``sides`` (-1/0/+1 per
    row, from the decision policy) replaces the fixed ``eval.trading.threshold`` rule."""
    tcfg = cfg.eval.trading
    p_long, p_short = trade_signals(task, cfg.target, proba, round_trip_cost(tcfg))
    signals = _signal_frame(frame, rows, p_long, p_short, tcfg)
    if sides is not None:
        signals = signals.drop(columns=["p_long", "p_short"]).assign(side=np.asarray(sides, dtype=np.int8))
    return backtest(signals, candles.by_symbol, candles.step, int(cfg.target.horizon), tcfg)


def fixed_policy(cfg: DictConfig) -> DecisionPolicy:
    """``eval.policy.mode=fixed``: ``eval.trading.threshold`` on both sides, as before policies were learned."""
    tcfg, horizon = cfg.eval.trading, int(cfg.target.horizon)
    threshold = float(tcfg.threshold)
    return DecisionPolicy(
        threshold,
        threshold if tcfg.allow_short else None,
        horizon,
        float(cfg.eval.policy.get("min_edge_bps") or 0.0),
        chosen_on="fixed",
    )


def _candidates(p: np.ndarray, quantiles) -> list[float]:
    """Thresholds at these quantiles of one side's validation probabilities (each keeps a share of rows)."""
    finite = p[np.isfinite(p)]
    if not len(finite):
        return []
    return sorted({round(float(q), 4) for q in np.quantile(finite, list(quantiles))})


def _policy_settings(pcfg) -> tuple[str, list[float], int, float]:
    mode = str(pcfg.get("mode", "learned"))
    if mode not in ("learned", "fixed"):
        raise UserError(f"mode must be learned or fixed, got {mode!r}", "eval.policy.mode")
    quantiles = list(pcfg.get("quantiles") or [])
    if not quantiles or any(
        isinstance(q, bool) or not isinstance(q, (int, float)) or not 0 <= q < 1 for q in quantiles
    ):
        raise UserError(
            f"quantiles must be a non-empty list of numbers in [0, 1), got {quantiles}", "eval.policy.quantiles"
        )
    min_trades = pcfg.get("min_val_trades", 30)
    if isinstance(min_trades, bool) or not isinstance(min_trades, int) or min_trades < 1:
        raise UserError(f"min_val_trades must be a whole number >= 1, got {min_trades!r}", "eval.policy.min_val_trades")
    edge = pcfg.get("min_edge_bps", 0.0)
    if isinstance(edge, bool) or not isinstance(edge, (int, float)) or edge < 0:
        raise UserError(f"min_edge_bps must be a number >= 0, got {edge!r}", "eval.policy.min_edge_bps")
    return mode, quantiles, int(min_trades), float(edge)


def _scored(net: np.ndarray) -> dict:
    n = len(net)
    wins, losses = float(net[net > 0].sum()), float(-net[net < 0].sum())
    return {
        "n_trades": n,
        "expectancy_bps": float(net.mean() * 1e4) if n else None,
        "total_net_return": float(net.sum()),
        "win_rate": float(np.mean(net > 0)) if n else None,
        "profit_factor": wins / losses if losses > 0 else None,
    }


def choose_policy(
    cfg: DictConfig,
    task: Task,
    proba_val: np.ndarray,
    *,
    frame: pd.DataFrame,
    val_rows: np.ndarray,
    candles: Candles,
    test_start,
) -> DecisionPolicy:
    """The decision policy that made the most net-of-cost money on the validation rows.

    Every pair (long threshold, short threshold) from the grid of validation-probability quantiles, each side
    also "never", is traded with the real backtest (same prices and costs as the test). Only trades that close
    before ``test_start`` count, and the backtest sees no candle from ``test_start`` on: the test period
    cannot move the choice. A pair is eligible with at least ``min_val_trades`` trades and a mean net trade
    return of at least ``min_edge_bps`` (and above zero); the eligible pair with the largest total net return
    wins. Nothing eligible: "never trade"."""
    pcfg, tcfg, horizon = cfg.eval.policy, cfg.eval.trading, int(cfg.target.horizon)
    mode, quantiles, min_trades, min_edge = _policy_settings(pcfg)
    if mode == "fixed":
        return fixed_policy(cfg)
    cut = pd.Timestamp(test_start)
    p_long, p_short = trade_signals(task, cfg.target, proba_val, round_trip_cost(tcfg))
    closes = frame["timestamp"].iloc[val_rows] + (horizon + 1) * candles.step
    keep = (closes < cut).to_numpy()
    rows, p_long, p_short = val_rows[keep], p_long[keep], p_short[keep]
    seen = {sym: c[c["timestamp"] < cut] for sym, c in candles.by_symbol.items()}
    signals = _signal_frame(frame, rows, p_long, p_short, tcfg).drop(columns=["p_long", "p_short"])
    longs = [None] + _candidates(p_long, quantiles)
    shorts = [None] + (_candidates(p_short, quantiles) if tcfg.allow_short else [])
    best, best_total, tried, eligible, best_seen = None, 0.0, 0, 0, None
    for lt in longs:
        for st in shorts:
            if lt is None and st is None:
                continue
            candidate = DecisionPolicy(lt, st, horizon, min_edge)
            side = candidate.sides(p_long, p_short)
            if not side.any():
                continue
            tried += 1
            net = backtest(signals.assign(side=side), seen, candles.step, horizon, tcfg).trades["net_return"].to_numpy()
            score = _scored(net)
            if best_seen is None or score["total_net_return"] > best_seen[1]["total_net_return"]:
                best_seen = (candidate, score)
            if score["n_trades"] < min_trades or score["expectancy_bps"] <= max(min_edge, 0.0):
                continue
            eligible += 1
            if score["total_net_return"] > best_total:
                best, best_total = (candidate, score), score["total_net_return"]
    search = {
        "objective": "total net return of the validation trades",
        "rows": int(len(rows)),
        "rows_dropped_closing_in_test": int((~keep).sum()),
        "candidates": tried,
        "eligible": eligible,
        "min_val_trades": min_trades,
    }
    if best is None:
        why = (
            "no threshold pair traded"
            if best_seen is None
            else (
                f"best pair ({best_seen[0].describe(source=False)}) made {best_seen[1]['total_net_return']:+.4f} over "
                f"{best_seen[1]['n_trades']} trades, expectancy {best_seen[1]['expectancy_bps']:+.1f} bps"
            )
        )
        search["best_rejected"] = why
        return DecisionPolicy(
            None, None, horizon, min_edge, "validation", {**_scored(np.zeros(0)), **search, "reason": why}
        )
    candidate, score = best
    return DecisionPolicy(
        candidate.long_threshold, candidate.short_threshold, horizon, min_edge, "validation", {**score, **search}
    )


def economic_statistics(
    trades: pd.DataFrame, symbols: list[str], n_trials: int, selection_cfg, econ_cfg, seed: int
) -> dict:
    """Per symbol and overall, on the test trades: trade count, mean net trade return (bps) with its one-sided
    block-bootstrap p, profit factor, and the Deflated Sharpe Ratio of the per-trade net returns at
    ``n_trials``. Trades are taken in entry-time order (their serial dependence is what the blocks keep)."""
    variance = selection_cfg.get("trial_sharpe_variance") if selection_cfg is not None else None
    trial_sharpes = selection_cfg.get("trial_sharpes") if selection_cfg is not None else None
    resamples = int(econ_cfg.get("resamples", 2000))
    block_cfg = econ_cfg.get("block")

    def row(net: np.ndarray) -> dict:
        n = len(net)
        block = int(block_cfg) if block_cfg else max(1, int(np.ceil(n ** (1 / 3))))
        scored = _scored(net)
        dsr = deflated_sharpe(
            net,
            n_trials,
            list(trial_sharpes) if trial_sharpes is not None else None,
            None if variance is None else float(variance),
        )
        return {
            "n_trades": n,
            "mean_net_bps": scored["expectancy_bps"],
            "p_value": mean_return_p_value(net, block, resamples, seed) if n >= 2 else None,
            "profit_factor": scored["profit_factor"],
            "no_losing_trades": bool(n > 0 and (net >= 0).all()),
            "total_net_return": scored["total_net_return"],
            "block": block,
            "dsr": dsr["dsr"],
            "deflated_sharpe": dsr,
        }

    ordered = trades.sort_values("entry_time", kind="stable") if len(trades) else trades
    net_all = ordered["net_return"].to_numpy(np.float64) if len(ordered) else np.zeros(0)
    out = {"n_trials": int(n_trials), "overall": row(net_all), "symbols": {}}
    for sym in symbols:
        mine = ordered[ordered["symbol"] == sym]["net_return"].to_numpy(np.float64) if len(ordered) else np.zeros(0)
        out["symbols"][sym] = row(mine)
    return out


def leakage_summary(
    split_check: dict,
    control: dict | None,
    *,
    evaluation: dict,
    metrics: dict,
    trading: dict | None,
    timeframe: str,
    oracle: float | None,
    cfg: DictConfig,
) -> dict:
    """The three leakage checks; too-good flags are raised overall and, on real data, per symbol (a leak
    in one symbol must not hide in the average of several)."""
    flags_cfg = cfg.eval.leakage.too_good
    flagged = too_good(metrics, evaluation["overall"]["best_baseline"]["value"], trading, timeframe, oracle, flags_cfg)
    if oracle is None and len(evaluation["symbols"]) > 1:
        for sym, row in evaluation["symbols"].items():
            own = too_good(
                {"accuracy": row["hit_rate"]}, row["best_baseline"]["value"], None, timeframe, None, flags_cfg
            )
            flagged["flags"] += [f"{sym}: {flag}" for flag in own["flags"]]
        flagged["passed"] = not flagged["flags"]
    out = {"split": split_check, "shuffled_control": control, "too_good": flagged}
    out["passed"] = all(v is not None and v["passed"] for v in out.values())
    return out
