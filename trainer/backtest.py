"""Trading evaluation of a model's test-set signals, honest by construction.

``backtest(signals, candles, step, horizon, cfg)`` turns per-candle probabilities into trades priced only
from real candles, and returns ``Backtest(metrics, trades, equity)``.

Rules
- Signal: at candle open time t (features used candles <= t, so the signal is known at the close of t) go
  long when ``p_long >= threshold`` and ``p_long > p_short``; short when ``p_short >= threshold`` and
  ``p_short > p_long`` and ``allow_short``; otherwise stay flat. NaN probabilities never trade. Signals that
  carry a ``side`` column (-1/0/+1, from a ``trainer.policy.DecisionPolicy``) are traded as given instead.
- Prices: entry at the open of candle t + step, exit at the open of candle t + (horizon + 1) * step, both
  looked up by timestamp in that symbol's candles. If either candle is missing (a gap, or past the end of the
  data) the trade is skipped and counted in ``skipped_gap``. No price is ever derived from another price.
- One position per symbol: each symbol's signals are walked in time order; a trade is open from its signal
  until its exit timestamp, so a long/short signal with ``signal_time < exit_time`` of the open trade is
  ignored and counted in ``ignored_while_in_position`` (flat signals are not counted). The earliest next
  trade therefore enters one candle after the previous exit.
- Returns per trade: long ``gross = exit / entry - 1``; short (sold at entry, bought back at exit)
  ``gross = (entry - exit) / entry``. Round-trip cost as a fraction of notional:
  ``2 * (fee_bps + slippage_bps) / 1e4 + spread``, where ``spread`` is the full bid-ask spread (half paid on
  each side): the signal's ``spread`` when finite and >= 0, else ``spread_bps / 1e4``.
  ``net_return = gross - cost``.
- Portfolio: equal weight per symbol present in ``signals``, rebalanced every bar: the bar return is the mean
  over symbols of each symbol's bar return (0 when flat). A symbol's position is marked to market at candle
  opens (open-to-open) from entry to exit; the whole round-trip cost is charged on the exit bar, so the
  bar returns of one trade compound to exactly ``1 + net_return``. A mark that would take a short's value
  below zero is clipped at zero (the sleeve is wiped out).
- Equity (starts at 1.0) lives on the union of the symbols' candle timestamps from the first signal's entry
  time to the later of the last exit and the last signal time; a grid timestamp a symbol lacks is a 0 bar for
  it, and its next available open carries the whole move.
- Metrics: ``sharpe = mean(r) / std(r, ddof=1) * sqrt(periods_per_year)`` and
  ``sortino = mean(r) / sqrt(mean(min(r, 0)^2)) * sqrt(periods_per_year)`` over the equity curve's bar
  returns (None when the denominator is 0 or fewer than 2 bars). ``periods_per_year`` defaults to
  365 * 24 * 3600 / step seconds (crypto trades 24/7). ``max_drawdown`` is the largest ``1 - equity / peak``.
  ``turnover`` = one-way position changes (2 per trade) per symbol, divided by the number of bars, times
  periods_per_year: the annualised number of position changes per symbol. ``exposure`` = fraction of
  bar x symbol slots holding a position. ``costs_paid`` = sum of trade costs / number of symbols (each trade
  uses one symbol's share of capital), a fraction of starting capital ignoring compounding.
  ``profit_factor`` = sum of winning net returns / -sum of losing ones; None with ``no_losing_trades=True``
  when nothing lost (JSON cannot hold inf). Counts are ints; a ratio with nothing to divide is None.
"""

from __future__ import annotations

import logging
import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from core.errors import UserError

log = logging.getLogger(__name__)

DEFAULTS: dict[str, object] = {
    "threshold": 0.55,
    "allow_short": True,
    "fee_bps": 10.0,
    "spread_bps": 5.0,
    "slippage_bps": 2.0,
    "periods_per_year": None,
}
_SECONDS_PER_YEAR = 365 * 24 * 3600
_SIGNAL_COLUMNS = ("symbol", "timestamp", "p_long", "p_short")
_SIDE_COLUMNS = ("symbol", "timestamp", "side")
_CANDLE_COLUMNS = ("timestamp", "open")
_TRADE_COLUMNS = [
    "symbol",
    "side",
    "signal_time",
    "entry_time",
    "entry_price",
    "exit_time",
    "exit_price",
    "gross_return",
    "cost",
    "net_return",
]


@dataclass
class Backtest:
    """Metrics (JSON-ready), one row per trade, and the portfolio equity curve."""

    metrics: dict
    trades: pd.DataFrame
    equity: pd.DataFrame


@dataclass
class _Settings:
    threshold: float
    allow_short: bool
    fee_bps: float
    spread_bps: float
    slippage_bps: float
    periods_per_year: float | None


def _number(cfg: Mapping, key: str, where: str, low: float, high: float = math.inf) -> float:
    value = cfg.get(key, DEFAULTS[key])
    # bool is an int subclass: `threshold: true` is a typo, not 1.0
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise UserError(f"{key} must be a number, got {value!r}", f"{where}.{key}")
    value = float(value)
    if not (low <= value <= high):
        raise UserError(f"{key} must be in [{low}, {high}], got {value}", f"{where}.{key}")
    return value


def _settings(cfg: Mapping, where: str) -> _Settings:
    allow_short = cfg.get("allow_short", DEFAULTS["allow_short"])
    if not isinstance(allow_short, bool):
        raise UserError(f"allow_short must be true or false, got {allow_short!r}", f"{where}.allow_short")
    ppy = cfg.get("periods_per_year", DEFAULTS["periods_per_year"])
    return _Settings(
        threshold=_number(cfg, "threshold", where, 0.5, 1.0),
        allow_short=allow_short,
        fee_bps=_number(cfg, "fee_bps", where, 0.0),
        spread_bps=_number(cfg, "spread_bps", where, 0.0),
        slippage_bps=_number(cfg, "slippage_bps", where, 0.0),
        periods_per_year=None if ppy is None else _number(cfg, "periods_per_year", where, 1e-12),
    )


def _ns(values: pd.Series | pd.Index, where: str) -> np.ndarray:
    """Timestamps as int64 UTC nanoseconds; naive timestamps are refused (their zone is a guess)."""
    index = pd.DatetimeIndex(values)
    if index.tz is None:
        raise UserError("timestamps must be tz-aware UTC", where)
    return index.tz_convert("UTC").as_unit("ns").asi8


def _sides(p_long: np.ndarray, p_short: np.ndarray, s: _Settings) -> np.ndarray:
    long_ = (p_long >= s.threshold) & (p_long > p_short)
    short = (p_short >= s.threshold) & (p_short > p_long) & s.allow_short
    return long_.astype(np.int8) - short.astype(np.int8)


def _walk(sig_ns: list[int], side: list[int], entry_ok: list[bool], exit_ns: list[int]) -> tuple[list[int], int, int]:
    """One position per symbol: indices of the signals that open trades, skipped (gap), ignored counts."""
    taken: list[int] = []
    busy_until = -(2**63)
    skipped = ignored = 0
    for i, t in enumerate(sig_ns):
        if side[i] == 0:
            continue
        if t < busy_until:
            ignored += 1
        elif not entry_ok[i]:
            skipped += 1
        else:
            taken.append(i)
            busy_until = exit_ns[i]
    return taken, skipped, ignored


def _lookup(ts: np.ndarray, wanted: np.ndarray) -> np.ndarray:
    """Index of each wanted timestamp in the sorted candle timestamps, -1 where the candle is missing."""
    pos = np.searchsorted(ts, wanted)
    inside = pos < len(ts)
    found = np.zeros(len(wanted), dtype=bool)
    found[inside] = ts[pos[inside]] == wanted[inside]
    return np.where(found, pos, -1)


def _symbol_trades(
    sym: str, sig: pd.DataFrame, frame: pd.DataFrame, step_ns: int, horizon: int, s: _Settings, where: str
) -> tuple[dict, int, int]:
    """Trades of one symbol as arrays (entry/exit candle indices included), skipped and ignored counts."""
    ts = _ns(frame["timestamp"], f"{where}: candles[{sym}].timestamp")
    if len(ts) > 1 and not np.all(np.diff(ts) > 0):
        raise UserError(f"candle timestamps of {sym} are not sorted and unique", f"{where}: candles[{sym}]")
    opens = frame["open"].to_numpy(dtype=np.float64)
    sig_ns = _ns(sig["timestamp"], f"{where}: signals.timestamp")
    order = np.argsort(sig_ns, kind="stable")
    sig_ns = sig_ns[order]
    if len(sig_ns) > 1 and not np.all(np.diff(sig_ns) > 0):
        raise UserError(f"duplicate signal timestamps for {sym}", f"{where}: signals")
    if "side" in sig.columns:
        side = sig["side"].to_numpy(np.int8)[order]
    else:
        side = _sides(sig["p_long"].to_numpy(np.float64)[order], sig["p_short"].to_numpy(np.float64)[order], s)
    entry_idx = _lookup(ts, sig_ns + step_ns)
    exit_ns = sig_ns + (horizon + 1) * step_ns
    exit_idx = _lookup(ts, exit_ns)
    ok = (entry_idx >= 0) & (exit_idx >= 0)
    taken, skipped, ignored = _walk(sig_ns.tolist(), side.tolist(), ok.tolist(), exit_ns.tolist())
    k = np.asarray(taken, dtype=np.int64)
    if "spread" in sig.columns:
        spread = sig["spread"].to_numpy(np.float64)[order][k]
    else:
        spread = np.full(len(k), np.nan)
    from_signal = np.isfinite(spread) & (spread >= 0)
    spread = np.where(from_signal, spread, s.spread_bps / 1e4)
    entry_price, exit_price = opens[entry_idx[k]], opens[exit_idx[k]]
    direction = side[k].astype(np.float64)
    # short: sold at entry, bought back at exit, return on the entry notional
    gross = direction * (exit_price - entry_price) / entry_price
    cost = 2.0 * (s.fee_bps + s.slippage_bps) / 1e4 + spread
    trades = {
        "side": direction.astype(np.int64),
        "signal_ns": sig_ns[k],
        "entry_idx": entry_idx[k],
        "exit_idx": exit_idx[k],
        "entry_price": entry_price,
        "exit_price": exit_price,
        "gross_return": gross,
        "cost": cost,
        "net_return": gross - cost,
        "from_signal": from_signal,
    }
    return trades, skipped, ignored


def _symbol_bar_returns(t: dict, ts: np.ndarray, opens: np.ndarray, grid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One symbol's open-to-open bar returns while in position, and the grid positions they belong to."""
    lengths = t["exit_idx"] - t["entry_idx"]
    trade = np.repeat(np.arange(len(lengths)), lengths)
    first = np.cumsum(lengths) - lengths
    k = t["entry_idx"][trade] + (np.arange(len(trade)) - first[trade]) + 1
    entry = t["entry_price"][trade]
    side = t["side"][trade].astype(np.float64)
    value = 1.0 + side * (opens[k] - entry) / entry
    last = k == t["exit_idx"][trade]
    value[last] = 1.0 + t["net_return"][trade[last]]
    value = np.maximum(value, 0.0)
    prev = np.ones_like(value)
    not_first = np.ones(len(k), dtype=bool)
    not_first[first[lengths > 0]] = False
    prev[not_first] = value[np.flatnonzero(not_first) - 1]
    with np.errstate(divide="ignore", invalid="ignore"):
        ret = np.where(prev > 0, value / prev - 1.0, 0.0)
    return ret, np.searchsorted(grid, ts[k])


def _empty_trades() -> pd.DataFrame:
    when = pd.to_datetime(np.zeros(0, np.int64), utc=True)
    floats = np.zeros(0)
    return pd.DataFrame(
        {
            "symbol": np.zeros(0, dtype=object),
            "side": np.zeros(0, np.int64),
            "signal_time": when,
            "entry_time": when,
            "entry_price": floats,
            "exit_time": when,
            "exit_price": floats,
            "gross_return": floats,
            "cost": floats,
            "net_return": floats,
            "spread_from_signal": np.zeros(0, bool),
        }
    )


def _ratio(num: float, den: float, scale: float) -> float | None:
    return float(num / den * scale) if den > 0 and np.isfinite(den) else None


def _metrics(
    trades: pd.DataFrame,
    equity: np.ndarray,
    bar_ret: np.ndarray,
    slots_in_position: int,
    n_symbols: int,
    ppy: float,
    s: _Settings,
    skipped: int,
    ignored: int,
) -> dict:
    net = trades["net_return"].to_numpy()
    n = len(net)
    wins, losses = net[net > 0].sum(), -net[net < 0].sum()
    n_bars = len(bar_ret)
    drawdown = 1.0 - equity / np.maximum.accumulate(equity)
    mean = float(bar_ret.mean()) if n_bars else 0.0
    std = float(bar_ret.std(ddof=1)) if n_bars >= 2 else 0.0
    downside = float(np.sqrt(np.mean(np.minimum(bar_ret, 0.0) ** 2))) if n_bars >= 2 else 0.0
    n_from_signal = int(trades["spread_from_signal"].sum()) if n else 0
    source = "none" if n == 0 else "signals" if n_from_signal == n else "cfg" if n_from_signal == 0 else "mixed"
    return {
        "n_trades": n,
        "long_trades": int((trades["side"] > 0).sum()),
        "short_trades": int((trades["side"] < 0).sum()),
        "win_rate": float(np.mean(net > 0)) if n else None,
        "profit_factor": float(wins / losses) if losses > 0 else None,
        "no_losing_trades": bool(n > 0 and losses == 0),
        "avg_trade_return": float(net.mean()) if n else None,
        "total_return": float(equity[-1] - 1.0),
        "sharpe": _ratio(mean, std, math.sqrt(ppy)),
        "sortino": _ratio(mean, downside, math.sqrt(ppy)),
        "max_drawdown": float(drawdown.max()),
        "turnover": _ratio(2.0 * n / max(n_symbols, 1), n_bars, ppy),
        "exposure": _ratio(slots_in_position, n_bars * n_symbols, 1.0),
        "costs_paid": float(trades["cost"].sum() / n_symbols) if n_symbols else 0.0,
        "skipped_gap": int(skipped),
        "ignored_while_in_position": int(ignored),
        "threshold": s.threshold,
        "allow_short": s.allow_short,
        "n_bars": int(n_bars),
        "n_symbols": int(n_symbols),
        "periods_per_year": float(ppy),
        "cost_assumptions": {
            "fee_bps_per_side": s.fee_bps,
            "slippage_bps_per_side": s.slippage_bps,
            "spread_bps_fallback": s.spread_bps,
            "spread_source": source,
            "trades_with_signal_spread": n_from_signal,
        },
    }


def backtest(
    signals: pd.DataFrame,
    candles: dict[str, pd.DataFrame],
    step: pd.Timedelta,
    horizon: int,
    cfg: Mapping,
    where: str = "eval.trading",
) -> Backtest:
    """Trade ``signals`` on ``candles`` under the module's rules; ``where`` prefixes config error locations."""
    s = _settings(cfg, where)
    step_ns = int(pd.Timedelta(step).as_unit("ns").value)
    if step_ns <= 0:
        raise UserError(f"candle step must be positive, got {step}", f"{where}: step")
    if isinstance(horizon, bool) or int(horizon) != horizon or horizon < 1:
        raise UserError(f"horizon must be a whole number of candles >= 1, got {horizon!r}", f"{where}: horizon")
    horizon = int(horizon)
    given_sides = "side" in signals.columns
    missing = [c for c in (_SIDE_COLUMNS if given_sides else _SIGNAL_COLUMNS) if c not in signals.columns]
    if missing:
        raise UserError(f"signals lack columns {missing}", f"{where}: signals")
    if given_sides:
        if not signals["side"].isin([-1, 0, 1]).all():
            raise UserError("side must be -1, 0 or +1", f"{where}: signals")
    else:
        probs = signals[["p_long", "p_short"]].to_numpy(np.float64)
        if np.any((probs < 0) | (probs > 1)):
            raise UserError("p_long/p_short must lie in [0, 1]", f"{where}: signals")
    ppy = s.periods_per_year if s.periods_per_year is not None else _SECONDS_PER_YEAR / (step_ns / 1e9)

    if signals.empty:
        # nothing to trade is a valid (if useless) evaluation, not an error
        log.warning("backtest: no signals")
        trades = _empty_trades()
        metrics = _metrics(trades, np.ones(1), np.zeros(0), 0, 0, ppy, s, 0, 0)
        equity = pd.DataFrame(
            {
                "timestamp": pd.to_datetime(np.zeros(0, np.int64), utc=True),
                "equity": np.zeros(0),
                "drawdown": np.zeros(0),
            }
        )
        return Backtest(metrics=metrics, trades=trades[_TRADE_COLUMNS], equity=equity)

    symbols = sorted(signals["symbol"].astype(str).unique())
    absent = [sym for sym in symbols if sym not in candles]
    if absent:
        raise UserError(f"no candles for symbols {absent}", f"{where}: candles")

    per_symbol: dict[str, dict] = {}
    skipped = ignored = 0
    groups = dict(tuple(signals.groupby(signals["symbol"].astype(str), sort=True)))
    for sym in symbols:
        missing = [c for c in _CANDLE_COLUMNS if c not in candles[sym].columns]
        if missing:
            raise UserError(f"candles lack columns {missing}", f"{where}: candles[{sym}]")
        t, sk, ig = _symbol_trades(sym, groups[sym], candles[sym], step_ns, horizon, s, where)
        per_symbol[sym] = t
        skipped += sk
        ignored += ig

    # the equity window: first signal's entry to the later of the last exit and the last signal time
    sig_ns = _ns(signals["timestamp"], f"{where}: signals.timestamp")
    start = int(sig_ns.min()) + step_ns
    end = int(sig_ns.max())
    candle_ns = {sym: _ns(candles[sym]["timestamp"], f"{where}: candles[{sym}].timestamp") for sym in symbols}
    for sym, t in per_symbol.items():
        if len(t["exit_idx"]):
            end = max(end, int(candle_ns[sym][t["exit_idx"]].max()))
    union = np.unique(np.concatenate([candle_ns[sym] for sym in symbols]))
    grid = union[(union >= start) & (union <= end)]
    if len(grid) == 0:
        grid = np.array([start], dtype=np.int64)

    bar_sum = np.zeros(len(grid))
    slots_in_position = 0
    frames = []
    for sym, t in per_symbol.items():
        ts = candle_ns[sym]
        ret, pos = _symbol_bar_returns(t, ts, candles[sym]["open"].to_numpy(np.float64), grid)
        bar_sum[pos] += ret  # a symbol marks each candle at most once, so positions are unique
        entry_ns, exit_ns = ts[t["entry_idx"]], ts[t["exit_idx"]]
        # grid bars (previous timestamp, timestamp] inside [entry, exit] hold the position
        slots_in_position += int(
            np.sum(np.searchsorted(grid, exit_ns, "right") - np.searchsorted(grid, entry_ns, "right"))
        )
        frames.append(
            pd.DataFrame(
                {
                    "symbol": sym,
                    "side": t["side"],
                    "signal_time": t["signal_ns"],
                    "entry_time": entry_ns,
                    "entry_price": t["entry_price"],
                    "exit_time": exit_ns,
                    "exit_price": t["exit_price"],
                    "gross_return": t["gross_return"],
                    "cost": t["cost"],
                    "net_return": t["net_return"],
                    "spread_from_signal": t["from_signal"],
                }
            )
        )
    trades = pd.concat(frames, ignore_index=True)
    for col in ("signal_time", "entry_time", "exit_time"):
        trades[col] = pd.to_datetime(trades[col].to_numpy(np.int64), utc=True)
    trades = trades.sort_values(["entry_time", "symbol"], kind="stable", ignore_index=True)

    bar_ret = bar_sum[1:] / len(symbols)
    equity = np.concatenate([[1.0], np.cumprod(1.0 + bar_ret)])
    metrics = _metrics(trades, equity, bar_ret, slots_in_position, len(symbols), ppy, s, skipped, ignored)
    if given_sides:  # the sides came from a policy, not from the threshold
        metrics["threshold"] = None
    curve = pd.DataFrame(
        {
            "timestamp": pd.to_datetime(grid, utc=True),
            "equity": equity,
            "drawdown": 1.0 - equity / np.maximum.accumulate(equity),
        }
    )
    log.debug(
        "backtest: %d trades on %d symbols, win rate %s, total return %.4f, %d skipped (gap), %d ignored (in position)",
        metrics["n_trades"],
        len(symbols),
        metrics["win_rate"],
        metrics["total_return"],
        skipped,
        ignored,
    )
    return Backtest(metrics=metrics, trades=trades[_TRADE_COLUMNS], equity=curve)
