"""Times as the remote providers take them: settings (text, datetime or Timestamp; naive taken as UTC) to
UTC Timestamps, milliseconds for exchange calls, and the clock that says which candle is still open.
"""

from __future__ import annotations

import time
from typing import Any

import pandas as pd

from core.errors import UserError

_EPOCH = pd.Timestamp(0, tz="UTC")
_MS = pd.Timedelta(1, "ms")


def _utc(value: Any, where: str) -> pd.Timestamp:
    """A time given as text, datetime or Timestamp -> tz-aware UTC Timestamp (naive values are taken as UTC)."""
    try:
        ts = pd.Timestamp(value)
    except (TypeError, ValueError) as exc:
        raise UserError(f"cannot read time {value!r}: {exc}", where) from exc
    if ts is pd.NaT:
        raise UserError(f"time {value!r} is empty", where)
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def _opt_utc(value: Any, where: str) -> pd.Timestamp | None:
    return (
        None
        if value is None or (isinstance(value, str) and value.strip() in ("", "null", "None"))
        else _utc(value, where)
    )


def _to_ms(value: pd.Timestamp | pd.Timedelta) -> int:
    """Milliseconds since the epoch (a Timestamp) or in a duration (a Timedelta), whatever the resolution."""
    return int((value - _EPOCH if isinstance(value, pd.Timestamp) else value) // _MS)


def _now(exchange: Any = None) -> pd.Timestamp:
    """The exchange's clock when it has one (ccxt: ``milliseconds()``), else this machine's."""
    ms = getattr(exchange, "milliseconds", None)
    return (
        pd.Timestamp(int(ms()), unit="ms", tz="UTC") if callable(ms) else pd.Timestamp(time.time(), unit="s", tz="UTC")
    )
