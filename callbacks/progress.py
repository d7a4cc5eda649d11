"""One progress event type, emitted at phase changes and every N batches/iterations (by skipping, not waiting)."""
import logging
import time
from dataclasses import asdict, dataclass, field
from typing import Callable

log = logging.getLogger("candlelab.progress")


@dataclass
class ProgressEvent:
    phase: str                      # load, features, split, fit, evaluate, save, done
    epoch: int | None = None
    epochs: int | None = None
    iteration: int | None = None    # global batch (nets) or boosting round (trees)
    iterations: int | None = None
    metrics: dict = field(default_factory=dict)
    elapsed: float = 0.0
    eta: float | None = None

    def as_dict(self) -> dict:
        return asdict(self)

    def line(self) -> str:
        parts = [f"[{self.phase}]"]
        if self.epoch is not None:
            parts.append(f"epoch {self.epoch + 1}/{self.epochs}")
        if self.iteration is not None:
            parts.append(f"step {self.iteration}" + (f"/{self.iterations}" if self.iterations else ""))
        parts += [f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in self.metrics.items()]
        parts.append(f"{self.elapsed:.1f}s")
        if self.eta is not None:
            parts.append(f"eta {self.eta:.0f}s")
        return " ".join(parts)


def log_sink(event: ProgressEvent) -> None:
    log.info(event.line())


class ProgressReporter:
    def __init__(self, sinks: list[Callable[[ProgressEvent], None]] | None = None):
        self.sinks = list(sinks) if sinks is not None else [log_sink]
        self.started = time.monotonic()
        self.phase_seconds: dict[str, float] = {}
        self._phase: tuple[str, float] | None = None

    def emit(self, phase: str, **fields) -> None:
        now = time.monotonic()
        if self._phase is None or self._phase[0] != phase:
            if self._phase is not None:
                name, since = self._phase
                self.phase_seconds[name] = round(self.phase_seconds.get(name, 0.0) + now - since, 3)
            self._phase = (phase, now)
        event = ProgressEvent(phase=phase, elapsed=now - self.started, **fields)
        for sink in self.sinks:
            sink(event)

    def eta(self, done: int, total: int | None) -> float | None:
        if not total or done <= 0:
            return None
        return (time.monotonic() - self.started) * (total - done) / done
