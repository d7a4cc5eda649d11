"""FTMO-style risk limits for a paper-trading session.

- Daily loss: equity below ``(1 - max_daily_loss)`` x the start-of-day equity (the equity at the first
  ``check`` of that UTC day) halts trading for the rest of that UTC day; it resumes the next UTC day.
- Total loss: equity below ``(1 - max_total_loss)`` x ``start_equity`` halts trading for good.
- Position size: ``clamp_fraction`` caps a position's notional at ``max_position`` of equity.
Each breach is reported once: a daily breach once per UTC day, the total breach once ever. When one check
crosses both limits only the total breach is reported (it halts for good, which covers the day).
"""
from __future__ import annotations

import datetime as dt
import math
import numbers
from dataclasses import dataclass

import pandas as pd

from data.errors import UserError
from trainer.runtime.broker import checked_equity, utc_timestamp

BREACH_KINDS = ("daily_loss", "total_loss", "position_size")
HALTS = ("day", "forever", "none")


@dataclass
class Breach:
    kind: str            # daily_loss | total_loss | position_size
    at: pd.Timestamp
    equity: float
    limit: float         # the equity floor that was crossed, or the fraction cap for position_size
    detail: str
    halt: str            # day | forever | none


def _limit(value: float, name: str, high: float = 1.0) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not (0 < value <= high):
        raise UserError(f"{name} must be a number in (0, {high}], got {value!r}", f"runtime.guardrails.{name}")
    return float(value)


class Guardrails:
    """Daily and total loss limits that halt trading, and a position-size cap."""

    def __init__(self, start_equity: float, max_daily_loss: float = 0.05, max_total_loss: float = 0.10,
                 max_position: float = 0.5):
        self.start_equity = checked_equity(start_equity)
        self.max_daily_loss = _limit(max_daily_loss, "max_daily_loss")
        self.max_total_loss = _limit(max_total_loss, "max_total_loss")
        self.max_position = _limit(max_position, "max_position", high=math.inf)
        self.breaches: list[Breach] = []
        self._day: dt.date | None = None
        self._day_start_equity: float | None = None
        self._halted_day: dt.date | None = None
        self._halted_forever = False

    def check(self, at: pd.Timestamp, equity: float) -> Breach | None:
        """See the new equity; returns a breach the first time a limit is crossed, else None."""
        at = utc_timestamp(at, "runtime.guardrails: check")
        equity = float(equity)
        day = at.date()
        if day != self._day:
            self._day, self._day_start_equity = day, equity
        if self._halted_forever:
            return None
        total_floor = (1.0 - self.max_total_loss) * self.start_equity
        if equity < total_floor:
            self._halted_forever = True
            return self._record(Breach(
                "total_loss", at, equity, total_floor,
                f"equity {equity:.2f} below {total_floor:.2f} ({self.max_total_loss:.2%} under the starting "
                f"{self.start_equity:.2f})", "forever"))
        daily_floor = (1.0 - self.max_daily_loss) * self._day_start_equity
        if equity < daily_floor and self._halted_day != day:
            self._halted_day = day
            return self._record(Breach(
                "daily_loss", at, equity, daily_floor,
                f"equity {equity:.2f} below {daily_floor:.2f} ({self.max_daily_loss:.2%} under the day's "
                f"start {self._day_start_equity:.2f}); halted until {day + dt.timedelta(days=1)} 00:00 UTC",
                "day"))
        return None

    def allows_trading(self, at) -> bool:
        """False after a total breach, and for the rest of the UTC day of a daily breach."""
        if self._halted_forever:
            return False
        return utc_timestamp(at, "runtime.guardrails: allows_trading").date() != self._halted_day

    @property
    def halted_forever(self) -> bool:
        return self._halted_forever

    def clamp_fraction(self, fraction: float, at=None, equity: float | None = None) -> float:
        """``fraction`` capped to [0, max_position]; with ``at`` a cut is also recorded as a position_size
        breach (halt none)."""
        fraction = float(fraction)
        if not math.isfinite(fraction) or fraction <= 0:
            return 0.0
        if fraction <= self.max_position:
            return fraction
        if at is not None:
            self._record(Breach(
                "position_size", utc_timestamp(at, "runtime.guardrails: clamp_fraction"),
                math.nan if equity is None else float(equity), self.max_position,
                f"position fraction {fraction:g} capped at {self.max_position:g} of equity", "none"))
        return self.max_position

    def _record(self, breach: Breach) -> Breach:
        self.breaches.append(breach)
        return breach
