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
Everything is written to the run folder's store (SQLite + JSONL) and notified through the sinks; each
candle's rows, the runtime's checkpoint and the last candle processed per symbol commit as one transaction
(a killed process loses at most the candle in flight; ``checkpoint.restore`` resumes from it).

Stops: the kill switch, ``request_stop`` (a signal, a fatal provider error) all stop the same way: a ``stop``
event, trading ends, every position is flattened at the next candle's open (``flatten_on_stop``; without it
positions stay open for a resume to continue) and, when no next candle comes, at its last close
(``stop_at_last_close``, said in a ``flattened_at_last_close`` event). The stop candles' signals are still
computed and stored, so a resumed session's signals skip none.
"""

import logging
import os
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from trainer.runtime.broker import PaperBroker
from trainer.runtime.drift import DriftAlert, DriftMonitor
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

    def __init__(
        self,
        engine: SignalEngine,
        step: pd.Timedelta,
        store: RuntimeStore,
        notifier: Notifier,
        kill: KillSwitch,
        paper: bool,
        broker: PaperBroker | None = None,
        guardrails: Guardrails | None = None,
        fraction: float = 0.2,
    ):
        self.engine, self.step, self.store, self.notifier, self.kill = engine, step, store, notifier, kill
        self.paper, self.broker, self.guardrails, self.fraction = paper, broker, guardrails, float(fraction)
        self.hold_until: dict[str, pd.Timestamp] = {}
        self.stopping: str | None = None
        self.stopped = False
        self.candles_seen = 0
        self.last_at: pd.Timestamp | None = None
        self.emitted = 0
        self.curve: list[tuple[pd.Timestamp, float]] = []  # equity after each paper step
        self._trades_written = 0
        self.drift: DriftMonitor | None = None  # live-vs-test-period figures, checked per signal and trade
        self.last_candle: dict[str, pd.Timestamp] = {}  # the last candle processed per symbol (resume marker)
        self.stop_request: tuple[str, str] | None = None  # (kind, why): signal | provider_error
        self.stop_kind: str | None = None  # kill_switch | signal | provider_error once stopping
        self.flatten_on_stop = True
        self.closed_at_last_close = 0  # fills of a stop that found no later candle to flatten at
        self.after_commit: list[Callable[[pd.Timestamp], None]] = []  # called after each committed candle

    def request_stop(self, kind: str, why: str) -> None:
        """Stop at the next candle (or between polls), as the kill switch does; the first request wins."""
        if self.stop_request is None and self.stopping is None:
            self.stop_request = (str(kind), str(why))

    def process(
        self, at: pd.Timestamp, histories: dict[str, pd.DataFrame], candles: dict[str, dict] | None = None
    ) -> bool:
        """One time step: ``histories`` maps each symbol with a candle at ``at`` to its candles up to and
        including it; ``candles`` (optional) each one's last candle as a mapping with a ``timestamp``, read
        ahead by ``replay`` instead of from the frame. Returns False once the session has stopped. The step's
        writes, the checkpoint and the last-candle markers commit together."""
        if self.stopped:
            return False
        from trainer.runtime.checkpoint import snapshot_json

        if candles is None:
            candles = {s: h.iloc[-1] for s, h in histories.items()}
        with self.store.candle():
            going = self._process(at, histories, candles)
            for symbol, candle in candles.items():
                self.last_candle[symbol] = pd.Timestamp(candle["timestamp"])
            self.store.put_state_json("checkpoint", snapshot_json(self))
        for hook in self.after_commit:
            hook(at)
        return going

    def prime(self, last: dict[str, pd.Timestamp]) -> None:
        """A live session's first poll: its candles are history, the next ones are processed (committed with
        a ``live_start`` event, so a resumed session skips none)."""
        from trainer.runtime.checkpoint import snapshot

        with self.store.candle():
            self.last_candle = dict(last)
            self.store.event("live_start", max(last.values()), {"symbols": sorted(last)})
            self.store.put_state("checkpoint", snapshot(self))

    def stop_at_last_close(self) -> None:
        """A stop with no later candle to flatten at: every position closes at its last close (a mark, said
        so in a ``flattened_at_last_close`` event), and the session is stopped."""
        if self.stopped:
            return
        from trainer.runtime.checkpoint import snapshot

        at = self.last_at if self.last_at is not None else pd.Timestamp.now("UTC")
        with self.store.candle():
            if self.stopping is None:
                self._begin_stop(at)
            if self.paper and self.flatten_on_stop and (self.broker.positions or self.broker.pending):
                fills = self.broker.close_at_marks(at, f"stop: {self.stopping} (last close)")
                for fill in fills:
                    self.store.fill(fill)
                self._write_trades()
                self.store.event(
                    "flattened_at_last_close",
                    at,
                    {
                        "reason": self.stopping,
                        "fills": len(fills),
                        "note": "no later candle to fill at: positions closed at their last close",
                    },
                )
                self.notifier.notify(
                    "stop",
                    f"no later candle: positions closed at their last close ({len(fills)} fill(s))",
                    level="warning",
                    at=str(at),
                )
                self.closed_at_last_close = len(fills)
                self._mark(at)
            self.stopped = True
            self.store.put_state("checkpoint", snapshot(self))

    def _begin_stop(self, at: pd.Timestamp) -> None:
        """Record why the session stops and, in paper modes, queue the flattening orders."""
        if self.stop_request is not None:
            self.stop_kind, self.stopping = self.stop_request
        else:
            self.stop_kind, self.stopping = "kill_switch", self.kill.why()
            self.store.event("kill_switch", at, {"source": self.stopping})
        flatten = self.paper and self.flatten_on_stop
        self.store.event(
            "stop",
            at,
            {
                "kind": self.stop_kind,
                "reason": self.stopping,
                "flatten": flatten,
                "open_positions": sorted(self.broker.positions) if self.paper else [],
            },
        )
        self.notifier.notify(
            "stop",
            f"stop ({self.stopping}): " + ("flattening and stopping" if flatten else "stopping"),
            level="warning",
            at=str(at),
        )
        if flatten:
            self.broker.flatten(at, f"stop: {self.stopping}")
            self.hold_until.clear()

    def _process(self, at: pd.Timestamp, histories: dict[str, pd.DataFrame], candles: dict) -> bool:
        self.candles_seen += 1
        self.last_at = at if self.last_at is None else max(self.last_at, at)  # a late candle: time goes on
        if self.paper:
            # a new day's loss limit starts from the equity before this candle moves it; a breach seen
            # before the candle exits at its open
            self._guard(at, flatten_after=at - pd.Timedelta(1, "ns"))
            for symbol, candle in candles.items():
                for fill in self.broker.on_candle(symbol, candle):
                    self.store.fill(fill)
            self._write_trades()
            self._guard(at, self.broker.adverse_equity(histories))
        if self.stopping is None and (self.stop_request is not None or self.kill.is_set()):
            self._begin_stop(at)
        for symbol, candle in candles.items():  # stopping: signals still stored, nothing traded
            self._signal(symbol, at, histories, pd.Timestamp(candle["timestamp"]))
        self._mark(at)
        if self.stopping is not None and (
            not self.paper or not self.flatten_on_stop or (not self.broker.positions and not self.broker.pending)
        ):
            self.stopped = True  # every flattening order filled (or nothing to flatten)
            return False
        return True

    def _guard(self, at: pd.Timestamp, lowest: float | None = None, flatten_after=None) -> None:
        """Check the guardrails; a breach is stored, notified, flattens every position (at each symbol's first
        open after ``flatten_after``, default ``at``) and drops the holds."""
        breach = self.guardrails.check(at, self.broker.equity, lowest, self.broker.balance)
        if breach is None:
            return
        self.store.event(
            "guardrail", breach.at, {k: str(v) if isinstance(v, pd.Timestamp) else v for k, v in asdict(breach).items()}
        )
        self.notifier.notify(
            "guardrail",
            f"{breach.kind}: {breach.detail}; flattening, halted ({breach.halt})",
            level="warning",
            at=str(breach.at),
        )
        self.broker.flatten(at if flatten_after is None else flatten_after, breach.kind)
        self.hold_until.clear()

    def _signal(self, symbol: str, at: pd.Timestamp, histories, candle_at: pd.Timestamp) -> None:
        stored = getattr(self.engine, "on_stored_candle", None)  # probabilities computed ahead: no history read
        signal = stored(symbol, candle_at) if stored is not None else None
        if signal is None:
            signal = self.engine.on_candle(symbol, histories[symbol])
        self.store.signal(_signal_row(signal))
        if self.drift is not None and signal.status != "no_models":
            self._on_drift(self.drift.on_signal(signal.side != 0), at)
        trading = (
            self.paper and (self.stopping is None or not self.flatten_on_stop) and self.guardrails.allows_trading(at)
        )
        if signal.status == "emitted":
            self.emitted += 1
            # high-tier signals reach the log at INFO; the others at DEBUG (every signal is in the store)
            self.notifier.notify(
                "signal",
                f"{symbol} {'long' if signal.side > 0 else 'short'} p={signal.confidence:.3f} tier={signal.tier}",
                level="info" if signal.tier == "high" else "debug",
                at=str(at),
                tier=signal.tier,
            )
            if trading:
                size = self.guardrails.clamp_fraction(self.fraction, at, self.broker.equity)
                gross = self.broker.gross_exposure_after(symbol, signal.side, size)
                # an order that adds no exposure (a renewal, an equal reversal) is never refused
                if gross <= self.broker.gross_exposure_after() or self.guardrails.admits_exposure(
                    gross, at, self.broker.equity
                ):
                    self.broker.target(symbol, signal.side, size, at, f"signal {signal.tier}")
                    self.hold_until[symbol] = at + signal.horizon * self.step
                    return
                self.store.event(
                    "order_refused",
                    at,
                    {
                        "symbol": symbol,
                        "side": signal.side,
                        "fraction": size,
                        "gross_exposure": gross,
                        "max_gross_exposure": self.guardrails.max_gross_exposure,
                    },
                )
        if self.paper and symbol in self.hold_until and at >= self.hold_until[symbol]:
            self.broker.target(symbol, 0, 0.0, at, "horizon reached")
            del self.hold_until[symbol]

    def _write_trades(self) -> None:
        trades = self.broker.closed_trades
        for trade in trades[self._trades_written :]:
            self.store.trade(trade)
            self.notifier.notify(
                "trade", f"{trade.symbol} closed {trade.reason}: net {trade.net_pnl:+.2f}", at=str(trade.exit_time)
            )
            if self.drift is not None:  # net return on the entry notional, as the backtest measures a trade
                self._on_drift(
                    self.drift.on_trade(trade.net_pnl / (trade.entry_price * trade.quantity)), trade.exit_time
                )
        self._trades_written = len(trades)

    def _on_drift(self, alerts: list[DriftAlert], at: pd.Timestamp) -> None:
        """Store and notify each drift alert; with ``drift.halt``, a stop request (flattened and stopped as the
        kill switch stops, within one candle)."""
        for alert in alerts:
            self.store.event("drift", at, {**asdict(alert), "halt": self.drift.halt})
            self.notifier.notify(
                "drift",
                f"live {alert.describe()}" + ("; halting" if self.drift.halt else ""),
                level="warning",
                at=str(at),
            )
        if alerts and self.drift.halt:
            self.request_stop("drift", f"drift ({', '.join(a.metric for a in alerts)})")

    def _mark(self, at: pd.Timestamp) -> None:
        if self.paper:  # at the session's time: the equity curve never goes back for a late candle
            self.store.equity(self.last_at, self.broker.equity, self.broker.exposure())
            self.curve.append((self.last_at, self.broker.equity))


def _signal_row(signal: Signal) -> dict:
    row = dict(vars(signal))  # asdict's deep copy costs more than the rest of a replayed candle's signal
    row["models"] = dict(signal.models)
    row["timestamp"] = signal.timestamp.isoformat()
    return row


class _Histories(Mapping):
    """Each symbol's last ``history`` candles up to its row at this time step, sliced only when read (a
    candle whose probabilities were computed ahead never needs its history)."""

    def __init__(self, candles: dict[str, pd.DataFrame], history: int):
        self.candles, self.history, self.rows = candles, history, {}
        self._sliced: dict[str, pd.DataFrame] = {}

    def __getitem__(self, symbol: str) -> pd.DataFrame:
        frame = self._sliced.get(symbol)
        if frame is None:
            i = self.rows[symbol]
            frame = self._sliced[symbol] = self.candles[symbol].iloc[max(0, i + 1 - self.history) : i + 1]
        return frame

    def __iter__(self):
        return iter(self.rows)

    def __len__(self) -> int:
        return len(self.rows)


def replay(
    runtime: Runtime,
    candles: dict[str, pd.DataFrame],
    start: pd.Timestamp,
    end: pd.Timestamp | None,
    history: int,
    max_candles: int | None = None,
    seen: dict[str, pd.Timestamp] | None = None,
) -> int:
    """Feed ``candles`` (per symbol, sorted) to ``runtime`` one timestamp at a time from ``start`` to ``end``;
    each symbol's history is its last ``history`` candles. ``seen`` (per symbol, updated here) skips each
    symbol's candles up to the last one already processed: symbols whose candles arrive in different polls
    are each processed once. Returns the number of time steps processed."""
    seen = {} if seen is None else seen
    index = {s: pd.DatetimeIndex(c["timestamp"]) for s, c in candles.items() if len(c)}
    # each candle's prices read once as arrays: a row of a frame per candle costs more than the candle's record
    prices = {
        s: {
            k: candles[s][k].to_numpy(np.float64, na_value=np.nan)
            for k in ("open", "high", "low", "close")
            if k in candles[s].columns
        }
        for s in index
    }

    times = {s: list(ix) for s, ix in index.items()}  # each candle's time, boxed once
    # candle time (ns) -> its row, per symbol (a repeated time: its last row)
    rows = {s: {t: i for i, t in enumerate(ix.as_unit("ns").asi8.tolist())} for s, ix in index.items()}

    def fresh(symbol: str, t: pd.Timestamp) -> bool:
        return symbol not in seen or t > seen[symbol]

    stamps = sorted(
        {t for sym, ts in times.items() for t in ts if t >= start and (end is None or t <= end) and fresh(sym, t)}
    )
    if max_candles is not None:
        stamps = stamps[: int(max_candles)]
    steps = 0
    for at in stamps:
        histories, current = _Histories(candles, history), {}
        for symbol, row in rows.items():
            i = row.get(at.value)
            if i is not None and fresh(symbol, at):
                histories.rows[symbol] = i
                current[symbol] = {"timestamp": times[symbol][i], **{k: float(v[i]) for k, v in prices[symbol].items()}}
                seen[symbol] = at
        steps += 1
        if not runtime.process(at, histories, current):
            break
    return steps


def live(
    runtime: Runtime,
    source: Callable[[], dict[str, pd.DataFrame]],
    history: int,
    poll_seconds: float,
    max_polls: int | None,
    wait: Callable[[float], None],
    max_provider_errors: int = 3,
) -> int:
    """Poll ``source`` for candles; process every candle newer than the last one processed of its symbol (a
    new session's first poll only primes the history; a resumed one goes on from its markers). ``wait``
    sleeps between polls (a poller, not a training loop). A poll that raises is stored as a
    ``provider_error`` event and retried at the next poll (its candles come then); ``max_provider_errors``
    failures in a row stop the session. A stop requested between polls (a signal, the kill switch) polls
    once more at once: a new candle flattens at its open, else positions close at their last close."""
    polls = steps = errors = 0
    looked_again = False
    while max_polls is None or polls < max_polls:
        polls += 1
        try:
            candles = {s: c for s, c in source().items() if len(c)}
            errors = 0
        except Exception as exc:  # any provider failure: a network error now is data at the next poll
            errors += 1
            candles = {}
            at = runtime.last_at or pd.Timestamp.now("UTC")
            runtime.store.event(
                "provider_error",
                at,
                {
                    "error": f"{type(exc).__name__}: {exc}"[:500],
                    "in_a_row": errors,
                    "max_in_a_row": max_provider_errors,
                },
            )
            runtime.notifier.notify(
                "provider_error", f"poll {polls} failed ({errors} in a row): {exc}", level="warning", at=str(at)
            )
            if errors >= max_provider_errors:
                runtime.request_stop(
                    "provider_error",
                    f"provider error ({errors} polls in a row failed): {type(exc).__name__}: {exc}"[:300],
                )
        if not runtime.last_candle:
            if candles:
                runtime.prime({s: pd.Timestamp(c["timestamp"].iloc[-1]) for s, c in candles.items()})
        elif candles:
            seen = dict(runtime.last_candle)
            steps += replay(runtime, candles, min(seen.values()), None, history, seen=seen)
        if runtime.stopped:
            break
        if runtime.stop_request is None and runtime.stopping is None and runtime.kill.is_set():
            runtime.request_stop("kill_switch", runtime.kill.why())
        if runtime.stop_request is not None or runtime.stopping is not None:
            if runtime.stopping is None and not looked_again and errors == 0:
                looked_again = True  # asked after this poll's candles: poll at once for a price to flatten at
                continue
            break
        if max_polls is None or polls < max_polls:
            wait(poll_seconds)
    if not runtime.stopped and (runtime.stop_request is not None or runtime.stopping is not None):
        runtime.stop_at_last_close()
    return steps


def equity_frame(runtime: Runtime) -> pd.DataFrame:
    """The paper equity curve with its drawdown (empty in dry mode)."""
    frame = pd.DataFrame(runtime.curve, columns=["timestamp", "equity"])
    if frame.empty:
        return frame.assign(drawdown=[])
    values = frame["equity"].to_numpy(np.float64)
    frame["drawdown"] = 1.0 - values / np.maximum.accumulate(values)
    return frame
