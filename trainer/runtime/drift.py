"""Live-versus-backtest drift: the session's win rate, mean net trade return and signal rate over a rolling
window, compared with the figures the served models' test period was traded to (the registry's trading
metrics, recorded when each model registered). A figure outside its band raises one alert (stored as a
``drift`` event and notified) until it comes back inside; ``halt`` asks the runtime to flatten and stop.

The reference of several served models is their weight-averaged figure (models without one left out).
Signal rate = candles (per symbol) on which the policy called a side, over candles scored; the test
period's = (trades + signals ignored while in position) / (bars x symbols).
"""

import logging
import math
from collections import deque
from dataclasses import dataclass, field

from core.errors import UserError

log = logging.getLogger("candlelab.runtime")
METRICS = ("win_rate", "mean_return", "signal_rate")
_ZERO_ONE = bytes.maketrans(b"\x00\x01", b"01")  # a window of bools as a string of 0/1, at C speed


@dataclass
class DriftAlert:
    metric: str
    live: float
    reference: float
    band: float
    window: int  # trades (win rate, mean return) or candles (signal rate) the live figure covers

    def describe(self) -> str:
        scale, unit = {"win_rate": (100.0, "%"), "mean_return": (1e4, " bps"), "signal_rate": (100.0, "%")}[self.metric]
        return (
            f"{self.metric} {self.live * scale:.2f}{unit} vs {self.reference * scale:.2f}{unit} in the test period "
            f"(band +/-{self.band * scale:.2f}{unit.replace('%', ' pp')}, over the last {self.window} "
            f"{'candles' if self.metric == 'signal_rate' else 'trades'})"
        )


def reference_figures(models) -> dict[str, float]:
    """Each figure's weight-averaged test-period value over the served models that record it."""
    figures: dict[str, float] = {}
    for metric in METRICS:
        pairs = []
        for m in models:
            value = _test_figure(getattr(m, "trading", None) or {}, metric)
            if value is not None:
                pairs.append((m.weight, value))
        total = sum(w for w, _ in pairs)
        if pairs and total > 0:
            figures[metric] = sum(w * v for w, v in pairs) / total
    return figures


def _test_figure(trading: dict, metric: str) -> float | None:
    if metric == "win_rate":
        value = trading.get("win_rate")
    elif metric == "mean_return":
        value = trading.get("avg_trade_return")
    else:
        cells = (trading.get("n_bars") or 0) * (trading.get("n_symbols") or 1)
        value = (
            ((trading.get("n_trades") or 0) + (trading.get("ignored_while_in_position") or 0)) / cells
            if cells
            else None
        )
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


@dataclass
class DriftMonitor:
    """Rolling live figures against ``reference``; ``bands`` maps a metric to its +/- absolute band (None =
    not checked). Win rate and mean return need ``min_trades`` trades in the window before they are judged."""

    reference: dict[str, float]
    bands: dict[str, float | None]
    window_trades: int = 50
    window_candles: int = 1440
    min_trades: int = 20
    halt: bool = False
    returns: deque = field(default_factory=deque)
    sides: deque = field(default_factory=deque)
    alerting: set = field(default_factory=set)

    def __post_init__(self):
        for name in ("window_trades", "window_candles", "min_trades"):
            if int(getattr(self, name)) < 1:
                raise UserError(f"must be >= 1, got {getattr(self, name)}", f"runtime.drift.{name}")
        for metric, band in self.bands.items():
            if metric not in METRICS:
                raise UserError(f"unknown drift figure {metric!r}; one of {', '.join(METRICS)}", "runtime.drift")
            if band is not None and not (isinstance(band, (int, float)) and band >= 0):
                raise UserError(f"a band is a number >= 0 or null, got {band!r}", f"runtime.drift.{metric}_band")
        self.returns = deque(maxlen=int(self.window_trades))
        self.sides = deque(maxlen=int(self.window_candles))
        self._called = 0  # sides called in the signal window
        self._side_text = ""  # the signal window as 0/1, kept alongside it: a session checkpoints it per candle
        self._trade_figures: tuple | None = None  # (win rate, mean return), recomputed when a trade comes
        unchecked = [m for m, b in self.bands.items() if b is not None and m not in self.reference]
        if unchecked:
            log.warning(
                "drift: no test-period %s recorded for the served model(s): not monitored", ", ".join(unchecked)
            )

    def on_trade(self, net_return: float) -> list[DriftAlert]:
        self.returns.append(float(net_return))
        self._trade_figures = None
        return self._check()

    def on_signal(self, called_side: bool) -> list[DriftAlert]:
        full = len(self.sides) == self.sides.maxlen
        if full:  # a running count: the window may hold a day of 1m candles
            self._called -= self.sides[0]
        self.sides.append(bool(called_side))
        self._called += bool(called_side)
        self._side_text = (self._side_text[1:] if full else self._side_text) + ("1" if called_side else "0")
        return self._check()

    def state(self) -> dict:
        """The rolling windows and the alerts in force, compact (the signal window as a string of 0/1): a
        session checkpoints it after every candle."""
        if len(self._side_text) != len(self.sides):  # the window was changed other than through on_signal
            self._side_text = bytes(self.sides).translate(_ZERO_ONE).decode("ascii")
        return {"returns": list(self.returns), "sides": self._side_text, "alerting": sorted(self.alerting)}

    def restore(self, state: dict) -> None:
        """Put back what ``state`` returned."""
        self.returns.clear()
        self.returns.extend(float(r) for r in state["returns"])
        self.sides.clear()
        self.sides.extend(x in ("1", 1, True) for x in state["sides"])
        self._called = sum(self.sides)
        self._side_text = bytes(self.sides).translate(_ZERO_ONE).decode("ascii")
        self._trade_figures = None
        self.alerting = set(state["alerting"])

    def live(self) -> dict[str, float | None]:
        n = len(self.returns)
        enough = n >= int(self.min_trades)
        if self._trade_figures is None or self._trade_figures[0] != n:  # they change only when a trade comes
            self._trade_figures = (
                n,
                sum(r > 0 for r in self.returns) / n if enough else None,
                sum(self.returns) / n if enough else None,
            )
        _, win_rate, mean_return = self._trade_figures
        return {
            "win_rate": win_rate,
            "mean_return": mean_return,
            "signal_rate": self._called / len(self.sides) if len(self.sides) >= self.sides.maxlen else None,
        }

    def _check(self) -> list[DriftAlert]:
        alerts = []
        for metric, value in self.live().items():
            band, reference = self.bands.get(metric), self.reference.get(metric)
            if band is None or reference is None or value is None:
                continue
            if abs(value - reference) > band + 1e-12:
                if metric not in self.alerting:  # once per excursion; re-armed when back inside the band
                    self.alerting.add(metric)
                    window = len(self.sides) if metric == "signal_rate" else len(self.returns)
                    alerts.append(DriftAlert(metric, value, reference, float(band), window))
            else:
                self.alerting.discard(metric)
        return alerts


def drift_monitor(cfg, models) -> DriftMonitor | None:
    """The monitor ``runtime.drift`` describes for ``models`` (None when disabled)."""
    if cfg is None or not cfg.get("enabled", True):
        return None
    bands = {metric: cfg.get(f"{metric}_band") for metric in METRICS}
    return DriftMonitor(
        reference_figures(models),
        bands,
        int(cfg.get("window_trades", 50)),
        int(cfg.get("window_candles", 1440)),
        int(cfg.get("min_trades", 20)),
        bool(cfg.get("halt", False)),
    )
