"""Providers, validation, causal features, timestamp-aligned labels, purged splits, windows."""

import numpy as np
import pandas as pd
import pytest
import torch
from omegaconf import OmegaConf

from core.errors import UserError
from data.files import read_candle_file
from data.labels import direction_label
from data.providers import load_candles
from data.schema import validate_candles
from data.splits import assign_rows, holdout_cutoffs
from data.synthetic import generate
from data.table import build_table
from data.windows import WindowBatches
from tests.conftest import make_cfg

STEP = pd.Timedelta("1min")


def direction(horizon: int):
    return OmegaConf.create({"type": "direction", "horizon": horizon})


def features_cfg():
    return make_cfg().features


def test_synthetic_is_deterministic_valid_and_correlated():
    a = generate(["BTC", "ETH"], 5000, seed=7)
    b = generate(["BTC", "ETH"], 5000, seed=7)
    c = generate(["BTC", "ETH"], 5000, seed=8)
    pd.testing.assert_frame_equal(a.candles["BTC"], b.candles["BTC"])
    assert not np.allclose(a.candles["BTC"]["close"], c.candles["BTC"]["close"])
    for sym in ("BTC", "ETH"):
        validate_candles(a.candles[sym], sym)
    r = {s: np.diff(np.log(a.candles[s]["close"].to_numpy())) for s in ("BTC", "ETH")}
    assert np.corrcoef(r["BTC"], r["ETH"])[0, 1] > 0.5


def test_a_synthetic_coin_does_not_depend_on_the_other_coins_requested():
    alone = generate(["ETH"], 3000, seed=11)
    together = generate(["BTC", "ETH", "SOL", "DOGE"], 3000, seed=11)
    pd.testing.assert_frame_equal(alone.candles["ETH"], together.candles["ETH"])
    pd.testing.assert_frame_equal(generate(["DOGE"], 3000, seed=11).candles["DOGE"], together.candles["DOGE"])
    assert not np.allclose(
        together.candles["BTC"]["close"].pct_change().iloc[1:], together.candles["ETH"]["close"].pct_change().iloc[1:]
    )


def test_synthetic_oracle_is_chance_without_signal_and_above_with_it():
    def oracle_acc(strength):
        g = generate(["BTC"], 100_000, seed=3, signal_strength=strength)
        close = g.candles["BTC"]["close"].to_numpy()
        up = close[15:] > close[:-15]
        return np.mean(g.oracle_up["BTC"].to_numpy()[:-15] == up)

    assert abs(oracle_acc(0.0) - 0.5) < 0.01
    assert oracle_acc(1.0) > 0.58


@pytest.mark.parametrize(
    "rule,mutate",
    [
        ("low <= open,close <= high", lambda d: d.__setitem__("high", d["high"].where(d.index != 5, d["low"] * 0.5))),
        ("prices > 0", lambda d: d.__setitem__("low", d["low"].where(d.index != 7, -1.0))),
        (
            "timestamps sorted ascending",
            lambda d: d.__setitem__("timestamp", d["timestamp"].where(d.index != 9, d["timestamp"].iloc[2])),
        ),
        ("volume >= 0", lambda d: d.__setitem__("volume", d["volume"].where(d.index != 4, -3.0))),
    ],
)
def test_validation_refuses_bad_candles_naming_rule_and_row(tmp_path, rule, mutate):
    df = generate(["BTC"], 50, seed=1).candles["BTC"].copy()
    mutate(df)
    path = tmp_path / "bad.parquet"
    df.to_parquet(path)
    with pytest.raises(UserError) as err:
        read_candle_file(path)
    assert rule in err.value.what and "row" in err.value.what
    assert err.value.where == str(path)


def test_validation_refuses_duplicates_and_naive_timestamps(tmp_path):
    df = generate(["BTC"], 20, seed=1).candles["BTC"]
    with pytest.raises(UserError, match="unique"):
        validate_candles(pd.concat([df.iloc[:5], df.iloc[4:]], ignore_index=True), "x")
    with pytest.raises(UserError, match="timestamps present"):
        validate_candles(df.assign(timestamp=df["timestamp"].where(df.index != 3, pd.NaT)), "x")
    with pytest.raises(UserError, match="tz-aware"):
        validate_candles(df.assign(timestamp=df["timestamp"].dt.tz_localize(None)), "x")


def test_missing_file_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="not found"):
        read_candle_file(tmp_path / "nope.parquet")


def test_features_are_causal():
    candles = generate(["BTC"], 3000, seed=2).candles["BTC"]
    cfg = features_cfg()
    from data.features import compute_features

    full = compute_features(candles, cfg)
    cut = 2000
    part = compute_features(candles.iloc[:cut], cfg)
    # Values at t must not change when the future is removed.
    np.testing.assert_allclose(full.iloc[:cut].to_numpy(), part.to_numpy(), rtol=1e-9, atol=1e-12, equal_nan=True)


def test_labels_stay_on_their_candles_after_rows_are_dropped():
    """Pitfall: features and labels paired by position after rows were dropped."""
    candles = generate(["BTC"], 3000, seed=4).candles["BTC"]
    holey = candles.drop(index=range(1500, 1510)).reset_index(drop=True)  # a 10-candle gap
    table = build_table({"BTC": holey}, features_cfg(), direction(5), STEP)
    frame = table.frame
    close_by_ts = candles.set_index("timestamp")["close"]
    present = set(holey["timestamp"])
    for _, row in frame.sample(400, random_state=0).iterrows():
        t1 = row["timestamp"] + 5 * STEP
        assert row["t1"] == t1
        if t1 in present:
            assert row["label"] == float(close_by_ts[t1] > close_by_ts[row["timestamp"]])
        else:
            assert np.isnan(row["label"])
    # A positional pairing would put labels across the gap on the wrong candles: they differ.
    positional = (holey["close"].shift(-5) > holey["close"]).astype(float)
    aligned = frame.set_index("timestamp")["label"]
    pos = pd.Series(positional.to_numpy(), index=holey["timestamp"]).reindex(aligned.index)
    around_gap = (aligned.index > holey["timestamp"].iloc[1494]) & (aligned.index < holey["timestamp"].iloc[1500])
    assert around_gap.sum() == 5  # the five candles whose 5-ahead future fell into the gap
    assert aligned[around_gap].isna().all() and pos[around_gap].notna().all()


def test_multi_symbol_labels_never_cross_symbols():
    g = generate(["BTC", "ETH"], 2000, seed=5)
    table = build_table(g.candles, features_cfg(), direction(10), STEP)
    for sym in ("BTC", "ETH"):
        part = table.frame[table.frame["symbol"] == sym]
        own = direction_label(g.candles[sym], 10, STEP)
        np.testing.assert_array_equal(part["label"].to_numpy(), own.loc[part["timestamp"], "label"].to_numpy())
        assert part["label"].isna().sum() == 10  # the last 10 candles of each symbol have no future


def test_purge_and_embargo_at_both_boundaries():
    g = generate(["BTC", "ETH"], 6000, seed=6)
    table = build_table(g.candles, features_cfg(), direction(20), STEP)
    frame = table.frame
    eligible = frame["label"].notna().to_numpy()
    cut = holdout_cutoffs(frame["timestamp"][eligible], 0.6, 0.2, 15 * STEP)
    idx = assign_rows(frame["timestamp"], frame["t1"], eligible, cut)
    tr, va, te = (frame.iloc[idx[k]] for k in ("train", "val", "test"))
    assert (tr["t1"] < cut.val_start).all()  # purge train -> val
    assert (va["t1"] < cut.test_start).all()  # purge val -> test
    assert (va["timestamp"] >= cut.val_start + 15 * STEP).all()  # embargo after the first cutoff
    assert (te["timestamp"] >= cut.test_start + 15 * STEP).all()  # and after the second
    # The purge removed real rows: train rows that start before the cutoff but whose label ends after it.
    crossing = eligible & (frame["timestamp"] < cut.val_start).to_numpy() & (frame["t1"] >= cut.val_start).to_numpy()
    assert crossing.sum() == 2 * 20 and not set(np.flatnonzero(crossing)) & set(idx["train"])
    # Same cutoffs for every symbol.
    for part in (tr, va, te):
        assert set(part["symbol"]) == {"BTC", "ETH"}
    assert tr.groupby("symbol")["timestamp"].max().nunique() == 1


def test_windows_gather_views_and_never_cross_gaps_or_symbols():
    g = generate(["BTC", "ETH"], 500, seed=8)
    btc = g.candles["BTC"].drop(index=range(300, 305)).reset_index(drop=True)
    table = build_table({"BTC": btc, "ETH": g.candles["ETH"]}, features_cfg(), direction(3), STEP)
    pos = table.run_position()
    frame = table.frame
    window = 8
    ends = np.flatnonzero(pos >= window - 1)
    for e in ends:
        block = frame.iloc[e - window + 1 : e + 1]
        assert block["symbol"].nunique() == 1
        assert (block["timestamp"].diff().dropna() == STEP).all()
    # Rows right after the gap or the symbol change cannot end a window.
    assert pos[frame.index[(frame["symbol"] == "ETH")][0]] == 0
    X = torch.from_numpy(table.matrix().astype(np.float32))
    batches = WindowBatches(X, ends, np.zeros(len(ends)), window, batch_size=64)
    x, _ = next(iter(batches))
    np.testing.assert_array_equal(x[3].numpy(), X[ends[3] - window + 1 : ends[3] + 1].numpy())


def test_files_provider_reads_the_real_canonical_parquet(shared_data):
    cfg = make_cfg("data=files", f"data.path='{shared_data}/ohlcv/{{symbol}}-USD_1h_coinbase.parquet'")
    candles = load_candles(cfg.data, ["BTC"], seed=0)
    assert candles.timeframe == "1h" and len(candles.by_symbol["BTC"]) == 20111
    assert candles.oracle_up is None


def test_unknown_provider_is_refused():
    cfg = OmegaConf.create({"provider": "ccxtt"})
    with pytest.raises(UserError, match="unknown data provider"):
        load_candles(cfg, ["BTC"], 0)


def test_window_dataset_is_a_view_not_a_copy():
    X = torch.randn(50_000, 8)
    ends = np.arange(59, 50_000)
    batches = WindowBatches(X, ends, np.zeros(len(ends), dtype=np.int64), 60, batch_size=256)
    assert batches.features.data_ptr() == X.data_ptr()  # the matrix itself, shared
    held = sum(t.numel() for t in (batches.ends, batches.labels, batches.offsets))
    assert held < 3 * len(ends) + 100  # O(rows) indices, not rows x window x F
    x, _ = next(iter(batches))
    assert x.shape == (256, 60, 8)
