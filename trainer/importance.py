"""Permutation importance on validation rows, for families without a native importance."""

import numpy as np

from models.base import CandleModel, Rows


def permutation_importance(model: CandleModel, val: Rows, names: list[str], seed: int, max_rows: int = 2000) -> dict:
    """Increase in validation loss (log loss; MSE for regression) when one feature column is shuffled."""
    rng = np.random.default_rng(seed)
    rows = val.rows if len(val.rows) <= max_rows else np.sort(rng.choice(val.rows, max_rows, replace=False))
    pos = np.searchsorted(val.rows, rows)
    y = val.y[pos]

    def loss(features: np.ndarray) -> float:
        out = model.predict_proba(Rows(features=features, rows=rows))
        if not model.task.is_classification:
            return float(np.mean((out[:, 0] - y) ** 2))
        return float(-np.mean(np.log(np.clip(out[np.arange(len(y)), y.astype(np.int64)], 1e-7, 1.0))))

    base = loss(val.features)
    values = {}
    for j, name in enumerate(names):
        shuffled = val.features.copy()
        shuffled[:, j] = rng.permutation(shuffled[:, j])
        values[name] = loss(shuffled) - base
    kind = "permutation_val_logloss" if model.task.is_classification else "permutation_val_mse"
    return {"kind": kind, "rows": int(len(rows)), "values": values}
