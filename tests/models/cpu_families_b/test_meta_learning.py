"""meta_learning's secondary model never sees test rows; each symbol block is split in time order."""

import dataclasses

import numpy as np

from tests.models.cpu_families_b.helpers import FAST, build, context, planted


def test_meta_learning_secondary_never_sees_test_rows(tmp_path):
    train, val, test = planted()
    model = build("meta_learning", *FAST["meta_learning"])
    report = model.fit(train, val, context(tmp_path))
    primary, secondary = model.fit_rows["primary"], model.fit_rows["secondary"]
    assert set(primary) | set(secondary) <= set(train.rows)
    assert not set(secondary) & (set(test.rows) | set(val.rows) | set(primary))
    assert primary.max() + 5 < secondary.min()  # time-ordered with the purge gap
    assert report.metrics["rows"]["purged"] == 5
    assert 0.0 <= report.metrics["val/coverage"] <= 1.0 and 0.0 <= report.metrics["secondary/val/acc"] <= 1.0
    # Poison every test row's features: a fit that never reads them is unchanged.
    poisoned = train.features.copy()
    poisoned[test.rows] = np.nan
    again = build("meta_learning", *FAST["meta_learning"])
    again.fit(
        dataclasses.replace(train, features=poisoned), dataclasses.replace(val, features=poisoned), context(tmp_path)
    )
    np.testing.assert_array_equal(again.predict_proba(val), model.predict_proba(val))


def test_meta_learning_splits_each_symbol_block_in_time_order():
    from models.meta_learning import time_ordered_parts

    rows = np.concatenate(
        [
            np.arange(0, 100),
            np.arange(103, 200),  # symbol A with a 3-candle gap
            np.arange(1000, 1200),
        ]
    )  # symbol B
    first, second = time_ordered_parts(rows, 0.5, 4, block_gap=100)
    a, b = rows < 1000, rows >= 1000
    assert rows[first][rows[first] < 1000].max() < rows[second][rows[second] < 1000].min()
    assert rows[first][rows[first] >= 1000].max() + 4 < rows[second][rows[second] >= 1000].min()
    assert len(first) == round(a.sum() / 2) + round(b.sum() / 2) and len(first) + len(second) == len(rows) - 8
