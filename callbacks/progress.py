"""One progress event type, emitted at phase changes, every N batches/boosting rounds and every epoch.

Throttling is by skipping (a modulo test in the fit loop), never by waiting.
"""

import logging
import time
from dataclasses import asdict, dataclass, field
from typing import Callable

log = logging.getLogger("candlelab.progress")

FIT_PHASES = ("fit", "control")  # phases that run a model's fit loop (ETA is measured from their start)
PHASES = ("load", "features", "labels", "split", "fit", "evaluate", "control", "save", "register", "done", "cancelled")


@dataclass
class ProgressEvent:
    phase: str  # one of PHASES
    kind: str = "phase"  # phase (a phase starts), step (throttled batch/round), epoch (an epoch ended)
    epoch: int | None = None  # 0-based
    epochs: int | None = None
    iteration: int | None = None  # global batch (nets) or boosting round (trees), 1-based
    iterations: int | None = None
    batch: int | None = None  # batch within the epoch (nets), 1-based
    batches: int | None = None
    metrics: dict = field(default_factory=dict)
    elapsed: float = 0.0
    eta: float | None = None

    def as_dict(self) -> dict:
        return asdict(self)

    def line(self) -> str:
        parts = [f"[{self.phase}]"]
        if self.epoch is not None:
            parts.append(f"epoch {self.epoch + 1}/{self.epochs}")
        if self.batch is not None:
            parts.append(f"batch {self.batch}/{self.batches}")
        elif self.iteration is not None:
            parts.append(f"iteration {self.iteration}" + (f"/{self.iterations}" if self.iterations else ""))
        parts += [f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in self.metrics.items()]
        parts.append(f"{self.elapsed:.1f}s")
        if self.eta is not None:
            parts.append(f"eta {self.eta:.0f}s")
        return " ".join(parts)


Sink = Callable[[ProgressEvent], None]


def log_sink(event: ProgressEvent) -> None:
    """Phase starts and epoch ends at INFO; throttled steps at DEBUG (they also reach the JSONL file)."""
    log.log(logging.DEBUG if event.kind == "step" else logging.INFO, event.line())


class ProgressReporter:
    """Fans events out to sinks and keeps per-phase wall time. A failing sink never stops training."""

    def __init__(self, sinks: list[Sink] | None = None):
        self.sinks = list(sinks) if sinks is not None else [log_sink]
        self.started = time.monotonic()
        self.phase_seconds: dict[str, float] = {}
        self._phase: tuple[str, float] | None = None
        self._fit_started: float | None = None

    @property
    def phase(self) -> str | None:
        """The phase the run is in now (the last one emitted); None before the first."""
        return self._phase[0] if self._phase is not None else None

    def emit(self, phase: str, kind: str = "phase", **fields) -> None:
        now = time.monotonic()
        if self._phase is None or self._phase[0] != phase:
            if self._phase is not None:
                name, since = self._phase
                self.phase_seconds[name] = round(self.phase_seconds.get(name, 0.0) + now - since, 3)
            self._phase = (phase, now)
            if phase in FIT_PHASES:
                self._fit_started = now
        event = ProgressEvent(phase=phase, kind=kind, elapsed=now - self.started, **fields)
        for sink in self.sinks:
            try:
                sink(event)
            except Exception:  # a broken dashboard must not kill a training run
                log.exception("progress sink %r failed", sink)

    def eta(self, done: int, total: int | None) -> float | None:
        """Seconds left in the fit phase, extrapolated from its rate so far."""
        if not total or done <= 0 or self._fit_started is None:
            return None
        return (time.monotonic() - self._fit_started) * (total - done) / done

    def close(self) -> None:
        for sink in self.sinks:
            close = getattr(sink, "close", None)
            if close is not None:
                close()


class PhaseAlias:
    """A view of a reporter that files one phase's events under another name: the shuffled-label control's
    fit loop reports as ``control``, not as a second ``fit``."""

    def __init__(self, reporter: ProgressReporter, renames: dict[str, str]):
        self.reporter = reporter
        self.renames = dict(renames)

    def emit(self, phase: str, kind: str = "phase", **fields) -> None:
        self.reporter.emit(self.renames.get(phase, phase), kind, **fields)

    def __getattr__(self, name):
        return getattr(self.reporter, name)
