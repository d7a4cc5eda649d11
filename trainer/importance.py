"""Permutation importance on validation rows, for families without a native importance."""
import numpy as np

from models.base import CandleModel, Rows


def permutation_importance(model: CandleModel, val: Rows, names: list[str], seed: int,
                           max_rows: int = 2000) -> dict:
    """Increase in validation log loss when one feature column is shuffled (higher = more important)."""
    rng = np.random.default_rng(seed)
    rows = val.rows if len(val.rows) <= max_rows else np.sort(rng.choice(val.rows, max_rows, replace=False))
    pos = np.searchsorted(val.rows, rows)
    y = val.y[pos]

    def loss(features: np.ndarray) -> float:
        p = np.clip(model.predict_proba(Rows(features=features, rows=rows))[:, 1], 1e-7, 1 - 1e-7)
        return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))

    base = loss(val.features)
    values = {}
    for j, name in enumerate(names):
        shuffled = val.features.copy()
        shuffled[:, j] = rng.permutation(shuffled[:, j])
        values[name] = loss(shuffled) - base
    return {"kind": "permutation_val_logloss", "rows": int(len(rows)), "values": values}
