"""Feature sets (composable, causal for every set) and data quality (outliers, gaps, resampling)."""

import numpy as np
import pandas as pd
import pytest
import talib

from core.errors import UserError
from data.features import SETS, compute_features, feature_names
from data.providers import load_candles
from data.quality import spike_outliers
from data.synthetic import generate
from tests.conftest import make_cfg


@pytest.mark.parametrize("feature_set", SETS)
def test_every_feature_set_is_causal(feature_set):
    """Perturb every candle after t: no feature at <= t may change."""
    cfg = make_cfg(f"features.sets=[{feature_set}]", "features.regime_lookback=300").features
    candles = generate(["BTC"], 4000, seed=3).candles["BTC"]
    base = compute_features(candles, cfg)
    rng = np.random.default_rng(0)
    k = 2500
    noisy = candles.copy()
    factor = np.exp(rng.normal(0, 0.02, len(candles) - k - 1))
    for col in ("open", "high", "low", "close"):
        noisy.loc[k + 1 :, col] = noisy.loc[k + 1 :, col].to_numpy() * factor
    noisy.loc[k + 1 :, "volume"] = noisy.loc[k + 1 :, "volume"].to_numpy() * rng.uniform(0.1, 10, len(factor))
    noisy.loc[k + 1 :, "high"] = noisy.loc[k + 1 :, ["open", "high", "close"]].max(axis=1)
    noisy.loc[k + 1 :, "low"] = noisy.loc[k + 1 :, ["open", "low", "close"]].min(axis=1)
    moved = compute_features(noisy, cfg)
    np.testing.assert_allclose(
        base.iloc[: k + 1].to_numpy(), moved.iloc[: k + 1].to_numpy(), rtol=1e-10, atol=1e-12, equal_nan=True
    )
    assert base.iloc[: k + 1].notna().any().all()  # every feature is defined before t
    if feature_set != "session":  # (sessions depend on timestamps only)
        assert not np.allclose(base.iloc[k + 2 :].to_numpy(), moved.iloc[k + 2 :].to_numpy(), equal_nan=True)


def test_feature_sets_compose_and_ta_values_are_talibs():
    cfg = make_cfg("features.sets=[returns,session,fuzzy]").features
    names = feature_names(cfg)
    assert names[:5] == [f"ret_{h}" for h in cfg.return_horizons] and "london" in names and "rsi_high" in names
    assert "rsi" not in names  # fuzzy uses RSI without exposing it
    full = make_cfg("features=full").features
    assert len(feature_names(full)) == 30
    candles = generate(["BTC"], 500, seed=4).candles["BTC"]
    ta = compute_features(candles, make_cfg("features.sets=[ta]").features)
    np.testing.assert_allclose(
        ta["rsi"].to_numpy(), talib.RSI(candles["close"].to_numpy(), 14) / 100 - 0.5, equal_nan=True
    )
    with pytest.raises(UserError, match="unknown feature set"):
        feature_names(make_cfg("features.sets=[returns,astrology]").features)


def test_outlier_rule_finds_the_corrupt_real_bar(shared_data, tmp_path):
    path = shared_data / "ohlcv" / "BTC-USD_4h_coinbase.parquet"
    candles = pd.read_parquet(path)
    found = spike_outliers(candles, 15.0, 0.05)
    assert [str(candles["timestamp"].iloc[i]) for i in found] == ["2018-04-03 20:00:00+00:00"]
    common = ["data=files", f"data.path='{path}'"]
    kept = load_candles(make_cfg(*common).data, ["BTC"], 0)
    assert kept.quality["BTC"]["outliers"][0]["timestamp"].startswith("2018-04-03T20:00")
    assert len(kept.by_symbol["BTC"]) == len(candles)
    dropped = load_candles(make_cfg(*common, "data.outliers=drop").data, ["BTC"], 0)
    assert len(dropped.by_symbol["BTC"]) == len(candles) - 1
    assert dropped.quality["BTC"]["gaps"] == kept.quality["BTC"]["gaps"] + 1
    with pytest.raises(UserError, match="outlier") as err:
        load_candles(make_cfg(*common, "data.outliers=error").data, ["BTC"], 0)
    assert err.value.where == str(path) and "2018-04-03T20:00" in err.value.what


def test_gap_report_and_resampling_in_the_provider(shared_data):
    path = shared_data / "ohlcv" / "BTC-USD_1m_coinbase_9days.parquet"
    cfg = make_cfg("data=files", f"data.path='{path}'", "data.timeframe=1m", "data.resample_to=1h").data
    candles = load_candles(cfg, ["BTC"], 0)
    assert candles.timeframe == "1h"
    hourly = candles.by_symbol["BTC"]
    raw = pd.read_parquet(path)
    first_hour = raw[raw["timestamp"] < raw["timestamp"].iloc[0].floor("h") + pd.Timedelta("1h")]
    assert hourly["volume"].iloc[0] == pytest.approx(first_hour["volume"].sum())
    assert hourly["high"].iloc[0] == first_hour["high"].max()
    expected = int((hourly["timestamp"].diff() > pd.Timedelta("1h")).sum())
    assert candles.quality["BTC"]["gaps"] == expected > 0


def test_synthetic_gaps_and_regimes():
    g = generate(["BTC"], 200_000, seed=5, gap_rate=0.0002, regime_switch=0.001)
    ts = g.candles["BTC"]["timestamp"]
    gaps = ts.diff().dropna() > pd.Timedelta("1min")
    assert 10 < gaps.sum() < 100 and len(ts) < 200_000
    r = np.diff(np.log(g.candles["BTC"]["close"].to_numpy()))
    rolling = pd.Series(np.abs(r)).rolling(2000).mean().dropna()
    assert rolling.max() / rolling.min() > 2.0  # calm and turbulent stretches
