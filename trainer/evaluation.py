"""Everything said about a run's test predictions beyond the metrics themselves: significance against
the naive baselines (overall and per symbol), the trading evaluation, and the leakage checks. Metrics
are computed by ``trainer.metrics``; this module decides which rows and which calls they are given."""
import numpy as np
import pandas as pd
from omegaconf import DictConfig

from data.providers import Candles
from models.base import Task
from trainer.backtest import backtest
from trainer.leakage import too_good
from trainer.metrics import hits, significance

HIT_METRIC = {True: "accuracy", False: "directional_accuracy"}


def baseline_hits(task: Task, y_test: np.ndarray, y_train: np.ndarray, persistence: np.ndarray,
                  seed: int) -> dict[str, np.ndarray]:
    """Per-row correctness of each naive call on the test rows (so any subset, e.g. one symbol, can be
    scored): majority (the training segment's majority label or sign), persistence (the move that just
    ended; the majority call where unknown), random (drawn with the training label frequencies)."""
    rng = np.random.default_rng(seed)
    if task.is_classification:
        y_test = np.asarray(y_test, dtype=np.int64)
        freq = np.bincount(np.asarray(y_train, dtype=np.int64), minlength=task.n_classes) / len(y_train)
        majority = int(freq.argmax())
        persist = np.where(np.isnan(persistence), majority, persistence).astype(np.int64)
        calls = {"majority_class": np.full(len(y_test), majority), "persistence": persist,
                 "random": rng.choice(task.n_classes, size=len(y_test), p=freq)}
        return {k: (v == y_test).astype(np.float64) for k, v in calls.items()}
    truth = np.sign(np.asarray(y_test, dtype=np.float64))
    up = float(np.mean(np.asarray(y_train) > 0))
    calls = {"majority_class": np.full(len(truth), 1.0 if up >= 0.5 else -1.0),
             "persistence": np.sign(np.where(np.isnan(persistence), 0.0, persistence)),
             "random": np.where(rng.random(len(truth)) < up, 1.0, -1.0)}
    return {k: (v == truth).astype(np.float64) for k, v in calls.items()}


def _row(task: Task, metrics: dict, model_hit: np.ndarray, base_hits: dict[str, np.ndarray], horizon: int,
         sig_cfg, seed: int) -> dict:
    rates = {k: float(v.mean()) for k, v in base_hits.items()}
    best = max(rates, key=rates.get)
    return {"hit_rate": float(model_hit.mean()), "ece": metrics.get("ece"), "n": int(len(model_hit)),
            "baselines": rates, "best_baseline": {"name": best, "value": rates[best]},
            "significance": significance(model_hit, rates[best], horizon, sig_cfg.get("block"),
                                         int(sig_cfg.resamples), float(sig_cfg.level), seed)}


def significance_table(task: Task, proba: np.ndarray, y: np.ndarray, symbols: np.ndarray,
                       base_hits: dict[str, np.ndarray], per_symbol: dict, overall: dict, horizon: int,
                       cfg: DictConfig) -> dict:
    """Hit rate, best baseline and significance overall and per symbol."""
    model_hit = hits(task, proba, y)
    sig = cfg.eval.significance
    out = {"hit_metric": HIT_METRIC[task.is_classification],
           "overall": _row(task, overall, model_hit, base_hits, horizon, sig, cfg.seed), "symbols": {}}
    for sym, metrics in per_symbol.items():
        m = symbols == sym
        out["symbols"][sym] = _row(task, metrics, model_hit[m], {k: v[m] for k, v in base_hits.items()},
                                   horizon, sig, cfg.seed)
    return out


def trade_signals(task: Task, target: DictConfig, proba: np.ndarray, cost: float) -> tuple[np.ndarray, np.ndarray]:
    """P(a long wins), P(a short wins) per row from the model's outputs for this target."""
    if task.kind == "binary":
        return proba[:, 1], proba[:, 0]
    if target.type in ("direction3", "triple_barrier"):   # classes: 0 down/stop, 1 flat/hold, 2 up/take
        return proba[:, 2], proba[:, 0]
    if target.type == "quantile":   # the buckets above the middle against those below it
        k = proba.shape[1]
        return proba[:, k - k // 2:].sum(1), proba[:, : k // 2].sum(1)
    pred = proba[:, 0]   # regression: trade a forecast return that clears the round-trip cost
    return (pred > cost).astype(np.float64), (pred < -cost).astype(np.float64)


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


def leakage_summary(split_check: dict, control: dict | None, metrics: dict, best_baseline: float,
                    trading: dict | None, timeframe: str, oracle: float | None, cfg: DictConfig) -> dict:
    flags_cfg = cfg.eval.leakage.too_good
    flagged = too_good(metrics, best_baseline, trading, timeframe, oracle, flags_cfg)
    out = {"split": split_check, "shuffled_control": control, "too_good": flagged}
    out["passed"] = all(v is not None and v["passed"] for v in out.values())
    return out
