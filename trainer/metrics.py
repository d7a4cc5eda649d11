"""Every test metric and baseline is computed here, once."""
import numpy as np
from scipy.stats import spearmanr
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
        return {"zero": {"mae": zero["mae"], "rmse": zero["rmse"]},
                "persistence": {**regression_metrics(past, y_test), "undefined_rows": undefined}}
    y_test = np.asarray(y_test, dtype=np.int64)
    majority = int(np.bincount(np.asarray(y_train, dtype=np.int64)).argmax())
    persist = np.where(np.isnan(persistence), majority, persistence).astype(np.int64)
    return {
        "majority_class": {"accuracy": float(np.mean(y_test == majority)), "label": majority},
        "persistence": {"accuracy": float(np.mean(persist == y_test)), "undefined_rows": undefined},
    }
