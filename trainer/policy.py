"""The decision policy: how a model's probabilities become trades.

A policy is chosen on validation rows (``trainer.selection`` / ``trainer.evaluation``), recorded in the
model card as ``card["policy"]`` and in ``result.json`` as ``result["policy"]``, traded once on the test
period, and applied unchanged by the runtime.

Rule at a candle: long when ``p_long >= long_threshold`` and ``p_long > p_short``; short when
``p_short >= short_threshold`` and ``p_short > p_long``; otherwise flat. A side whose threshold is None is
never taken; both None is the "never trade" policy. Each position is held ``horizon`` candles (the label
horizon), entered at the next candle's open.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import asdict, dataclass, field

import numpy as np

from core.errors import UserError

CHOSEN_ON = ("validation", "fixed")


def _threshold(value, key: str, where: str) -> float | None:
    if value is None:
        return None
    # bool is an int subclass: `true` in a card is garbage, not 1.0
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(float(value)):
        raise UserError(f"policy {key} must be a number in [0, 1] or null, got {value!r}", f"{where}.{key}")
    value = float(value)
    if not 0.0 <= value <= 1.0:
        raise UserError(f"policy {key} must be in [0, 1], got {value}", f"{where}.{key}")
    return value


@dataclass(frozen=True)
class DecisionPolicy:
    long_threshold: float | None  # go long when p_long >= this (and p_long > p_short); None = never long
    short_threshold: float | None  # go short when p_short >= this (and p_short > p_long); None = never short
    horizon: int  # holding period in candles = the label horizon
    min_edge_bps: float = 0.0  # expected net edge per trade (after costs) a threshold had to clear
    chosen_on: str = "validation"  # validation (learned) or fixed (eval.policy.mode=fixed)
    validation: dict = field(default_factory=dict)  # what it scored there: expectancy_bps, n_trades, win_rate...

    def __post_init__(self):
        _threshold(self.long_threshold, "long_threshold", "policy")
        _threshold(self.short_threshold, "short_threshold", "policy")

    @property
    def trades(self) -> bool:
        """False when "never trade" was chosen."""
        return self.long_threshold is not None or self.short_threshold is not None

    def sides(self, p_long: np.ndarray, p_short: np.ndarray) -> np.ndarray:
        """-1 short, 0 flat, +1 long per row; NaN probabilities never trade."""
        p_long = np.asarray(p_long, dtype=np.float64)
        p_short = np.asarray(p_short, dtype=np.float64)
        side = np.zeros(np.broadcast(p_long, p_short).shape, dtype=np.int8)
        if self.long_threshold is not None:
            side[(p_long >= self.long_threshold) & (p_long > p_short)] = 1
        if self.short_threshold is not None:
            side[(p_short >= self.short_threshold) & (p_short > p_long)] = -1
        return side

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d, where: str = "model card policy") -> "DecisionPolicy":
        """A policy read from an untrusted card: every field checked, one UserError on anything else."""
        if not isinstance(d, dict):
            raise UserError(f"policy must be a mapping, got {type(d).__name__}", where)
        unknown = sorted(
            set(d) - {"long_threshold", "short_threshold", "horizon", "min_edge_bps", "chosen_on", "validation"}
        )
        if unknown:
            raise UserError(f"policy has unknown fields {unknown}", where)
        if "horizon" not in d:
            raise UserError("policy lacks horizon", where)
        horizon = d["horizon"]
        if isinstance(horizon, bool) or not isinstance(horizon, numbers.Integral) or horizon < 1:
            raise UserError(
                f"policy horizon must be a whole number of candles >= 1, got {horizon!r}", f"{where}.horizon"
            )
        edge = d.get("min_edge_bps", 0.0)
        if isinstance(edge, bool) or not isinstance(edge, numbers.Real) or not math.isfinite(float(edge)) or edge < 0:
            raise UserError(f"policy min_edge_bps must be a number >= 0, got {edge!r}", f"{where}.min_edge_bps")
        chosen_on = d.get("chosen_on", "validation")
        if chosen_on not in CHOSEN_ON:
            raise UserError(
                f"policy chosen_on must be one of {list(CHOSEN_ON)}, got {chosen_on!r}", f"{where}.chosen_on"
            )
        validation = d.get("validation") or {}
        if not isinstance(validation, dict):
            raise UserError(
                f"policy validation must be a mapping, got {type(validation).__name__}", f"{where}.validation"
            )
        return cls(
            long_threshold=_threshold(d.get("long_threshold"), "long_threshold", where),
            short_threshold=_threshold(d.get("short_threshold"), "short_threshold", where),
            horizon=int(horizon),
            min_edge_bps=float(edge),
            chosen_on=chosen_on,
            validation=dict(validation),
        )

    def describe(self, source: bool = True) -> str:
        """One line for logs and reports; ``source`` adds where it was chosen."""
        if not self.trades:
            return f"never trade ({self.chosen_on})" if source else "never trade"
        parts = []
        if self.long_threshold is not None:
            parts.append(f"long p>={self.long_threshold:.2f}")
        if self.short_threshold is not None:
            parts.append(f"short p>={self.short_threshold:.2f}")
        return f"{', '.join(parts)}, hold {self.horizon} candles" + (f" ({self.chosen_on})" if source else "")
