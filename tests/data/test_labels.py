"""The label library on worked examples: every label on its own candles, with the right end time t1."""

import numpy as np
import pandas as pd
import pytest
from omegaconf import OmegaConf

from data.labels import direction3_label, forward_return_label, make_label, quantile_label, triple_barrier_label
from data.synthetic import generate
from data.table import build_table

STEP = pd.Timedelta("1min")


def candles_from(close, high=None, low=None, start="2024-01-01", drop=()):
    close = np.asarray(close, dtype=float)
    ts = pd.date_range(start, periods=len(close), freq="1min", tz="UTC")
    df = pd.DataFrame(
        {
            "timestamp": ts,
            "open": close,
            "high": close if high is None else high,
            "low": close if low is None else low,
            "close": close,
            "volume": 1.0,
        }
    )
    return df.drop(index=list(drop)).reset_index(drop=True)


def test_direction3_dead_zone_and_forward_return():
    c = candles_from([100, 100.05, 101, 99, 99.02, 100])
    d3 = direction3_label(c, 1, STEP, dead_zone=0.002)
    # log moves: +0.0005 (flat), +0.0095 (up), -0.0200 (down), +0.0002 (flat), +0.0099 (up), then no future
    np.testing.assert_array_equal(d3["label"].to_numpy()[:5], [1, 2, 0, 1, 2])
    assert np.isnan(d3["label"].iloc[5])
    fr = forward_return_label(c, 2, STEP)
    assert fr["label"].iloc[0] == pytest.approx(np.log(101 / 100))
    assert fr["t1"].iloc[0] == c["timestamp"].iloc[2]


def test_labels_over_a_gap_are_undefined_not_shifted():
    c = candles_from(np.arange(100, 110, dtype=float), drop=[5])  # minute 5 missing
    fr = forward_return_label(c, 1, STEP)
    at = fr.set_index(fr.index)["label"]
    assert np.isnan(at[c["timestamp"].iloc[4]])  # minute 4 -> minute 5: missing
    assert at[c["timestamp"].iloc[5]] == pytest.approx(np.log(107 / 106))  # minute 6 -> 7


def test_quantile_edges_come_only_from_returns_already_ended():
    rng = np.random.default_rng(0)
    c = candles_from(100 * np.exp(np.cumsum(rng.normal(0, 0.001, 3000))))
    base = quantile_label(c, 5, STEP, bins=4, lookback=500)
    # Change the far future: labels (and their edges) up to well before it must not move.
    future = c.copy()
    future.loc[2500:, "close"] *= np.exp(rng.normal(0, 0.05, len(future) - 2500))
    moved = quantile_label(future, 5, STEP, bins=4, lookback=500)
    ok = base.index < c["timestamp"].iloc[2500 - 5]
    np.testing.assert_array_equal(base["label"][ok].to_numpy(), moved["label"][ok].to_numpy())
    labels = base["label"].dropna()
    assert set(labels.unique()) == {0, 1, 2, 3}
    assert labels.value_counts(normalize=True).between(0.15, 0.35).all()  # roughly balanced buckets


def test_triple_barrier_worked_example():
    # vol window 2 on closes 100,101,100 -> 1-candle log returns +0.00995, -0.00995 -> std 0.00995;
    # width = 1 * 0.00995 * sqrt(3) = 0.01723 -> barriers 100*exp(+-0.01723) = 101.74 / 98.29 at t=2
    close = [100, 101, 100, 100.5, 101.0, 102.0, 100.0, 100.0, 100.0, 100.0]
    high = [100, 101, 100, 100.6, 101.1, 102.1, 100.1, 100.1, 100.1, 100.1]
    low = [100, 101, 100, 100.4, 100.9, 101.9, 97.0, 99.9, 99.9, 99.9]
    c = candles_from(close, high, low)
    tb = triple_barrier_label(c, 3, STEP, take_profit=1.0, stop_loss=1.0, vol_window=2)
    assert tb["label"].iloc[2] == 2  # high 102.1 at t=5 crosses 101.74 first
    assert tb["t1"].iloc[2] == c["timestamp"].iloc[5]
    # Same barriers at t=2 (same closes up to t=2); now the low at t=3 (97.0) breaks 98.29 first.
    stop = candles_from(
        [100, 101, 100, 100, 103, 103], [100, 101, 100, 100.1, 103.1, 103.1], [100, 101, 100, 97.0, 102.9, 102.9]
    )
    tbs = triple_barrier_label(stop, 3, STEP, take_profit=1.0, stop_loss=1.0, vol_window=2)
    assert tbs["label"].iloc[2] == 0 and tbs["t1"].iloc[2] == stop["timestamp"].iloc[3]
    # A candle touching both barriers counts as the stop (the conservative call).
    both = candles_from(
        [100, 101, 100, 100, 100, 100], [100, 101, 100, 103.0, 100, 100], [100, 101, 100, 97.0, 100, 100]
    )
    assert triple_barrier_label(both, 3, STEP, 1.0, 1.0, 2)["label"].iloc[2] == 0
    assert np.isnan(tb["label"].iloc[0])  # volatility not yet defined
    assert tb["label"].iloc[-3:].isna().all() and tb["label"].iloc[-4:-3].notna().all()  # full path or none
    quiet = candles_from([100, 100.1] * 10)  # oscillates inside the barriers
    tbq = triple_barrier_label(quiet, 3, STEP, take_profit=50.0, stop_loss=50.0, vol_window=2)
    assert (tbq["label"].dropna() == 1).all()
    assert (tbq["t1"] - tbq.index)[tbq["label"].notna()].eq(3 * STEP).all()  # vertical barrier


@pytest.mark.parametrize(
    "target",
    [
        {"type": "direction", "horizon": 7},
        {"type": "direction3", "horizon": 7, "dead_zone": 0.5, "vol_window": 30},
        {"type": "forward_return", "horizon": 7},
        {"type": "quantile", "horizon": 7, "bins": 3, "lookback": 200},
        {"type": "triple_barrier", "horizon": 7, "take_profit": 1.0, "stop_loss": 1.0, "vol_window": 30},
    ],
)
def test_every_label_belongs_to_its_own_symbol_with_different_lengths(target):
    """Two symbols of different lengths and start times: each row's label is its own symbol's."""
    target = OmegaConf.create(target)
    btc = generate(["BTC"], 3000, seed=1).candles["BTC"]
    eth = generate(["ETH"], 2000, seed=2, start="2021-01-01 10:00").candles["ETH"]
    features = OmegaConf.create({"sets": ["returns"], "return_horizons": [1, 5]})
    table = build_table({"BTC": btc, "ETH": eth}, features, target, STEP)
    for sym, c in (("BTC", btc), ("ETH", eth)):
        part = table.frame[table.frame["symbol"] == sym].set_index("timestamp")
        own = make_label(c, target, STEP).reindex(part.index)
        np.testing.assert_array_equal(part["label"].to_numpy(), own["label"].to_numpy())
        assert (part["t1"] == own["t1"]).all() and (part["t1"] > part.index).all()
        # persistence is the same symbol's label from `horizon` candles earlier
        earlier = make_label(c, target, STEP)["label"].reindex(part.index - 7 * STEP).to_numpy()
        np.testing.assert_array_equal(part["persistence"].to_numpy(), earlier)


def test_quantile_edges_are_quantiles_of_returns_already_ended():
    """Second implementation of the edges: at row t, np.quantile over the forward returns that started at
    t-h-lookback+1 .. t-h (those ended by t). Edges that included unfinished returns would differ."""
    from data.labels import forward_log_return, quantile_edges

    rng = np.random.default_rng(1)
    h, lookback, bins = 10, 200, 5
    c = candles_from(100 * np.exp(np.cumsum(rng.normal(0, 0.001, 1500))))
    fwd = forward_log_return(c, h, STEP)
    edges = quantile_edges(fwd, h, STEP, bins, lookback)
    ret = fwd["ret"].to_numpy()
    qs = np.linspace(0, 1, bins + 1)[1:-1]
    for t in (h + lookback - 1, 700, 1234, 1489):
        expected = np.quantile(ret[t - h - lookback + 1 : t - h + 1], qs)
        np.testing.assert_allclose(edges[t], expected, rtol=1e-12)
