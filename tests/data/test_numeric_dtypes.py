"""The data path's hot arrays stay numeric: timestamps are compared as int64 ticks, never as one Python
Timestamp per row (pandas turns ufuncs over tz-aware columns into object arrays, ~10x slower)."""

import numpy as np
import pandas as pd
import pytest

from data.labels import positions_at, values_at
from data.splits import make_folds
from data.synthetic import generate
from data.table import build_table, feature_frames, join_labels, later_of
from tests.conftest import make_cfg

STEP = pd.Timedelta("1min")
TARGETS = ["direction", "triple_barrier", "quantile"]
SPLITS = ["holdout", "walk_forward", "purged_kfold"]


@pytest.fixture
def no_timestamp_objects(monkeypatch):
    """Fails the test if anything iterates a datetime column into Python Timestamps (the object-dtype path)."""

    def refuse(self):
        raise AssertionError("a datetime column was turned into Python Timestamp objects")

    monkeypatch.setattr(pd.arrays.DatetimeArray, "__iter__", refuse)


def _candles():
    g = generate(["BTC", "ETH"], 3000, seed=1)
    eth = g.candles["ETH"]
    return {"BTC": g.candles["BTC"], "ETH": eth.drop(eth.index[1000:1040]).reset_index(drop=True)}  # a gap


@pytest.mark.parametrize("target", TARGETS)
def test_table_labels_and_purge_times_are_numeric(target, no_timestamp_objects):
    cfg = make_cfg("features=full", f"target={target}", "features.regime_lookback=200")
    table = build_table(_candles(), cfg.features, cfg.target, STEP)
    frame = table.frame
    assert frame["label"].dtype == np.float64 and frame["persistence"].dtype == np.float64
    for col in ("timestamp", "t1", "purge_end"):
        assert frame[col].dtype.kind == "M", col  # datetime64, never object
        assert frame[col].array.asi8.dtype == np.int64
    assert (frame["purge_end"] >= frame["t1"]).all()
    assert not any(dtype == np.dtype(object) for dtype in frame.dtypes)
    assert table.matrix().dtype == np.float64 and table.matrix(np.float32).dtype == np.float32
    assert table.run_position().dtype.kind == "i" and table.segments().max() >= 2  # 2 symbols + the gap
    eligible = frame["label"].notna().to_numpy()
    for split in SPLITS:
        folds = make_folds(make_cfg(f"split={split}").split, frame["timestamp"], frame["purge_end"], eligible, STEP)
        for fold in folds:
            assert all(rows.dtype.kind == "i" for rows in fold.rows.values())


def test_later_of_works_on_ticks_and_keeps_unit_and_zone(no_timestamp_objects):
    t1 = pd.Series(pd.date_range("2024-01-01", periods=4, freq="min", tz="UTC").as_unit("us"))
    t1.iloc[1] = pd.NaT
    horizon_end = pd.date_range("2024-01-01 00:01:30", periods=4, freq="30s", tz="UTC").as_unit("ns")
    later = later_of(t1, horizon_end)
    assert str(later.dtype) == "datetime64[ns, UTC]"
    assert list(later.asi8) == [horizon_end.asi8[0], horizon_end.asi8[1], horizon_end.asi8[2], t1.iloc[3].value]


def test_lookups_by_time_return_integer_positions(no_timestamp_objects):
    index = pd.date_range("2024-01-01", periods=6, freq="min", tz="UTC").delete(3)
    times = index + STEP
    pos = positions_at(index, times)
    assert pos.dtype.kind == "i" and list(pos) == [1, 2, -1, 4, -1]
    assert np.isnan(values_at(np.arange(5.0), index, times)[[2, 4]]).all()


def test_table_shares_feature_columns_yet_edits_stay_its_own():
    cfg = make_cfg("features=full")
    candles = {"BTC": generate(["BTC"], 3000, seed=2).candles["BTC"]}
    frames = feature_frames(candles, cfg.features)
    before = frames["BTC"]["ret_1"].to_numpy().copy()
    frame = join_labels(candles, frames, cfg.features, cfg.target, STEP).frame
    frame.loc[5, "ret_1"] = 1.0  # copy-on-write: the table's column, not the frames'
    frame.loc[frame.index[:3], "label"] = np.nan
    assert frame.loc[5, "ret_1"] == 1.0
    assert np.array_equal(frames["BTC"]["ret_1"].to_numpy(), before, equal_nan=True)
