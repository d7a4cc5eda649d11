"""Cooperative cancellation: an in-memory flag or a stop file, polled by the fit loops (never waited on)."""
import threading
from pathlib import Path


class Cancelled(Exception):
    """Raised by pipeline phases outside a fit loop when the token is set."""


class CancellationToken:
    def __init__(self, stop_file: str | Path | None = None):
        self._event = threading.Event()
        self.stop_file = Path(stop_file) if stop_file else None
        self.reason: str | None = None

    def cancel(self, reason: str = "cancelled by caller") -> None:
        self.reason = self.reason or reason
        self._event.set()

    @property
    def cancelled(self) -> bool:
        if not self._event.is_set() and self.stop_file is not None and self.stop_file.exists():
            self.cancel(f"stop file {self.stop_file}")
        return self._event.is_set()

    def raise_if_cancelled(self) -> None:
        if self.cancelled:
            raise Cancelled(self.reason)
