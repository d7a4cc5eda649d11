"""The runtime loop: candle by candle, the promoted models' signals, the paper broker and the guardrails.

Each candle of each symbol, in time order:
1. the kill switch (a file, or an environment variable) is read: once set, every position is flattened at
   the next candle's open and the loop stops — within one candle;
2. orders queued at the previous candle fill at this candle's open (paper modes), and positions are marked
   to its close;
3. the guardrails see the equity before the candle (a new day starts from it) and, after the fills, the
   equity at the closes and at the candles' adverse extremes: any breach flattens every position and halts
   trading (for the rest of the day, or for good); the session's time never goes back (a symbol's late
   candle counts at the latest time seen);
4. the signal engine computes the ensemble's probabilities for the candle just closed (same feature code
   and saved scaler as the evaluation) and applies each model's card policy, tiers and rate limits;
5. an emitted signal opens or reverses a position sized by ``runtime.position.fraction`` (capped by the
   guardrails; refused when it would take the gross exposure past ``max_gross_exposure``) that is held for
   the models' label horizon; a position whose horizon has passed is closed.
Everything is written to the run folder's store (SQLite + JSONL) and notified through the sinks.
"""
import logging
import os
from dataclasses import asdict
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from trainer.runtime.broker import PaperBroker
from trainer.runtime.guardrails import Guardrails
from trainer.runtime.notify import Notifier
from trainer.runtime.signals import Signal, SignalEngine
from trainer.runtime.store import RuntimeStore

log = logging.getLogger("candlelab.runtime")


class KillSwitch:
    """Set when ``file`` exists or the environment variable ``env`` is 1/true/yes."""

    def __init__(self, file: Path, env: str | None):
        self.file, self.env = Path(file), env

    def is_set(self) -> bool:
        if self.file.exists():
            return True
        return bool(self.env) and os.environ.get(self.env, "").strip().lower() in ("1", "true", "yes")

    def why(self) -> str:
        return f"kill file {self.file}" if self.file.exists() else f"environment variable {self.env}"


class Runtime:
    """One session over one or more symbols; ``paper`` = trade on the paper broker, else signals only."""

    def __init__(self, engine: SignalEngine, step: pd.Timedelta, store: RuntimeStore, notifier: Notifier,
                 kill: KillSwitch, paper: bool, broker: PaperBroker | None = None,
                 guardrails: Guardrails | None = None, fraction: float = 0.2):
        self.engine, self.step, self.store, self.notifier, self.kill = engine, step, store, notifier, kill
        self.paper, self.broker, self.guardrails, self.fraction = paper, broker, guardrails, float(fraction)
        self.hold_until: dict[str, pd.Timestamp] = {}
        self.stopping: str | None = None
        self.stopped = False
        self.candles_seen = 0
        self.last_at: pd.Timestamp | None = None
        self.emitted = 0
        self.curve: list[tuple[pd.Timestamp, float]] = []   # equity after each paper step
        self._trades_written = 0

    def process(self, at: pd.Timestamp, histories: dict[str, pd.DataFrame]) -> bool:
        """One time step: ``histories`` maps each symbol with a candle at ``at`` to its candles up to and
        including it. Returns False once the session has stopped."""
        if self.stopped:
            return False
        self.candles_seen += 1
        self.last_at = at if self.last_at is None else max(self.last_at, at)   # a late candle: time goes on
        if self.paper:
            # a new day's loss limit starts from the equity before this candle moves it; a breach seen
            # before the candle exits at its open
            self._guard(at, flatten_after=at - pd.Timedelta(1, "ns"))
            for symbol, history in histories.items():
                candle = history.iloc[-1]
                for fill in self.broker.on_candle(symbol, candle):
                    self.store.fill(fill)
            self._write_trades()
            self._guard(at, self.broker.adverse_equity(histories))
        if self.stopping is not None:   # the kill switch was seen: stop once every flattening order filled
            self._mark(at)
            if not self.broker.positions and not self.broker.pending:
                self.stopped = True
                return False
            return True
        if self.kill.is_set():
            self.stopping = self.kill.why()
            self.store.event("kill_switch", at, {"source": self.stopping})
            self.notifier.notify("kill_switch", f"kill switch ({self.stopping}): flattening and stopping",
                                 level="warning", at=str(at))
            if self.paper and self.broker.positions:
                self.broker.flatten(at, "kill switch")
                self._mark(at)
                return True   # one more candle fills the flattening orders, then the loop stops
            self.stopped = True
            self._mark(at)
            return False
        for symbol, history in histories.items():
            self._signal(symbol, at, history)
        self._mark(at)
        return True

    def _guard(self, at: pd.Timestamp, lowest: float | None = None, flatten_after=None) -> None:
        """Check the guardrails; a breach is stored, notified, flattens every position (at each symbol's first
        open after ``flatten_after``, default ``at``) and drops the holds."""
        breach = self.guardrails.check(at, self.broker.equity, lowest, self.broker.balance)
        if breach is None:
            return
        self.store.event("guardrail", breach.at, {k: str(v) if isinstance(v, pd.Timestamp) else v
                                                  for k, v in asdict(breach).items()})
        self.notifier.notify("guardrail", f"{breach.kind}: {breach.detail}; flattening, halted "
                                          f"({breach.halt})", level="warning", at=str(breach.at))
        self.broker.flatten(at if flatten_after is None else flatten_after, breach.kind)
        self.hold_until.clear()

    def _signal(self, symbol: str, at: pd.Timestamp, history: pd.DataFrame) -> None:
        signal = self.engine.on_candle(symbol, history)
        self.store.signal(_signal_row(signal))
        trading = self.paper and self.guardrails.allows_trading(at)
        if signal.status == "emitted":
            self.emitted += 1
            # high-tier signals reach the log at INFO; the others at DEBUG (every signal is in the store)
            self.notifier.notify("signal", f"{symbol} {'long' if signal.side > 0 else 'short'} "
                                           f"p={signal.confidence:.3f} tier={signal.tier}",
                                 level="info" if signal.tier == "high" else "debug", at=str(at))
            if trading:
                size = self.guardrails.clamp_fraction(self.fraction, at, self.broker.equity)
                gross = self.broker.gross_exposure_after(symbol, signal.side, size)
                # an order that adds no exposure (a renewal, an equal reversal) is never refused
                if gross <= self.broker.gross_exposure_after() or \
                        self.guardrails.admits_exposure(gross, at, self.broker.equity):
                    self.broker.target(symbol, signal.side, size, at, f"signal {signal.tier}")
                    self.hold_until[symbol] = at + signal.horizon * self.step
                    return
                self.store.event("order_refused", at, {"symbol": symbol, "side": signal.side, "fraction": size,
                                                       "gross_exposure": gross,
                                                       "max_gross_exposure": self.guardrails.max_gross_exposure})
        if self.paper and symbol in self.hold_until and at >= self.hold_until[symbol]:
            self.broker.target(symbol, 0, 0.0, at, "horizon reached")
            del self.hold_until[symbol]

    def _write_trades(self) -> None:
        trades = self.broker.closed_trades
        for trade in trades[self._trades_written:]:
            self.store.trade(trade)
            self.notifier.notify("trade", f"{trade.symbol} closed {trade.reason}: net {trade.net_pnl:+.2f}",
                                 at=str(trade.exit_time))
        self._trades_written = len(trades)

    def _mark(self, at: pd.Timestamp) -> None:
        if self.paper:   # at the session's time: the equity curve never goes back for a late candle
            self.store.equity(self.last_at, self.broker.equity, self.broker.exposure())
            self.curve.append((self.last_at, self.broker.equity))


def _signal_row(signal: Signal) -> dict:
    row = asdict(signal)
    row["timestamp"] = signal.timestamp.isoformat()
    return row


def replay(runtime: Runtime, candles: dict[str, pd.DataFrame], start: pd.Timestamp, end: pd.Timestamp | None,
           history: int, max_candles: int | None = None, seen: dict[str, pd.Timestamp] | None = None) -> int:
    """Feed ``candles`` (per symbol, sorted) to ``runtime`` one timestamp at a time from ``start`` to ``end``;
    each symbol's history is its last ``history`` candles. ``seen`` (per symbol, updated here) skips each
    symbol's candles up to the last one already processed: symbols whose candles arrive in different polls
    are each processed once. Returns the number of time steps processed."""
    seen = {} if seen is None else seen
    index = {s: pd.DatetimeIndex(c["timestamp"]) for s, c in candles.items() if len(c)}

    def fresh(symbol: str, t: pd.Timestamp) -> bool:
        return symbol not in seen or t > seen[symbol]

    stamps = sorted({t for sym, ix in index.items() for t in ix
                     if t >= start and (end is None or t <= end) and fresh(sym, t)})
    if max_candles is not None:
        stamps = stamps[:int(max_candles)]
    steps = 0
    for at in stamps:
        histories = {}
        for symbol, ix in index.items():
            i = ix.searchsorted(at, side="right") - 1
            if i >= 0 and ix[i] == at and fresh(symbol, at):
                histories[symbol] = candles[symbol].iloc[max(0, i + 1 - history): i + 1]
                seen[symbol] = at
        steps += 1
        if not runtime.process(at, histories):
            break
    return steps


def live(runtime: Runtime, source: Callable[[], dict[str, pd.DataFrame]], history: int, poll_seconds: float,
         max_polls: int | None, wait: Callable[[float], None]) -> int:
    """Poll ``source`` for candles; process every candle newer than the last one seen of its symbol (the
    first poll only primes the history). ``wait`` sleeps between polls (a poller, not a training loop)."""
    seen: dict[str, pd.Timestamp] = {}
    polls = steps = 0
    while max_polls is None or polls < max_polls:
        candles = {s: c for s, c in source().items() if len(c)}
        polls += 1
        if not seen:
            seen = {s: pd.Timestamp(c["timestamp"].iloc[-1]) for s, c in candles.items()}
            if seen:
                runtime.store.event("live_start", max(seen.values()), {"symbols": sorted(seen)})
        elif candles:
            steps += replay(runtime, candles, min(seen.values()), None, history, seen=seen)
        if runtime.stopped:
            break
        if runtime.kill.is_set() and (not runtime.paper or not runtime.broker.positions):
            runtime.store.event("kill_switch", runtime.last_at or max(seen.values(), default=pd.Timestamp.now("UTC")),
                                {"source": runtime.kill.why()})
            runtime.stopping, runtime.stopped = runtime.kill.why(), True
            break
        if max_polls is None or polls < max_polls:
            wait(poll_seconds)
    return steps


def equity_frame(runtime: Runtime) -> pd.DataFrame:
    """The paper equity curve with its drawdown (empty in dry mode)."""
    frame = pd.DataFrame(runtime.curve, columns=["timestamp", "equity"])
    if frame.empty:
        return frame.assign(drawdown=[])
    values = frame["equity"].to_numpy(np.float64)
    frame["drawdown"] = 1.0 - values / np.maximum.accumulate(values)
    return frame
