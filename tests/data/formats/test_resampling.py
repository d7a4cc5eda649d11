"""resample aggregates candles into whole multiples of their step, checked by hand and against real files."""

import pandas as pd
import pytest

from core.errors import UserError
from data.formats import read_candles, resample
from tests.data.formats.helpers import COLUMNS, RAW, canonical, frame


# Minutes 0..18 with 7, 10-14 (a whole 5m bucket), 15 (a bucket's first minute) and 19 (its last) missing.
# Candle i: open 100+i, high 101+i, low 99+i, close 100.5+i, volume i+1; spikes: high 150 at 8, low 50 at 16.
def _handmade() -> pd.DataFrame:
    rows = []
    for i in [0, 1, 2, 3, 4, 5, 6, 8, 9, 16, 17, 18]:
        rows.append((i, 100 + i, 150 if i == 8 else 101 + i, 50 if i == 16 else 99 + i, 100.5 + i, i + 1))
    return frame(rows)


@pytest.mark.parametrize(
    "step,expected",
    [
        ("5min", [(0, 100, 105, 99, 104.5, 15), (5, 105, 150, 104, 109.5, 32), (15, 116, 119, 50, 118.5, 54)]),
        ("15min", [(0, 100, 150, 99, 109.5, 47), (15, 116, 119, 50, 118.5, 54)]),
        ("1h", [(0, 100, 150, 50, 118.5, 101)]),
        ("1min", None),
    ],
)
def test_resample_handmade(step, expected):
    src = _handmade()
    got = resample(src, pd.Timedelta(step))
    pd.testing.assert_frame_equal(got, src if expected is None else frame(expected))


def test_resample_refuses_bad_steps():
    src = _handmade()
    for bad in ["90s", "30s"]:
        with pytest.raises(UserError, match="not a whole multiple"):
            resample(src, pd.Timedelta(bad))
    offset = frame([(2, 1, 2, 1, 1.5, 1), (7, 1, 2, 1, 1.5, 1), (12, 1, 2, 1, 1.5, 1)])  # 5m candles at :02
    with pytest.raises(UserError, match="straddles"):
        resample(offset, pd.Timedelta("15min"))


def test_resample_real_bitstamp_day(real):
    src = read_candles(RAW / "bitstamp_btcusd_min_2020_01_01.csv")
    assert len(src) == 1440
    got = resample(src, pd.Timedelta("5min"))
    assert len(got) == 288
    rows = []
    for k in range(288):  # straightforward per-bucket computation
        b = src.iloc[5 * k : 5 * k + 5]
        assert (b["timestamp"].dt.floor("5min") == b["timestamp"].iloc[0]).all()
        rows.append(
            (
                b["timestamp"].iloc[0],
                b["open"].iloc[0],
                b["high"].max(),
                b["low"].min(),
                b["close"].iloc[-1],
                b["volume"].sum(),
            )
        )
    want = pd.DataFrame(rows, columns=COLUMNS)
    pd.testing.assert_frame_equal(got, want, check_exact=False, rtol=1e-12)  # volume sums: order of addition
    assert (got[["open", "high", "low", "close"]].to_numpy() == want[["open", "high", "low", "close"]].to_numpy()).all()


def test_resample_real_gappy_days_match_pandas(real):
    src = canonical("BTC-USD_1m_coinbase_9days.parquet")
    got = resample(src, pd.Timedelta("1h"))
    ref = (
        src.set_index("timestamp")
        .resample("1h")
        .agg({"open": "first", "high": "max", "low": "min", "close": "last", "volume": "sum"})
        .dropna(subset=["open"])
        .reset_index()
    )
    ref["timestamp"] = ref["timestamp"].astype("datetime64[us, UTC]")
    pd.testing.assert_frame_equal(got, ref, check_exact=False, rtol=1e-12)
    assert got["timestamp"].dt.normalize().nunique() == 9  # non-consecutive days: empty hours are dropped
