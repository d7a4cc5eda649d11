"""Risk limits for a paper-trading session, as the prop-firm rule books write them.

- Daily loss: the day's floor is ``day_start x (1 - max_daily_loss)`` (``daily_loss_base: day_start``) or
  ``day_start - max_daily_loss x start_equity`` (``initial``: FTMO); ``day_start`` is the equity (or, with
  ``day_start: balance``, the balance: closed results without open positions' floating P&L) at the first
  ``check`` of the day. Equity below it halts trading for the rest of the day (``daily_halt: day``) or for
  good (``forever``: the rule book ends the account). Days roll at midnight in ``day_timezone`` (DST-aware).
- Total loss: equity below ``(1 - max_total_loss) x start_equity`` halts trading for good, whatever profits
  came before (the floor never trails).
- Losses are checked at the lowest equity a candle can have reached (each position at its candle's adverse
  extreme: low for a long, high for a short); a breach reports the loss reached and its overshoot.
- Time only moves forward: a check with an earlier time (a symbol's candle that arrived late) counts at the
  latest time seen, so the day never goes back and its start is never reset.
- Sizes: ``clamp_fraction`` caps a position's notional at ``max_position`` of equity; ``admits_exposure``
  refuses an order that would take the gross notional of all positions beyond ``max_gross_exposure``.
Each loss breach is reported once: a daily breach once per day, the total breach once ever. When one check
crosses both limits only the total breach is reported (it halts for good, which covers the day).
"""

from __future__ import annotations

import datetime as dt
import math
import numbers
from dataclasses import dataclass
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import pandas as pd

from core.errors import UserError
from trainer.runtime.broker import checked_equity, utc_timestamp

BREACH_KINDS = ("daily_loss", "total_loss", "position_size", "gross_exposure")
HALTS = ("day", "forever", "none")
DAILY_LOSS_BASES = ("day_start", "initial")  # what max_daily_loss is a fraction of
DAY_STARTS = ("equity", "balance")  # what the day's start is measured on
DAILY_HALTS = ("day", "forever")


@dataclass
class Breach:
    kind: str  # daily_loss | total_loss | position_size | gross_exposure
    at: pd.Timestamp
    equity: float  # the lowest equity reached (loss limits), else the equity when it happened
    limit: float  # the equity floor that was crossed, or the fraction cap for position_size/gross_exposure
    detail: str
    halt: str  # day | forever | none
    reached_loss: float = math.nan  # loss at ``equity`` from the limit's reference (the day's start, start_equity)
    max_loss: float = math.nan  # the loss the limit allows (reference - floor)
    overshoot: float = math.nan  # reached_loss - max_loss = limit - equity: how far past the limit it went
    close_equity: float = math.nan  # equity marked at the closes when the breach was seen


def _limit(value: float, name: str, high: float = 1.0) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not (0 < value <= high):
        raise UserError(f"{name} must be a number in (0, {high}], got {value!r}", f"runtime.guardrails.{name}")
    return float(value)


def _choice(value, name: str, options: tuple[str, ...]) -> str:
    if str(value) not in options:
        raise UserError(f"{name} must be one of {', '.join(options)}, got {value!r}", f"runtime.guardrails.{name}")
    return str(value)


def _zone(name) -> ZoneInfo:
    try:
        return ZoneInfo(str(name))
    except (ZoneInfoNotFoundError, ValueError):
        raise UserError(
            f"{name!r} is not a time zone (an IANA name such as UTC or Europe/Prague)",
            "runtime.guardrails.day_timezone",
        ) from None


class Guardrails:
    """Daily and total loss limits that halt trading, a position-size cap and a gross-exposure cap."""

    def __init__(
        self,
        start_equity: float,
        max_daily_loss: float = 0.05,
        max_total_loss: float = 0.10,
        max_position: float = 0.5,
        max_gross_exposure: float = 1.0,
        daily_loss_base: str = "day_start",
        day_start: str = "equity",
        day_timezone: str = "UTC",
        daily_halt: str = "day",
    ):
        self.start_equity = checked_equity(start_equity)
        self.max_daily_loss = _limit(max_daily_loss, "max_daily_loss")
        self.max_total_loss = _limit(max_total_loss, "max_total_loss")
        self.max_position = _limit(max_position, "max_position", high=math.inf)
        self.max_gross_exposure = _limit(max_gross_exposure, "max_gross_exposure", high=math.inf)
        self.daily_loss_base = _choice(daily_loss_base, "daily_loss_base", DAILY_LOSS_BASES)
        self.day_start = _choice(day_start, "day_start", DAY_STARTS)
        self.day_timezone = str(day_timezone)
        self._zone = _zone(day_timezone)
        self.daily_halt = _choice(daily_halt, "daily_halt", DAILY_HALTS)
        self.breaches: list[Breach] = []
        self._clock: pd.Timestamp | None = None
        self._day: dt.date | None = None
        self._day_start_equity: float | None = None
        self._halted_day: dt.date | None = None
        self._halted_forever = False
        self._last_day: tuple[int, dt.date] | None = None  # (time ns, its day) of the last day_of

    @property
    def total_floor(self) -> float:
        return (1.0 - self.max_total_loss) * self.start_equity

    @property
    def daily_floor(self) -> float | None:
        """The current day's floor (None before the first check)."""
        start = self._day_start_equity
        if start is None:
            return None
        if self.daily_loss_base == "initial":
            return start - self.max_daily_loss * self.start_equity
        return (1.0 - self.max_daily_loss) * start

    @property
    def day_start_equity(self) -> float | None:
        return self._day_start_equity

    def day_of(self, at) -> dt.date:
        """The trading day ``at`` belongs to (midnight in ``day_timezone``)."""
        at = utc_timestamp(at, "runtime.guardrails")
        if self._last_day is None or self._last_day[0] != at.value:  # asked three times per candle
            self._last_day = (at.value, at.tz_convert(self._zone).date())
        return self._last_day[1]

    def _now(self, at, where: str) -> pd.Timestamp:
        at = utc_timestamp(at, where)
        return at if self._clock is None or at > self._clock else self._clock

    def check(
        self, at: pd.Timestamp, equity: float, lowest: float | None = None, balance: float | None = None
    ) -> Breach | None:
        """See the new equity (marked at the closes), the lowest it can have reached since the last check
        (``lowest``, default ``equity``) and the balance (for ``day_start: balance``; without it the equity);
        returns a breach the first time a limit is crossed, else None."""
        now = self._clock = self._now(at, "runtime.guardrails: check")
        equity = float(equity)
        lowest = equity if lowest is None else min(float(lowest), equity)
        day = self.day_of(now)
        if day != self._day:  # days only move forward: ``now`` never goes back
            start = float(balance) if self.day_start == "balance" and balance is not None else equity
            self._day, self._day_start_equity = day, start
        if self._halted_forever:
            return None
        total_floor = self.total_floor
        if lowest < total_floor:
            self._halted_forever = True
            return self._loss_breach(
                "total_loss",
                now,
                lowest,
                equity,
                total_floor,
                self.start_equity,
                f"the starting {self.start_equity:,.2f} less {self.max_total_loss:.2%} of it",
                "forever",
                "halted for good",
            )
        daily_floor = self.daily_floor
        if lowest < daily_floor and self._halted_day != day:
            self._halted_day = day
            of = f"the starting {self.start_equity:,.2f}" if self.daily_loss_base == "initial" else "it"
            if self.daily_halt == "forever":
                self._halted_forever = True
                until = "halted for good (a daily breach ends the account)"
            else:
                until = f"halted until {day + dt.timedelta(days=1)} 00:00 {self.day_timezone}"
            return self._loss_breach(
                "daily_loss",
                now,
                lowest,
                equity,
                daily_floor,
                self._day_start_equity,
                f"the day's start {self._day_start_equity:,.2f} less {self.max_daily_loss:.2%} of {of}",
                self.daily_halt,
                until,
            )
        return None

    def _loss_breach(
        self,
        kind: str,
        at: pd.Timestamp,
        lowest: float,
        close_equity: float,
        floor: float,
        reference: float,
        rule: str,
        halt: str,
        until: str,
    ) -> Breach:
        reached, allowed = reference - lowest, reference - floor
        where = "" if lowest == close_equity else f" at the candle's adverse extreme (close {close_equity:,.2f})"
        return self._record(
            Breach(
                kind,
                at,
                lowest,
                floor,
                f"equity {lowest:,.2f}{where} below the floor {floor:,.2f} ({rule}): loss {reached:,.2f} against "
                f"{allowed:,.2f} allowed, overshoot {floor - lowest:,.2f}; {until}",
                halt,
                reached_loss=reached,
                max_loss=allowed,
                overshoot=floor - lowest,
                close_equity=close_equity,
            )
        )

    def allows_trading(self, at) -> bool:
        """False after a total breach (or a daily breach under ``daily_halt: forever``), and for the rest of
        the day of a daily breach."""
        if self._halted_forever:
            return False
        return self.day_of(self._now(at, "runtime.guardrails: allows_trading")) != self._halted_day

    @property
    def halted_forever(self) -> bool:
        return self._halted_forever

    def admits_exposure(self, gross_fraction: float, at=None, equity: float | None = None) -> bool:
        """False (an order to refuse) when the gross notional of all positions after the order,
        ``gross_fraction`` of equity, would exceed ``max_gross_exposure``; with ``at`` a refusal is recorded
        as a gross_exposure breach (halt none)."""
        gross_fraction = float(gross_fraction)
        if gross_fraction <= self.max_gross_exposure * (1.0 + 1e-9):  # 0.5 + 0.5 is 1.0, not a refusal
            return True
        if at is not None:
            self._record(
                Breach(
                    "gross_exposure",
                    utc_timestamp(at, "runtime.guardrails: admits_exposure"),
                    math.nan if equity is None else float(equity),
                    self.max_gross_exposure,
                    f"order refused: gross exposure would be {gross_fraction:.3g}x equity, above "
                    f"{self.max_gross_exposure:g}x",
                    "none",
                )
            )
        return False

    def clamp_fraction(self, fraction: float, at=None, equity: float | None = None) -> float:
        """``fraction`` capped to [0, max_position]; with ``at`` a cut is also recorded as a position_size
        breach (halt none)."""
        fraction = float(fraction)
        if not math.isfinite(fraction) or fraction <= 0:
            return 0.0
        if fraction <= self.max_position:
            return fraction
        if at is not None:
            self._record(
                Breach(
                    "position_size",
                    utc_timestamp(at, "runtime.guardrails: clamp_fraction"),
                    math.nan if equity is None else float(equity),
                    self.max_position,
                    f"position fraction {fraction:g} capped at {self.max_position:g} of equity",
                    "none",
                )
            )
        return self.max_position

    def _record(self, breach: Breach) -> Breach:
        self.breaches.append(breach)
        return breach
