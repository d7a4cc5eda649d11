"""Cooperative cancellation with three sources: the caller (in-memory flag), SIGINT/SIGTERM, and a stop
file. Fit loops poll ``cancelled`` every few batches or every boosting round; nothing waits on it."""

import signal
import threading
from contextlib import contextmanager
from pathlib import Path


class Cancelled(Exception):
    """Raised to leave a phase or a fit loop once the token is set."""


class ImmediateStop(BaseException):
    """A second signal: stop now, without finishing the current batch or round."""


class CancellationToken:
    def __init__(self, stop_file: str | Path | None = None):
        self._event = threading.Event()
        self.stop_file = Path(stop_file) if stop_file else None
        self.reason: str | None = None
        self.signals_received = 0

    def cancel(self, reason: str = "cancelled by caller") -> None:
        if not self._event.is_set():
            self.reason = reason
        self._event.set()

    def is_set(self) -> bool:
        """The in-memory flag only (caller or signal): an atomic read, cheap enough for every batch."""
        return self._event.is_set()

    @property
    def cancelled(self) -> bool:
        """The flag, or the stop file's appearance (a filesystem call: poll it every few batches)."""
        if not self._event.is_set() and self.stop_file is not None and self.stop_file.exists():
            self.cancel(f"stop file {self.stop_file}")
        return self._event.is_set()

    def raise_if_cancelled(self) -> None:
        if self.cancelled:
            raise Cancelled(self.reason)

    def _on_signal(self, signum, frame) -> None:
        self.signals_received += 1
        name = signal.Signals(signum).name
        if self.signals_received >= 2:
            self.reason = f"second {name}: immediate stop"
            raise ImmediateStop(self.reason)
        self.cancel(f"{name}: graceful stop (send again to stop at once)")

    @contextmanager
    def handle_signals(self, signums=(signal.SIGINT, signal.SIGTERM)):
        """First SIGINT/SIGTERM cancels gracefully, a second stops at once; handlers restored on exit."""
        if threading.current_thread() is not threading.main_thread():
            yield self  # signals are delivered to the main thread only
            return
        previous = {s: signal.getsignal(s) for s in signums}
        for s in signums:
            signal.signal(s, self._on_signal)
        try:
            yield self
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
