"""Timeframe strings ("1m", "5m", "1h", "4h", "1d") <-> pandas Timedeltas."""

import re

import pandas as pd

from core.errors import UserError

_UNITS = {"s": "s", "m": "min", "h": "h", "d": "D", "w": "W"}


def to_timedelta(timeframe: str, where: str = "data.timeframe") -> pd.Timedelta:
    m = re.fullmatch(r"(\d+)([smhdw])", str(timeframe).strip())
    if not m or int(m.group(1)) <= 0:
        raise UserError(f"timeframe {timeframe!r} is not like 1m, 5m, 1h, 4h, 1d", where)
    return pd.Timedelta(int(m.group(1)), _UNITS[m.group(2)])


def to_string(delta: pd.Timedelta) -> str:
    seconds = int(delta.total_seconds())
    for unit, size in (("w", 604800), ("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    raise ValueError(f"unsupported timeframe {delta}")
