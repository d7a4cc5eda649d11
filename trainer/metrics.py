"""Every test metric and baseline is computed here, once."""

import numpy as np
from scipy.stats import binomtest, spearmanr
from sklearn.metrics import roc_auc_score

from models.base import Task


def expected_calibration_error(p_up: np.ndarray, y: np.ndarray, bins: int = 10) -> float:
    """Reliability of P(up): |mean predicted - observed up-rate| per equal-width bin, weighted by bin size."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(p_up, edges[1:-1]), 0, bins - 1)
    count = np.bincount(which, minlength=bins)
    pred = np.bincount(which, weights=p_up, minlength=bins)
    obs = np.bincount(which, weights=y, minlength=bins)
    nz = count > 0
    return float(np.sum(np.abs(pred[nz] - obs[nz])) / max(len(y), 1))


def reliability_curve(p_up: np.ndarray, y: np.ndarray, bins: int = 10) -> dict:
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(p_up, edges[1:-1]), 0, bins - 1)
    count = np.bincount(which, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        pred = np.bincount(which, weights=p_up, minlength=bins) / count
        obs = np.bincount(which, weights=y, minlength=bins) / count
    return {"count": count.tolist(), "mean_predicted": pred.tolist(), "observed": obs.tolist()}


TIER_EDGES = (0.5, 0.55, 0.6, 0.65, 0.7, 0.8, 1.0)
MULTICLASS_TIER_EDGES = (0.0, 0.4, 0.5, 0.6, 0.7, 0.8, 1.0)  # top-label confidence starts at 1/k


def confidence_tiers(confidence: np.ndarray, hit: np.ndarray, edges=TIER_EDGES) -> list[dict]:
    """Calibration by confidence tier, from real outcomes: for the rows whose top-label confidence falls in
    each tier, how often the call was right (``observed``) against how sure the model was (``mean_confidence``).
    A tier is well calibrated when the two agree; ``gap`` = observed - mean_confidence."""
    confidence, hit = np.asarray(confidence, dtype=np.float64), np.asarray(hit, dtype=np.float64)
    tiers = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        m = (confidence >= lo) & ((confidence < hi) if hi < 1.0 else (confidence <= hi))
        n = int(m.sum())
        tiers.append(
            {
                "tier": f"{lo:.2f}-{hi:.2f}",
                "n": n,
                "mean_confidence": float(confidence[m].mean()) if n else None,
                "observed": float(hit[m].mean()) if n else None,
                "gap": float(hit[m].mean() - confidence[m].mean()) if n else None,
            }
        )
    return tiers


def classification_metrics(proba: np.ndarray, y: np.ndarray, ece_bins: int = 10) -> dict:
    """accuracy, balanced_accuracy, log_loss, brier, ece, auc (None if one class), n."""
    y = np.asarray(y, dtype=np.int64)
    p_up = np.clip(proba[:, 1], 0.0, 1.0)
    pred = (p_up > 0.5).astype(np.int64)
    recalls = [float(np.mean(pred[y == c] == c)) for c in (0, 1) if np.any(y == c)]
    eps = 1e-15
    pc = np.clip(p_up, eps, 1 - eps)
    both = len(np.unique(y)) == 2
    return {
        "accuracy": float(np.mean(pred == y)) if len(y) else None,
        "balanced_accuracy": float(np.mean(recalls)) if recalls else None,
        "log_loss": float(-np.mean(y * np.log(pc) + (1 - y) * np.log(1 - pc))) if len(y) else None,
        "brier": float(np.mean((p_up - y) ** 2)) if len(y) else None,
        "ece": expected_calibration_error(p_up, y, ece_bins) if len(y) else None,
        "auc": float(roc_auc_score(y, p_up)) if both else None,
        "n": int(len(y)),
        "confidence_tiers": confidence_tiers(np.maximum(p_up, 1 - p_up), (pred == y)),
    }


def multiclass_metrics(proba: np.ndarray, y: np.ndarray, ece_bins: int = 10) -> dict:
    """accuracy, balanced_accuracy, log_loss, brier (sum over classes), ece (top-label), auc (macro
    one-vs-rest; None unless every class occurs), n."""
    y = np.asarray(y, dtype=np.int64)
    k = proba.shape[1]
    pred = proba.argmax(1)
    recalls = [float(np.mean(pred[y == c] == c)) for c in range(k) if np.any(y == c)]
    onehot = np.eye(k)[y]
    conf = proba.max(1)
    correct = (pred == y).astype(np.float64)
    both = len(np.unique(y)) == k
    return {
        "accuracy": float(np.mean(correct)),
        "balanced_accuracy": float(np.mean(recalls)),
        "log_loss": float(-np.mean(np.log(np.clip(proba[np.arange(len(y)), y], 1e-15, 1.0)))),
        "brier": float(np.mean(np.sum((proba - onehot) ** 2, axis=1))),
        "ece": expected_calibration_error(conf, correct, ece_bins),
        "auc": float(roc_auc_score(y, proba, multi_class="ovr", average="macro")) if both else None,
        "n": int(len(y)),
        "confidence_tiers": confidence_tiers(conf, correct, MULTICLASS_TIER_EDGES),
    }


def regression_metrics(pred: np.ndarray, y: np.ndarray) -> dict:
    """ic (Pearson), rank_ic (Spearman), mae, rmse, directional_accuracy (sign agreement), n."""
    pred, y = np.asarray(pred, dtype=np.float64).ravel(), np.asarray(y, dtype=np.float64)
    varies = np.std(pred) > 0 and np.std(y) > 0
    return {
        "ic": float(np.corrcoef(pred, y)[0, 1]) if varies else None,
        "rank_ic": float(spearmanr(pred, y).statistic) if varies else None,
        "mae": float(np.mean(np.abs(pred - y))),
        "rmse": float(np.sqrt(np.mean((pred - y) ** 2))),
        "directional_accuracy": float(np.mean(np.sign(pred) == np.sign(y))),
        "n": int(len(y)),
    }


def evaluate(task: Task, out: np.ndarray, y: np.ndarray, ece_bins: int = 10) -> dict:
    """The test metrics of one task: the only place they are computed."""
    if task.kind == "binary":
        return classification_metrics(out, y, ece_bins)
    if task.kind == "multiclass":
        return multiclass_metrics(out, y, ece_bins)
    return regression_metrics(out[:, 0], y)


def headline(task: Task) -> str:
    return "accuracy" if task.is_classification else "ic"


def baselines(task: Task, y_test: np.ndarray, y_train: np.ndarray, persistence: np.ndarray) -> dict:
    """Naive calls on the same test rows.

    Classification — majority_class: the training segment's majority label, always; persistence: the label
    of the move that just ended (known at t); where that is unknown (a gap), the majority label.
    Regression — zero: a 0 forecast; persistence: the forward return that just ended.
    """
    undefined = int(np.isnan(persistence).sum())
    if not task.is_classification:
        past = np.where(np.isnan(persistence), 0.0, persistence)
        zero = regression_metrics(np.zeros(len(y_test)), y_test)
        return {
            "zero": {"mae": zero["mae"], "rmse": zero["rmse"]},
            "persistence": {**regression_metrics(past, y_test), "undefined_rows": undefined},
        }
    y_test = np.asarray(y_test, dtype=np.int64)
    majority = int(np.bincount(np.asarray(y_train, dtype=np.int64)).argmax())
    persist = np.where(np.isnan(persistence), majority, persistence).astype(np.int64)
    return {
        "majority_class": {"accuracy": float(np.mean(y_test == majority)), "label": majority},
        "persistence": {"accuracy": float(np.mean(persist == y_test)), "undefined_rows": undefined},
    }


def hits(task: Task, out: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Per-row correctness of the call: the predicted class, or for regression the predicted sign."""
    return (calls(task, out) == truths(task, y)).astype(np.float64)


def calls(task: Task, out: np.ndarray) -> np.ndarray:
    """The call each row makes: the predicted class, or for regression the predicted sign (-1, 0, 1)."""
    return out.argmax(1) if task.is_classification else np.sign(out[:, 0])


def truths(task: Task, y: np.ndarray) -> np.ndarray:
    """What a call is compared with: the class, or for regression the sign of the realised return."""
    return np.asarray(y, dtype=np.int64) if task.is_classification else np.sign(np.asarray(y, dtype=np.float64))


def no_skill_rate(call: np.ndarray, truth: np.ndarray) -> float:
    """The hit rate of calls made with the model's own call mix but independent of the outcome:
    sum over c of P(call = c) * P(truth = c) on these rows (the Pesaran-Timmermann null). A model that
    only leans towards the side the test period happened to favour scores no better than this."""
    if len(call) == 0:
        return float("nan")
    values = np.union1d(call, truth)
    return float(sum(np.mean(call == v) * np.mean(truth == v) for v in values))


def baseline_hits(
    task: Task, y_test: np.ndarray, y_train: np.ndarray, persistence: np.ndarray, seed: int
) -> dict[str, np.ndarray]:
    """Per-row correctness of each naive call on the test rows (so any subset, e.g. one symbol, can be
    scored): majority (the training segment's majority label or sign), persistence (the move that just
    ended; the majority call where that is unknown), random (drawn with the training label frequencies)."""
    rng = np.random.default_rng(seed)
    truth = truths(task, y_test)
    if task.is_classification:
        freq = np.bincount(np.asarray(y_train, dtype=np.int64), minlength=task.n_classes) / len(y_train)
        majority = int(freq.argmax())
        guesses = {
            "majority_class": np.full(len(truth), majority),
            "persistence": np.where(np.isnan(persistence), majority, persistence).astype(np.int64),
            "random": rng.choice(task.n_classes, size=len(truth), p=freq),
        }
    else:
        up = float(np.mean(np.asarray(y_train) > 0))
        majority = 1.0 if up >= 0.5 else -1.0
        guesses = {
            "majority_class": np.full(len(truth), majority),
            "persistence": np.where(np.isnan(persistence), majority, np.sign(persistence)),
            "random": np.where(rng.random(len(truth)) < up, 1.0, -1.0),
        }
    return {k: (v == truth).astype(np.float64) for k, v in guesses.items()}


def block_bootstrap_ci(
    hit: np.ndarray, block: int, resamples: int = 1000, level: float = 0.95, seed: int = 0
) -> tuple[float, float]:
    """Circular block bootstrap of the hit rate: blocks of consecutive rows keep the serial dependence that
    overlapping labels and volatility clusters create, so the interval is not falsely narrow."""
    hit = np.asarray(hit, dtype=np.float64)
    n = len(hit)
    block = int(min(max(1, block), n))
    n_blocks = int(np.ceil(n / block))
    rng = np.random.default_rng(seed)
    cum = np.concatenate([[0.0], np.cumsum(np.concatenate([hit, hit[:block]]))])
    starts = rng.integers(0, n, size=(resamples, n_blocks))
    sums = (cum[starts + block] - cum[starts]).sum(axis=1)
    rates = sums / (n_blocks * block)
    alpha = (1.0 - level) / 2.0
    return float(np.quantile(rates, alpha)), float(np.quantile(rates, 1.0 - alpha))


def significance(
    hit: np.ndarray,
    baseline: float,
    horizon: int,
    block: int | None = None,
    resamples: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> dict:
    """Is the hit rate above the majority baseline? A one-sided binomial test on the effective number of
    independent calls (rows / horizon: labels that overlap in time are not independent trials) and a
    block-bootstrap confidence interval (block = max(horizon, n^(1/3)) unless given)."""
    hit = np.asarray(hit, dtype=np.float64)
    n = len(hit)
    if n == 0:
        return {"p_value": None, "ci": None, "n_effective": 0, "block": None, "baseline": baseline}
    horizon = max(1, int(horizon))
    n_eff = max(1, n // horizon)
    k_eff = int(round(float(hit.mean()) * n_eff))
    block = int(block) if block else max(horizon, int(np.ceil(n ** (1 / 3))))
    lo, hi = block_bootstrap_ci(hit, block, resamples, level, seed)
    return {
        "rate": float(hit.mean()),
        "baseline": float(baseline),
        "p_value": float(binomtest(k_eff, n_eff, p=min(max(baseline, 1e-9), 1 - 1e-9), alternative="greater").pvalue),
        "ci": [lo, hi],
        "level": level,
        "n_effective": n_eff,
        "block": block,
    }
