"""Data quality beyond the schema: a gap report and an outlier rule for bad prints.

An outlier is a *spike that reverts*: the log return into the bar and the one out of it are both more than
``threshold`` robust sigmas (1.4826 x the median absolute 1-bar return of the series) and of opposite
signs. A crash that stays down is not an outlier; a single corrupt close (e.g. BTC-USD 4h on
2018-04-03 20:00, close 5200 between bars near 7400) is.
"""

import logging

import numpy as np
import pandas as pd

from core.errors import UserError

log = logging.getLogger(__name__)


def gap_report(candles: pd.DataFrame, step: pd.Timedelta) -> dict:
    ts = candles["timestamp"]
    diffs = ts.diff().iloc[1:]
    gaps = diffs[diffs > step]
    missing = int(((gaps / step) - 1).round().sum()) if len(gaps) else 0
    report = {
        "gaps": int(len(gaps)),
        "missing_candles": missing,
        "largest_gap": str(gaps.max()) if len(gaps) else None,
        "first_gap_at": ts.iloc[int(np.flatnonzero((diffs > step).to_numpy())[0]) + 1].isoformat()
        if len(gaps)
        else None,
    }
    return report


def spike_outliers(candles: pd.DataFrame, threshold: float, min_move: float = 0.0) -> np.ndarray:
    """Positions of bars whose close spikes away and straight back (see module doc) by more than
    ``threshold`` robust sigmas *and* ``min_move`` in log terms (so bid-ask bounces in thin 1m data are not
    bad prints)."""
    r = np.diff(np.log(candles["close"].to_numpy(np.float64)))
    if len(r) < 3:
        return np.array([], dtype=np.int64)
    sigma = 1.4826 * np.median(np.abs(r))
    if sigma <= 0:
        return np.array([], dtype=np.int64)
    into, out = r[:-1], r[1:]  # bar i+1: return into it and out of it
    size = np.minimum(np.abs(into), np.abs(out))
    spike = (size > threshold * sigma) & (size > min_move) & (np.sign(into) != np.sign(out))
    return np.flatnonzero(spike) + 1


def apply_outlier_rule(
    candles: pd.DataFrame, rule: str, threshold: float, min_move: float, source: str
) -> tuple[pd.DataFrame, list]:
    """warn: keep and report; drop: remove the bars (they become gaps); error: refuse the data."""
    if rule not in ("warn", "drop", "error", "off"):
        raise UserError(f"data.outliers must be warn, drop, error or off, got {rule!r}", "data.outliers")
    if rule == "off":
        return candles, []
    pos = spike_outliers(candles, threshold, min_move)
    found = [
        {"row": int(i), "timestamp": candles["timestamp"].iloc[i].isoformat(), "close": float(candles["close"].iloc[i])}
        for i in pos
    ]
    if not found:
        return candles, []
    first = found[0]
    if rule == "error":
        raise UserError(
            f"{len(found)} outlier bar(s) (close spikes > {threshold} robust sigmas and reverts); "
            f"first at row {first['row']} ({first['timestamp']}, close {first['close']})",
            source,
        )
    if rule == "warn":
        log.warning(
            "%s: %d outlier bar(s), first at %s (close %s); kept (data.outliers=warn)",
            source,
            len(found),
            first["timestamp"],
            first["close"],
        )
        return candles, found
    log.warning(
        "%s: dropping %d outlier bar(s), first at %s (data.outliers=drop)", source, len(found), first["timestamp"]
    )
    return candles.drop(index=candles.index[pos]).reset_index(drop=True), found
