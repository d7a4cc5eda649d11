"""Everything said about a run's test predictions beyond the metrics themselves: significance against
the naive baselines (overall and per symbol), the trading evaluation, and the leakage checks. Metrics
are computed by ``trainer.metrics``; this module decides which rows and which calls they are given."""
import numpy as np
import pandas as pd
from omegaconf import DictConfig

from data.labels import TASKS
from data.providers import Candles
from models.base import Task
from trainer.backtest import backtest
from trainer.leakage import too_good
from trainer.metrics import calls, no_skill_rate, significance, truths

HIT_METRIC = {True: "accuracy", False: "directional_accuracy"}


def _row(metrics: dict, call: np.ndarray, truth: np.ndarray, base_hits: dict[str, np.ndarray], horizon: int,
         sig_cfg, seed: int) -> dict:
    """Hit rate against every baseline on the same rows; significance against the best of them. The
    ``no_skill`` baseline (the model's own call mix, independent of the outcome) keeps a model that merely
    leans to the side the test period favoured from passing for skill."""
    model_hit = (call == truth).astype(np.float64)
    rates = {k: float(v.mean()) for k, v in base_hits.items()}
    rates["no_skill"] = no_skill_rate(call, truth)
    best = max(rates, key=rates.get)
    return {"hit_rate": float(model_hit.mean()), "ece": metrics.get("ece"), "n": int(len(model_hit)),
            "baselines": rates, "best_baseline": {"name": best, "value": rates[best]},
            "significance": significance(model_hit, rates[best], horizon, sig_cfg.get("block"),
                                         int(sig_cfg.resamples), float(sig_cfg.level), seed)}


def significance_table(task: Task, proba: np.ndarray, y: np.ndarray, symbols: np.ndarray,
                       base_hits: dict[str, np.ndarray], per_symbol: dict, overall: dict, horizon: int,
                       cfg: DictConfig) -> dict:
    """Hit rate, baselines and significance overall and per symbol."""
    call, truth = calls(task, proba), truths(task, y)
    sig = cfg.eval.significance
    out = {"hit_metric": HIT_METRIC[task.is_classification],
           "overall": _row(overall, call, truth, base_hits, horizon, sig, cfg.seed), "symbols": {}}
    for sym, metrics in per_symbol.items():
        m = symbols == sym
        out["symbols"][sym] = _row(metrics, call[m], truth[m], {k: v[m] for k, v in base_hits.items()},
                                   horizon, sig, cfg.seed)
    return out


def class_long_short(target_type: str, proba: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """P(a long wins), P(a short wins) per row from a classifier's outputs; None for a regression target."""
    if TASKS.get(target_type) == "binary":
        return proba[:, 1], proba[:, 0]
    if target_type in ("direction3", "triple_barrier"):   # classes: 0 down/stop, 1 flat/hold, 2 up/take
        return proba[:, 2], proba[:, 0]
    if target_type == "quantile":   # the buckets above the middle against those below it
        k = proba.shape[1]
        return proba[:, k - k // 2:].sum(1), proba[:, : k // 2].sum(1)
    return None


def trade_signals(task: Task, target: DictConfig, proba: np.ndarray, cost: float) -> tuple[np.ndarray, np.ndarray]:
    """P(a long wins), P(a short wins) per row from the model's outputs for this target."""
    sides = class_long_short(str(target.type), proba)
    if sides is not None:
        return sides
    pred = proba[:, 0]   # regression: trade a forecast return that clears the round-trip cost
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
    signals = frame.iloc[rows][["symbol", "timestamp"]].reset_index(drop=True).assign(
        p_long=(score > median).astype(np.float64), p_short=(score < median).astype(np.float64))
    free = {"threshold": 0.55, "allow_short": True, "fee_bps": 0.0, "slippage_bps": 0.0, "spread_bps": 0.0,
            "periods_per_year": cfg.eval.trading.get("periods_per_year")}
    return backtest(signals, candles.by_symbol, candles.step, int(cfg.target.horizon), free).trades


def causal_spread(frame: pd.DataFrame, rows: np.ndarray, window: int) -> np.ndarray | None:
    """The Corwin-Schultz spread averaged over the last ``window`` candles of the same symbol (known at t)."""
    if "cs_spread" not in frame.columns:
        return None
    smooth = frame.groupby("symbol", sort=False)["cs_spread"].transform(
        lambda s: s.rolling(window, min_periods=1).mean())
    return smooth.to_numpy(np.float64)[rows]


def trading_evaluation(cfg: DictConfig, task: Task, proba: np.ndarray, frame: pd.DataFrame, rows: np.ndarray,
                       candles: Candles):
    """Backtest of the test signals (see trainer.backtest for the pricing rules)."""
    tcfg = cfg.eval.trading
    cost = 2 * (float(tcfg.fee_bps) + float(tcfg.slippage_bps)) / 1e4 + float(tcfg.spread_bps) / 1e4
    p_long, p_short = trade_signals(task, cfg.target, proba, cost)
    signals = frame.iloc[rows][["symbol", "timestamp"]].reset_index(drop=True).assign(p_long=p_long,
                                                                                      p_short=p_short)
    spread = causal_spread(frame, rows, int(tcfg.spread_window)) if tcfg.spread_from_features else None
    if spread is not None:
        signals["spread"] = spread
    return backtest(signals, candles.by_symbol, candles.step, int(cfg.target.horizon), tcfg)


def leakage_summary(split_check: dict, control: dict | None, evaluation: dict, metrics: dict, trading: dict | None,
                    timeframe: str, oracle: float | None, cfg: DictConfig) -> dict:
    """The three leakage checks; too-good flags are raised overall and, on real data, per symbol (a leak
    in one symbol must not hide in the average of several)."""
    flags_cfg = cfg.eval.leakage.too_good
    flagged = too_good(metrics, evaluation["overall"]["best_baseline"]["value"], trading, timeframe, oracle,
                       flags_cfg)
    if oracle is None and len(evaluation["symbols"]) > 1:
        for sym, row in evaluation["symbols"].items():
            own = too_good({"accuracy": row["hit_rate"]}, row["best_baseline"]["value"], None, timeframe, None,
                           flags_cfg)
            flagged["flags"] += [f"{sym}: {flag}" for flag in own["flags"]]
        flagged["passed"] = not flagged["flags"]
    out = {"split": split_check, "shuffled_control": control, "too_good": flagged}
    out["passed"] = all(v is not None and v["passed"] for v in out.values())
    return out
