"""SIGINT and SIGTERM during a session: the first asks the runtime to stop as the kill switch does (stop
event, positions flattened, report, metrics and summary written); a second stops at once by raising
``StoppedAtOnce`` wherever the loop is (the candle in flight rolls back: the database holds every candle
before it, and a resumed session redoes it). ``wait`` sleeps between live polls and wakes on a signal."""

from __future__ import annotations

import logging
import os
import select
import signal
import threading

log = logging.getLogger("candlelab.runtime")

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StoppedAtOnce(BaseException):
    """A second stop signal: the session ended without its clean ending (resumable)."""

    def __init__(self, name: str):
        super().__init__(name)
        self.name = name


class SignalStops:
    """While entered (main thread only), SIGINT/SIGTERM call ``runtime.request_stop`` the first time and
    raise ``StoppedAtOnce`` the second."""

    def __init__(self, runtime):
        self.runtime = runtime
        self.received: list[str] = []
        self._previous = {}
        self._read, self._write = os.pipe()
        os.set_blocking(self._write, False)

    def __enter__(self) -> SignalStops:
        if threading.current_thread() is threading.main_thread():
            for sig in SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        self._previous.clear()
        for fd in (self._read, self._write):
            os.close(fd)

    def _handle(self, signum, frame) -> None:
        name = signal.Signals(signum).name
        self.received.append(name)
        try:
            os.write(self._write, b"x")  # wakes a poll wait
        except OSError:
            pass
        if len(self.received) == 1:
            log.warning(
                "runtime: %s received: stopping (flattening, writing the report); a second signal stops at once", name
            )
            self.runtime.request_stop("signal", name)
            return
        for sig in self._previous:  # a third signal gets the default action
            signal.signal(sig, signal.SIG_DFL)
        raise StoppedAtOnce(name)

    def wait(self, seconds: float) -> None:
        """Sleep ``seconds`` between polls, or less when a signal arrives."""
        ready, _, _ = select.select([self._read], [], [], max(0.0, float(seconds)))
        if ready:
            os.read(self._read, 64)
