"""A paper broker: orders queued at one candle fill at the next candle's open, positions mark to its close.

Rules
- Prices: every price comes from a candle handed to ``on_candle``: fills at its ``open``, marks at its
  ``close``. The only adjustment is the documented cost: a buy fills at ``open * (1 + half_spread + slippage)``,
  a sell at ``open * (1 - half_spread - slippage)``, where ``half_spread = spread_bps / 2 / 1e4`` and
  ``slippage = slippage_bps / 1e4``; the fee is ``fee_bps / 1e4`` of the fill's notional (quantity x fill
  price). No price is ever derived from another price by a multiple (no fixed take-profit/stop levels).
- Orders: ``target(symbol, side, fraction, at, reason)`` asks to hold ``side`` (+1 long, -1 short, 0 flat)
  with notional ``fraction * equity`` (equity when ``target`` is called: what the decision saw). ``at`` is
  the open time of the candle whose close produced the decision; the order fills on the first candle of
  that symbol whose timestamp is later than ``at`` (never on the decision's own candle: no look-ahead).
  A newer target for the symbol replaces a pending one.
- Positions: one per symbol. A target with the side already held keeps the position as it is (no resizing,
  no costs); the opposite side closes it and opens the new one at the same open (a reversal: two fills);
  flat closes it. Shorts use cash accounting: selling adds the proceeds to cash, the position holds a
  negative quantity and marks at ``quantity * close``.
- Reporting: ``Fill.side`` is +1 buy / -1 sell and ``Fill.quantity`` is positive; ``Fill.price`` is the
  executed price and ``Fill.cost = fee + quantity * |price - open|`` (everything paid over the open).
  Positions and ``ClosedTrade`` carry the side with a positive quantity and the candle opens as entry/exit
  prices; ``gross_pnl = side * quantity * (exit_open - entry_open)``, ``costs`` = both fills' costs,
  ``net_pnl = gross_pnl - costs`` (exactly the trade's change in cash).
- ``equity`` = cash + each position's quantity x its symbol's last close; ``exposure()`` = gross marked
  notional / equity; ``balance`` = equity without the open positions' floating P&L (the start, closed trades'
  net P&L and the entry costs of open positions); ``adverse_equity(symbols)`` = equity with the positions of
  ``symbols`` at their last candle's adverse extreme (low for a long, high for a short): the lowest equity
  those candles can have reached; ``gross_exposure_after(symbol, side, fraction)`` = gross notional / equity
  once a ``target`` had replaced the symbol's pending order and every pending order had filled.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass

import pandas as pd

from core.errors import UserError

log = logging.getLogger("candlelab.runtime")


@dataclass
class Fill:
    symbol: str
    timestamp: pd.Timestamp
    side: int  # +1 buy, -1 sell
    quantity: float  # > 0
    price: float  # executed: the candle open adjusted by half spread + slippage
    cost: float  # fee + quantity * |price - open|
    reason: str


@dataclass
class ClosedTrade:
    symbol: str
    side: int  # +1 long, -1 short
    entry_time: pd.Timestamp
    entry_price: float  # the entry candle's open
    exit_time: pd.Timestamp
    exit_price: float  # the exit candle's open
    quantity: float  # > 0
    gross_pnl: float
    costs: float
    net_pnl: float
    reason: str  # why it was closed


@dataclass
class _Position:
    side: int
    quantity: float
    entry_price: float
    entry_time: pd.Timestamp
    entry_cost: float


@dataclass
class _Order:
    side: int
    notional: float
    at: pd.Timestamp
    reason: str


def utc_timestamp(value, where: str = "runtime") -> pd.Timestamp:
    """A tz-aware UTC timestamp; naive ones are refused (their zone would be a guess)."""
    if type(value) is pd.Timestamp and value.tzinfo is dt.timezone.utc:  # already one: asked several times a candle
        return value
    ts = pd.Timestamp(value)
    if ts is pd.NaT or pd.isna(ts):
        raise UserError("timestamp is missing", where)
    if ts.tz is None:
        raise UserError(f"timestamp {ts} must be tz-aware UTC", where)
    return ts.tz_convert("UTC")


def _extreme(candle: Mapping, key: str, body: float, pick) -> float:
    """The candle's low/high, never inside its open-close body (a missing or bad one is the body's end)."""
    value = float(candle[key]) if key in candle else math.nan
    return pick(value, body) if math.isfinite(value) and value > 0 else body


def checked_equity(value: float) -> float:
    """``runtime.broker.start_equity`` as a float; anything but a finite number > 0 is the user's error."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) or value <= 0:
        raise UserError(f"start_equity must be a number > 0, got {value!r}", "runtime.broker.start_equity")
    return float(value)


def _bps(value: float, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) or value < 0:
        raise UserError(f"{name} must be a number >= 0, got {value!r}", f"runtime.broker.{name}")
    return float(value)


class PaperBroker:
    """Simulated execution on real candles with fees, spread and slippage (see the module docstring)."""

    def __init__(
        self, start_equity: float = 10_000.0, fee_bps: float = 10, spread_bps: float = 5, slippage_bps: float = 2
    ):
        self.start_equity = checked_equity(start_equity)
        self.fee = _bps(fee_bps, "fee_bps") / 1e4
        self.half_spread = _bps(spread_bps, "spread_bps") / 2 / 1e4
        self.slippage = _bps(slippage_bps, "slippage_bps") / 1e4
        self._cash = self.start_equity
        self._positions: dict[str, _Position] = {}
        self._marks: dict[str, float] = {}
        self._ranges: dict[str, tuple[float, float]] = {}  # symbol -> (low, high) of its last candle
        self._pending: dict[str, _Order] = {}
        self._fills: list[Fill] = []
        self._closed: list[ClosedTrade] = []

    # orders
    def target(self, symbol: str, side: int, fraction: float, at: pd.Timestamp, reason: str) -> None:
        """Queue an order to hold ``side`` with notional ``fraction * equity``; fills at the next candle's open."""
        if isinstance(side, bool) or not isinstance(side, numbers.Integral) or int(side) not in (-1, 0, 1):
            raise ValueError(f"side must be -1, 0 or 1, got {side!r}")
        if (
            isinstance(fraction, bool)
            or not isinstance(fraction, numbers.Real)
            or not math.isfinite(fraction)
            or fraction < 0
        ):
            raise ValueError(f"fraction must be a finite number >= 0, got {fraction!r}")
        at = utc_timestamp(at, f"runtime.broker: target {symbol}")
        self._pending[symbol] = _Order(int(side), float(fraction) * self.equity, at, str(reason))

    def flatten(self, at, reason: str) -> None:
        """Queue flat targets for every open position (and cancel pending orders of flat symbols)."""
        for symbol in sorted(set(self._positions) | set(self._pending)):
            self.target(symbol, 0, 0.0, at, reason)

    def close_at_marks(self, at, reason: str) -> list[Fill]:
        """Close every position at its symbol's last close, with the usual costs, when no later candle will
        come to fill at (a stop at the end of the data or between polls); pending orders are dropped."""
        at = utc_timestamp(at, "runtime.broker: close_at_marks")
        self._pending.clear()
        fills: list[Fill] = []
        for symbol in sorted(self._positions):
            fills += self._execute(symbol, _Order(0, 0.0, at, str(reason)), at, self._marks[symbol])
        return fills

    # market data
    def on_candle(self, symbol: str, candle: Mapping) -> list[Fill]:
        """Fill this symbol's pending order at the candle's open, then mark its position to the close."""
        where = f"runtime.broker: candle {symbol}"
        ts = utc_timestamp(candle["timestamp"], where)
        open_, close = float(candle["open"]), float(candle["close"])
        if not (math.isfinite(open_) and math.isfinite(close) and open_ > 0 and close > 0):
            raise UserError(f"open and close must be positive prices, got open={open_} close={close} at {ts}", where)
        fills: list[Fill] = []
        order = self._pending.get(symbol)
        if order is not None and ts > order.at:
            del self._pending[symbol]
            fills = self._execute(symbol, order, ts, open_)
        self._marks[symbol] = close
        self._ranges[symbol] = (
            _extreme(candle, "low", min(open_, close), min),
            _extreme(candle, "high", max(open_, close), max),
        )
        return fills

    # state
    @property
    def equity(self) -> float:
        return self._cash + sum(self._signed(p) * self._marks[s] for s, p in self._positions.items())

    @property
    def cash(self) -> float:
        return self._cash

    @property
    def balance(self) -> float:
        """Equity without the open positions' floating P&L."""
        return self.equity - sum(self._signed(p) * (self._marks[s] - p.entry_price) for s, p in self._positions.items())

    def adverse_equity(self, symbols) -> float:
        """Equity with each position of ``symbols`` marked at its last candle's low (long) or high (short),
        the others at their close."""
        symbols = set(symbols)
        value = self._cash
        for s, p in self._positions.items():
            low, high = self._ranges.get(s, (self._marks[s], self._marks[s]))
            price = (low if p.side > 0 else high) if s in symbols else self._marks[s]
            value += self._signed(p) * price
        return value

    def gross_exposure_after(self, symbol: str | None = None, side: int = 0, fraction: float = 0.0) -> float:
        """Gross notional / equity (inf when equity <= 0) once ``target(symbol, side, fraction, ...)`` (none
        when ``symbol`` is None) and every pending order had filled at the last marks; a same-side target
        keeps the held position."""
        equity = self.equity
        gross = 0.0
        for s in set(self._positions) | set(self._pending) | ({symbol} - {None}):
            held = self._positions.get(s)
            order = _Order(int(side), float(fraction) * equity, None, "") if s == symbol else self._pending.get(s)
            if held is not None and (order is None or order.side == held.side):
                gross += held.quantity * self._marks[s]
            elif order is not None and order.side != 0:
                gross += max(order.notional, 0.0)
        return gross / equity if equity > 0 else math.inf

    @property
    def positions(self) -> dict[str, tuple[int, float, float, pd.Timestamp]]:
        """symbol -> (side, quantity > 0, entry price = entry candle's open, entry time)."""
        return {s: (p.side, p.quantity, p.entry_price, p.entry_time) for s, p in self._positions.items()}

    @property
    def pending(self) -> dict[str, tuple[int, float, pd.Timestamp, str]]:
        """symbol -> (side, notional, at, reason) of the order waiting for the symbol's next candle."""
        return {s: (o.side, o.notional, o.at, o.reason) for s, o in self._pending.items()}

    @property
    def closed_trades(self) -> list[ClosedTrade]:
        return list(self._closed)

    @property
    def fills(self) -> list[Fill]:
        return list(self._fills)

    def exposure(self) -> float:
        """Gross marked notional / equity (inf when equity <= 0 with positions open)."""
        gross = sum(p.quantity * self._marks[s] for s, p in self._positions.items())
        equity = self.equity
        if gross == 0:
            return 0.0
        return gross / equity if equity > 0 else math.inf

    # internals
    @staticmethod
    def _signed(p: _Position) -> float:
        return p.side * p.quantity

    def _execute(self, symbol: str, order: _Order, ts: pd.Timestamp, open_: float) -> list[Fill]:
        fills = []
        held = self._positions.get(symbol)
        if held is not None and held.side != order.side:
            exit_fill = self._fill(symbol, ts, -held.side, held.quantity, open_, order.reason)
            fills.append(exit_fill)
            gross = held.side * held.quantity * (open_ - held.entry_price)
            costs = held.entry_cost + exit_fill.cost
            self._closed.append(
                ClosedTrade(
                    symbol=symbol,
                    side=held.side,
                    entry_time=held.entry_time,
                    entry_price=held.entry_price,
                    exit_time=ts,
                    exit_price=open_,
                    quantity=held.quantity,
                    gross_pnl=gross,
                    costs=costs,
                    net_pnl=gross - costs,
                    reason=order.reason,
                )
            )
            del self._positions[symbol]
        if order.side != 0 and symbol not in self._positions:
            if order.notional > 0:
                price = self._price(open_, order.side)
                entry_fill = self._fill(symbol, ts, order.side, order.notional / price, open_, order.reason)
                fills.append(entry_fill)
                self._positions[symbol] = _Position(order.side, entry_fill.quantity, open_, ts, entry_fill.cost)
            else:
                log.warning(
                    "broker: %s %s order not opened: notional %.4f (equity %.4f)",
                    symbol,
                    "long" if order.side > 0 else "short",
                    order.notional,
                    self.equity,
                )
        return fills

    def _price(self, open_: float, side: int) -> float:
        return open_ * (1.0 + side * (self.half_spread + self.slippage))

    def _fill(self, symbol: str, ts: pd.Timestamp, side: int, quantity: float, open_: float, reason: str) -> Fill:
        price = self._price(open_, side)
        notional = quantity * price
        fee = notional * self.fee
        self._cash -= side * notional + fee
        fill = Fill(
            symbol=symbol,
            timestamp=ts,
            side=side,
            quantity=quantity,
            price=price,
            cost=fee + quantity * abs(price - open_),
            reason=reason,
        )
        self._fills.append(fill)
        return fill
