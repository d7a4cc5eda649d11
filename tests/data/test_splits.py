"""Splits: holdout, walk-forward, purged k-fold — purge via t1 for every label type, embargo at every
boundary, the same cutoffs for every symbol."""

import json

import numpy as np
import pandas as pd
import pytest
from omegaconf import OmegaConf

from data.providers import load_candles
from data.splits import make_folds, purged_kfold, walk_forward_folds
from data.synthetic import generate
from data.table import build_table
from tests.conftest import make_cfg
from trainer import load_model, train

STEP = pd.Timedelta("1min")
TARGETS = [
    {"type": "direction", "horizon": 20},
    {"type": "forward_return", "horizon": 60},
    {"type": "triple_barrier", "horizon": 30, "take_profit": 1.0, "stop_loss": 1.0, "vol_window": 30},
    {"type": "quantile", "horizon": 25, "bins": 3, "lookback": 200},
]


def table_for(target):
    g = generate(["BTC", "ETH"], 8000, seed=9)
    features = OmegaConf.create({"sets": ["returns"], "return_horizons": [1, 5]})
    t = build_table(g.candles, features, OmegaConf.create(target), STEP)
    return t.frame, t.frame["label"].notna().to_numpy()


@pytest.mark.parametrize("target", TARGETS, ids=lambda t: t["type"])
@pytest.mark.parametrize("split", ["holdout", "walk_forward", "purged_kfold"])
def test_no_training_label_reaches_into_validation_or_test(target, split):
    frame, eligible = table_for(target)
    cfg = make_cfg(f"split={split}", "split.embargo=15").split
    folds = make_folds(cfg, frame["timestamp"], frame["t1"], eligible, STEP)
    emb = 15 * STEP
    for fold in folds:
        tr, va, te = (frame.iloc[fold.rows[k]] for k in ("train", "val", "test"))
        assert len(tr) and len(va) and len(te)
        for held in (va, te):
            # no training label interval [t, t1] may touch a held-out label interval, nor start within the
            # embargo after the held labels end
            touches = (tr["t1"] >= held["timestamp"].min()) & (tr["timestamp"] <= held["t1"].max() + emb)
            assert not touches.any(), (fold.name, int(touches.sum()))
        # validation and test are separated too: purge, then an embargo gap
        first, second = (va, te) if va["timestamp"].min() < te["timestamp"].min() else (te, va)
        assert (first["t1"] < second["timestamp"].min()).all()
        assert second["timestamp"].min() >= first["timestamp"].max() + emb
        for part in (tr, va, te):  # one set of cutoffs for both symbols
            assert set(part["symbol"]) == {"BTC", "ETH"}


def test_walk_forward_blocks_are_consecutive_and_windows_expand_or_slide():
    frame, eligible = table_for(TARGETS[0])
    ts, t1 = frame["timestamp"], frame["t1"]
    expanding = walk_forward_folds(ts, t1, eligible, 4, "expanding", 0.4, 0.2, 10 * STEP)
    sliding = walk_forward_folds(ts, t1, eligible, 4, "sliding", 0.4, 0.2, 10 * STEP)
    for folds in (expanding, sliding):
        starts = [pd.Timestamp(f.cutoffs["test_start"]) for f in folds]
        assert starts == sorted(starts)
        for a, b in zip(folds, folds[1:]):
            assert a.cutoffs["test_end"] == b.cutoffs["test_start"]
            assert frame["timestamp"].iloc[a.rows["test"]].max() < pd.Timestamp(b.cutoffs["test_start"])
        tested = np.concatenate([f.rows["test"] for f in folds])
        assert len(tested) == len(np.unique(tested))
        first_test = pd.Timestamp(folds[0].cutoffs["test_start"])
        labelled = frame["timestamp"][eligible]
        assert abs((labelled >= first_test).mean() - 0.4) < 0.01
    assert len({f.cutoffs["train_start"] for f in expanding}) == 1
    assert len({f.cutoffs["train_start"] for f in sliding}) == 4
    assert len(expanding[-1].rows["train"]) > len(expanding[0].rows["train"])
    assert abs(len(sliding[-1].rows["train"]) - len(sliding[0].rows["train"])) < 0.05 * len(sliding[0].rows["train"])


def test_purged_kfold_tests_each_row_at_most_once_and_skips_only_embargoes():
    frame, eligible = table_for(TARGETS[2])
    emb = 10 * STEP
    folds = purged_kfold(frame["timestamp"], frame["t1"], eligible, 5, 0.15, emb)
    tested = np.concatenate([f.rows["test"] for f in folds])
    assert len(tested) == len(np.unique(tested))
    untested = np.setdiff1d(np.flatnonzero(eligible), tested)
    starts = [pd.Timestamp(f.cutoffs["test_start"]) for f in folds[1:]]
    ts = frame["timestamp"].iloc[untested]
    assert ts.apply(lambda t: any(s <= t < s + emb for s in starts)).all()


def test_walk_forward_run_refits_the_scaler_per_fold_and_pools_out_of_sample_predictions(tmp_path):
    cfg = make_cfg(
        "model=lightgbm",
        "split=walk_forward",
        "split.folds=3",
        "data.rows=40000",
        "logger=none",
        "trainer.num_threads=2",
        run_dir=tmp_path,
    )
    result = train(cfg)
    ds = result.data_summary
    assert ds.split == "walk_forward" and len(ds.folds) == 3
    assert result.test_metrics["n"] == sum(f["rows"]["test"] for f in ds.folds)
    preds = pd.read_parquet(tmp_path / "predictions_test.parquet")
    assert sorted(preds["fold"].unique()) == [0, 1, 2] and preds["timestamp"].is_monotonic_increasing
    # The saved scaler is the last fold's: fitted on exactly that fold's training rows.
    candles = load_candles(cfg.data, ["BTC"], cfg.seed)
    table = build_table(candles.by_symbol, cfg.features, cfg.target, candles.step)
    eligible = table.frame["label"].notna().to_numpy()
    folds = make_folds(cfg.split, table.frame["timestamp"], table.frame["t1"], eligible, candles.step)
    scaler = json.loads((tmp_path / "model" / "scaler.json").read_text())
    raw = table.matrix()
    np.testing.assert_allclose(scaler["mean"], raw[folds[-1].rows["train"]].mean(0), rtol=1e-9)
    assert not np.allclose(scaler["mean"], raw[folds[0].rows["train"]].mean(0), rtol=1e-6)
    # Reload parity on the rows the saved (last-fold) model predicted.
    last = preds[preds["fold"] == 2]
    out = load_model(tmp_path).predict_proba(candles.by_symbol["BTC"]).set_index(candles.by_symbol["BTC"]["timestamp"])
    np.testing.assert_array_equal(out.loc[last["timestamp"], "p_up"].to_numpy(), last["p_up"].to_numpy())
