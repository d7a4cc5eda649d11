"""Every test metric and baseline is computed here, once."""
import numpy as np
from sklearn.metrics import roc_auc_score


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


def baselines(y_test: np.ndarray, y_train: np.ndarray, persistence: np.ndarray) -> dict:
    """Accuracy of naive calls on the same test rows.

    majority_class: the training segment's majority label, always.
    persistence: the direction of the move that just ended (same horizon); where that move is
    unknown (a gap), the majority label.
    """
    y_test = np.asarray(y_test, dtype=np.int64)
    majority = int(np.mean(y_train) >= 0.5)
    persist = np.where(np.isnan(persistence), majority, persistence).astype(np.int64)
    return {
        "majority_class": {"accuracy": float(np.mean(y_test == majority)), "label": majority},
        "persistence": {"accuracy": float(np.mean(persist == y_test)),
                        "undefined_rows": int(np.isnan(persistence).sum())},
    }
