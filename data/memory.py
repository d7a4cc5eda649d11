"""How much memory a run's data preparation takes per candle, and an early refusal when it cannot fit.

Per candle (F_all features computed, F of them fed to the model, t = the largest training share of a fold):
candles 48 B (timestamp + OHLCV) + table 8 x F_all + 128 B (features; label, t1, persistence, auxiliary
targets, purge_end, timestamp, symbol; the split's row indices and masks) + the float64 model matrix 8 x F +
the larger of the scaler fit's temporaries (the training rows and their squared deviations, 16 x F x t) and
the float32 scaled matrix (4 x F): 992 B for the full set's 30 features on a 70% holdout. A pooled run of k
symbols grows linearly with k x candles; benchmarks/pipeline.py --pooled measures it (993 B per candle).
"""

import ctypes

from core.errors import UserError

CANDLE_BYTES = 48
TABLE_FIXED_BYTES = 128


def peak_bytes_per_candle(n_all_features: int, n_features: int, train_share: float = 1.0) -> int:
    """Peak bytes per candle of loading, features, labels, split and scaling (before the model's own memory)."""
    table = 8 * n_all_features + TABLE_FIXED_BYTES
    scaling = max(16 * n_features * train_share, 4 * n_features)
    return int(CANDLE_BYTES + table + 8 * n_features + scaling)


def available_bytes() -> int | None:
    """What this process can still use: free memory (MemAvailable, or a lower cgroup limit) plus its own RSS."""
    try:
        with open("/proc/meminfo") as f:
            info = {line.split(":")[0]: int(line.split()[1]) * 1024 for line in f}
        with open("/proc/self/status") as f:
            rss = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmRSS:"))
    except (OSError, StopIteration, ValueError, IndexError):
        return None
    free = info.get("MemAvailable")
    if free is None:
        return None
    try:  # a container's limit can be below what the machine has free
        with open("/sys/fs/cgroup/memory.max") as f, open("/sys/fs/cgroup/memory.current") as g:
            limit = f.read().strip()
            if limit != "max":
                free = min(free, int(limit) - int(g.read().strip()))
    except (OSError, ValueError):
        pass
    return max(0, free) + rss


def train_share(split) -> float:
    """The largest share of rows a fold trains on (what the scaler fit copies): holdout's split.train, else all."""
    return float(split.train) if split.get("type") == "holdout" and split.get("train") is not None else 1.0


def check_fits(
    n_candles: int, n_symbols: int, n_all_features: int, n_features: int, train_share: float, budget_gb: float | None
) -> int:
    """The estimated peak in bytes; refused with the estimate and the ways out when it exceeds the budget
    (``budget_gb``, or what is available now) instead of running into the out-of-memory killer later."""
    per_candle = peak_bytes_per_candle(n_all_features, n_features, train_share)
    need = n_candles * per_candle
    have = int(budget_gb * 1e9) if budget_gb is not None else available_bytes()
    if have is not None and need > have:
        where = "trainer.memory_budget_gb" if budget_gb is not None else "coin.symbols/data.rows"
        pooled = f"one run per symbol instead of {n_symbols} pooled, " if n_symbols > 1 else ""
        raise UserError(
            f"the data would need about {need / 1e9:.1f} GB at its peak ({n_candles:,} candles x {per_candle} "
            f"bytes for {n_features} features) but {have / 1e9:.1f} GB is available: use fewer rows (data.rows, "
            f"data.start/data.end), {pooled}or fewer features (features.select)",
            where,
        )
    return need


def budget_from(value) -> float | None:
    """``trainer.memory_budget_gb``: null = what the machine has available; else a positive number of GB."""
    if value is None:
        return None
    try:
        budget = float(value)
    except (TypeError, ValueError):
        budget = -1.0
    if not budget > 0:
        raise UserError(
            f"trainer.memory_budget_gb must be a positive number of GB or null, got {value!r}",
            "trainer.memory_budget_gb",
        )
    return budget


def release_freed() -> None:
    """Hand memory freed by dropped per-symbol arrays back to the system: glibc keeps freed heap chunks of a
    column's size resident, so later steps (whose large arrays get fresh pages) would count them again."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to do
        pass
