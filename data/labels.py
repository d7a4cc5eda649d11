"""Labels with their end time ``t1`` (the last candle the label looks at), aligned by timestamp."""
import numpy as np
import pandas as pd


def direction_label(candles: pd.DataFrame, horizon: int, step: pd.Timedelta) -> pd.DataFrame:
    """1 if close[t + horizon*step] > close[t] else 0, looked up by timestamp (a gap leaves NaN).

    Returns a frame indexed by timestamp with columns ``label`` (float, NaN where the future candle is
    missing) and ``t1`` (the timestamp of that future candle).
    """
    close = pd.Series(candles["close"].to_numpy(), index=pd.DatetimeIndex(candles["timestamp"]))
    t1 = close.index + horizon * step
    future = close.reindex(t1).to_numpy()
    now = close.to_numpy()
    label = np.where(np.isnan(future), np.nan, (future > now).astype(np.float64))
    return pd.DataFrame({"label": label, "t1": t1}, index=close.index.rename("timestamp"))


def past_direction(candles: pd.DataFrame, horizon: int, step: pd.Timedelta) -> pd.Series:
    """The direction of the move that ended at t (close[t] > close[t - horizon*step]): the persistence call."""
    close = pd.Series(candles["close"].to_numpy(), index=pd.DatetimeIndex(candles["timestamp"]))
    past = close.reindex(close.index - horizon * step).to_numpy()
    now = close.to_numpy()
    return pd.Series(np.where(np.isnan(past), np.nan, (now > past).astype(np.float64)),
                     index=close.index.rename("timestamp"), name="persistence")
