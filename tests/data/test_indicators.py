"""Hand-written causal indicators: worked examples, session calendar, regime shift, causality, fuzzy sets."""

import warnings

import numpy as np
import pandas as pd
import pytest

from data.indicators import (
    DEFAULT_FUZZY_SETS,
    corwin_schultz_spread,
    fuzzy_memberships,
    roll_spread,
    session_features,
    slippage_estimate,
    trapezoid,
    triangular,
    volatility_regime,
)


def random_candles(n: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    close = 100.0 * np.exp(np.cumsum(rng.normal(0.0, 0.002, n)))
    open_ = np.r_[close[0], close[:-1]]
    high = np.maximum(open_, close) * (1.0 + rng.uniform(0.0, 0.003, n))
    low = np.minimum(open_, close) * (1.0 - rng.uniform(0.0, 0.003, n))
    volume = rng.lognormal(3.0, 1.0, n)
    return {"high": high, "low": low, "close": close, "volume": volume}


def test_corwin_schultz_worked_examples():
    # k = 3 - 2*sqrt(2) = 0.171573; sqrt(k) = sqrt(2) - 1 = 0.414214.
    # Bars 0,1 identical, H=101 L=99: x = ln(101/99) = 0.0200007; beta = 2x^2, gamma = x^2
    #   alpha = (2x - sqrt(2)x)/k - x/sqrt(k) = x*((2+sqrt2) - (sqrt2+1)) = x
    #   S = 2(e^x - 1)/(1 + e^x) = 2*(2/99)/(200/99) = 0.02 exactly.
    # Bars 1,2: (101,99) then (102,98): ln(102/98) = 0.0400053, ln(101/99) = 0.0200007
    #   beta = 0.0400053^2 + 0.0200007^2 = 0.00200045; gamma = ln(102/98)^2 = 0.00160043
    #   alpha = (0.0632527 - 0.0447264)/0.171573 - sqrt(0.00160043/0.171573) = 0.1079792 - 0.0965814 = 0.0113977
    #   S = 2(e^a - 1)/(1 + e^a) = 0.0113976
    # Bars 2,3: (102,98) then (110,109): gap up, gamma = ln(110/98)^2 = 0.013349 dominates -> alpha < 0 -> S = 0.
    high = np.array([101.0, 101.0, 102.0, 110.0])
    low = np.array([99.0, 99.0, 98.0, 109.0])
    spread = corwin_schultz_spread(high, low)
    assert np.isnan(spread[0])
    assert spread[1] == pytest.approx(0.02, rel=1e-12)
    assert spread[2] == pytest.approx(0.0113976, abs=1e-7)
    assert spread[3] == 0.0


def test_corwin_schultz_uses_only_previous_and_current_bar():
    # Changing bar 0 moves only the estimate at t=1 (pair 0,1), not at t=2 (pair 1,2).
    high = np.array([101.0, 101.0, 101.0])
    low = np.array([99.0, 99.0, 99.0])
    wider = high.copy()
    wider[0] = 105.0
    a, b = corwin_schultz_spread(high, low), corwin_schultz_spread(wider, low)
    assert a[1] != b[1]
    assert a[2] == b[2] == pytest.approx(0.02, rel=1e-12)


def test_roll_spread_worked_alternating_series():
    # close alternates 100, 101: dp = [nan, +1, -1, +1, -1, +1, -1, +1]; window = 4 pairs (dp_t, dp_{t-1}).
    # At t=5: x = dp[2..5] = [-1, 1, -1, 1], y = dp[1..4] = [1, -1, 1, -1]; means 0; sum(xy) = -4
    #   sample cov = -4/3 -> spread = 2*sqrt(4/3) = 2.309401. (Deterministic alternation is perfectly
    #   negatively autocorrelated, so this is 2x the "bounce" width; iid bounce gives s, tested below.)
    close = np.array([100.0, 101.0] * 4)
    spread = roll_spread(close, window=4)
    assert np.isnan(spread[:5]).all()  # t <= window: not enough pairs
    np.testing.assert_allclose(spread[5:], 4.0 / np.sqrt(3.0), rtol=1e-12)


def test_roll_spread_zero_when_changes_are_not_negatively_autocorrelated():
    # Constant trend: dp = 1.37 every bar -> cov = 0 -> spread 0 (not a rounding-size positive number).
    trend = 1.37 * np.arange(100.0, 140.0)
    assert (roll_spread(trend, window=5)[6:] == 0.0).all()
    # Momentum: dp = 1, 1, 2, 2, 1, 1, 2, 2 ... positively autocorrelated at lag 1 -> 0.
    momentum = 100.0 + np.cumsum(np.tile([1.0, 1.0, 2.0, 2.0], 10))
    assert (roll_spread(momentum, window=8)[9:] == 0.0).all()


def test_roll_spread_recovers_bid_ask_bounce():
    # Roll's model: mid follows a random walk, trades print at mid +- s/2 with an iid side -> estimate ~ s.
    rng = np.random.default_rng(7)
    n, s = 40_000, 0.5
    mid = 100.0 + np.cumsum(rng.normal(0.0, 0.05, n))
    side = rng.choice([-1.0, 1.0], n)
    close = mid + side * s / 2.0
    spread = roll_spread(close, window=n - 2)
    assert spread[-1] == pytest.approx(s, rel=0.05)


def test_slippage_worked_example():
    # Every bar H=102 L=98 -> CS = 2(H-L)/(H+L) = 8/200 = 0.04 -> half spread 0.02.
    # Close alternates 100, 100e^0.01 -> |r| = 0.01; volume = 1e6/close -> traded value DV = 1e6 every bar.
    # Amihud = mean(|r|/DV) = 1e-8. Default order = 0.1 * mean(DV) = 1e5 -> impact 1e-3 -> cost 0.021.
    # Fixed order_value = 5e4 -> impact 5e-4 -> cost 0.0205.
    n, window = 12, 4
    close = 100.0 * np.exp(0.01 * (np.arange(n) % 2))
    high, low = np.full(n, 102.0), np.full(n, 98.0)
    volume = 1e6 / close
    cost = slippage_estimate(high, low, close, volume, window)
    assert np.isnan(cost[:window]).all()
    np.testing.assert_allclose(cost[window:], 0.021, rtol=1e-9)
    fixed = slippage_estimate(high, low, close, volume, window, order_value=5e4)
    np.testing.assert_allclose(fixed[window:], 0.0205, rtol=1e-9)
    # Flat price, no returns: cost is the half spread alone.
    flat = slippage_estimate(high, low, np.full(n, 100.0), np.full(n, 10.0), window)
    np.testing.assert_allclose(flat[window:], 0.02, rtol=1e-12)


def test_slippage_zero_volume_bars_do_not_blow_up():
    c = random_candles(50, seed=3)
    c["volume"][20:23] = 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cost = slippage_estimate(c["high"], c["low"], c["close"], c["volume"], window=5)
    assert np.isfinite(cost[5:]).all() and (cost[5:] >= 0).all()
    c["volume"][30:40] = 0.0  # a whole window without trades: no impact estimate
    cost = slippage_estimate(c["high"], c["low"], c["close"], c["volume"], window=5)
    assert np.isnan(cost[34:40]).all() and np.isfinite(cost[45:]).all()


def test_volatility_regime_steps_from_low_to_high_at_the_volatility_step():
    # Alternating-sign returns whose size drifts down slowly (so each new vol is the lowest in its lookback),
    # then jumps 5x at bar `step`: regime 0 before the step, 2 from the step while the window fills.
    window, lookback, step, n = 20, 100, 300, 400
    t = np.arange(n)
    size = np.where(t < step, 0.002, 0.010) * (1.0 - 0.0005 * t)
    returns = size * np.where(t % 2 == 0, 1.0, -1.0)
    close = 100.0 * np.exp(np.cumsum(returns))
    regime = volatility_regime(close, window, lookback)
    first = window + lookback - 1
    assert np.isnan(regime[:first]).all() and not np.isnan(regime[first:]).any()
    assert (regime[first:step] == 0).all()
    assert (regime[step : step + window] == 2).all()


def test_volatility_regime_constant_volatility_is_mid():
    # All vols tie -> average rank ~ 0.5 -> mid regime (not "high" because a tie counts as <=).
    close = 100.0 * np.exp(np.cumsum(0.01 * np.where(np.arange(200) % 2 == 0, 1.0, -1.0)))
    regime = volatility_regime(close, window=10, lookback=30)
    assert set(np.unique(regime[~np.isnan(regime)])) <= {1.0}


def test_volatility_regime_rejects_bad_thresholds():
    with pytest.raises(ValueError, match="thresholds"):
        volatility_regime(np.ones(10), 3, 3, thresholds=(0.8, 0.2))


@pytest.mark.parametrize(
    "stamp, tokyo, london, new_york, overlap, weekend",
    [
        ("2024-01-06 08:30", 1, 1, 0, 1, 1),  # Saturday; Tokyo + London overlap
        ("2024-01-07 23:59", 0, 0, 0, 0, 1),  # Sunday, after New York close
        ("2024-01-08 00:00", 1, 0, 0, 0, 0),  # Monday, Tokyo opens
        ("2024-01-08 06:59", 1, 0, 0, 0, 0),
        ("2024-01-08 09:00", 0, 1, 0, 0, 0),  # Tokyo closed at 09:00 (half-open)
        ("2024-01-08 14:00", 0, 1, 1, 1, 0),  # London + New York overlap
        ("2024-01-08 16:00", 0, 0, 1, 0, 0),  # London closed
        ("2024-01-08 21:59", 0, 0, 1, 0, 0),
        ("2024-01-08 22:00", 0, 0, 0, 0, 0),
        ("2024-01-12 23:00", 0, 0, 0, 0, 0),  # Friday night
    ],
)
def test_session_flags(stamp, tokyo, london, new_york, overlap, weekend):
    row = session_features(pd.DatetimeIndex([pd.Timestamp(stamp, tz="UTC")])).iloc[0]
    assert (row["tokyo"], row["london"], row["new_york"]) == (tokyo, london, new_york)
    assert (row["overlap"], row["weekend"]) == (overlap, weekend)


def test_session_cyclic_encodings_and_timezones():
    stamps = pd.DatetimeIndex(["2024-01-08 06:00", "2024-01-08 18:00", "2024-01-10 12:30"], tz="UTC")
    f = session_features(stamps)
    assert list(f.columns) == [
        "tokyo",
        "london",
        "new_york",
        "overlap",
        "hour_sin",
        "hour_cos",
        "dow_sin",
        "dow_cos",
        "weekend",
    ]
    np.testing.assert_allclose(f["hour_sin"], [1.0, -1.0, np.sin(2 * np.pi * 12.5 / 24)], atol=1e-12)
    np.testing.assert_allclose(f["hour_cos"], [0.0, 0.0, np.cos(2 * np.pi * 12.5 / 24)], atol=1e-12)
    # Monday = 0, Wednesday = 2
    np.testing.assert_allclose(f["dow_sin"], [0.0, 0.0, np.sin(2 * np.pi * 2 / 7)], atol=1e-12)
    np.testing.assert_allclose(f["dow_cos"], [1.0, 1.0, np.cos(2 * np.pi * 2 / 7)], atol=1e-12)
    # 09:30 in Tokyo (UTC+9) is Monday 00:30 UTC: Tokyo session, not the weekend.
    local = session_features(pd.DatetimeIndex([pd.Timestamp("2024-01-08 09:30", tz="Asia/Tokyo")])).iloc[0]
    assert (local["tokyo"], local["london"], local["weekend"]) == (1, 0, 0)
    with pytest.raises(ValueError, match="tz-aware"):
        session_features(pd.DatetimeIndex(["2024-01-08 06:00"]))


def test_triangular_at_break_points_and_midpoints():
    # (0, 10, 20): 0 at a and c, 1 at b, 0.5 halfway up (5) and down (15), 0 outside.
    x = np.array([-5.0, 0.0, 5.0, 10.0, 15.0, 20.0, 25.0, 2.5])
    np.testing.assert_array_equal(triangular(x, 0, 10, 20), [0, 0, 0.5, 1, 0.5, 0, 0, 0.25])
    # Asymmetric (0, 10, 40): halfway down is 25 -> 0.5; 30 -> (40-30)/30 = 1/3
    np.testing.assert_allclose(triangular(np.array([25.0, 30.0]), 0, 10, 40), [0.5, 1 / 3], rtol=1e-15)


def test_trapezoid_at_break_points_and_midpoints():
    # (0, 10, 20, 40): ramps 0->1 on [0,10], 1 on [10,20], 1->0 on [20,40].
    x = np.array([-1.0, 0.0, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 41.0])
    np.testing.assert_array_equal(trapezoid(x, 0, 10, 20, 40), [0, 0, 0.5, 1, 1, 1, 0.5, 0, 0])


def test_shoulders_are_one_at_the_edge_without_division_by_zero():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a 0/0 would raise here
        # Left shoulder (0, 0, 30, 45): 1 at 0, 1 up to 30, (45-37.5)/15 = 0.5 at 37.5, 0 at 45.
        x = np.array([0.0, 30.0, 37.5, 45.0])
        np.testing.assert_array_equal(trapezoid(x, 0, 0, 30, 45), [1, 1, 0.5, 0])
        # Right shoulder (55, 70, 100, 100): (62.5-55)/15 = 0.5, 1 at 70 and at 100.
        np.testing.assert_array_equal(trapezoid(np.array([55.0, 62.5, 70.0, 100.0]), 55, 70, 100, 100), [0, 0.5, 1, 1])
        # Triangular shoulders: (0, 0, 10) is 1 at 0, 0.5 at 5; (0, 10, 10) is 1 at 10, 0.5 at 5.
        np.testing.assert_array_equal(triangular(np.array([0.0, 5.0, 10.0]), 0, 0, 10), [1, 0.5, 0])
        np.testing.assert_array_equal(triangular(np.array([0.0, 5.0, 10.0]), 0, 10, 10), [0, 0.5, 1])
        # Crisp set (5, 5, 5, 5): 1 exactly at 5.
        np.testing.assert_array_equal(trapezoid(np.array([4.0, 5.0, 6.0]), 5, 5, 5, 5), [0, 1, 0])
        # Open-ended shoulders stay 1 out to infinity.
        np.testing.assert_allclose(
            trapezoid(np.array([-1e9, -0.5, -0.35]), -np.inf, -np.inf, -0.5, -0.2), [1, 1, 0.5], rtol=1e-12
        )
        np.testing.assert_allclose(
            trapezoid(np.array([0.35, 0.5, 1e9]), 0.2, 0.5, np.inf, np.inf), [0.5, 1, 1], rtol=1e-12
        )


def test_fuzzy_set_validation():
    with pytest.raises(ValueError, match="ordered"):
        trapezoid(np.zeros(2), 0, 10, 5, 20)
    with pytest.raises(ValueError, match="finite"):
        trapezoid(np.zeros(2), -np.inf, 0, 1, 2)
    with pytest.raises(ValueError, match="3 or 4 points"):
        fuzzy_memberships(np.zeros(2), "rsi", {"odd": [1, 2]})


def test_fuzzy_memberships_columns_range_and_nan():
    rng = np.random.default_rng(0)
    rsi = rng.uniform(0, 100, 500)
    rsi[[3, 17, 400]] = np.nan
    frame = fuzzy_memberships(rsi, "rsi", DEFAULT_FUZZY_SETS["rsi"])
    assert list(frame.columns) == ["rsi_low", "rsi_mid", "rsi_high"]
    values = frame.to_numpy()
    assert np.isnan(values[[3, 17, 400]]).all()
    finite = np.delete(values, [3, 17, 400], axis=0)
    assert not np.isnan(finite).any() and (finite >= 0).all() and (finite <= 1).all()
    # RSI 50 is fully mid; 20 fully low; 80 fully high; 40 is in both low ((45-40)/15) and mid ((40-35)/15).
    point = fuzzy_memberships(np.array([50.0, 20.0, 80.0, 40.0]), "rsi", DEFAULT_FUZZY_SETS["rsi"]).to_numpy()
    np.testing.assert_allclose(point, [[0, 1, 0], [1, 0, 0], [0, 0, 1], [1 / 3, 1 / 3, 0]], rtol=1e-15)
    bb = pd.Series([-1.2, -0.5, 0.0, 0.5, 1.2, np.nan], index=pd.RangeIndex(10, 16))
    bb_frame = fuzzy_memberships(bb, "bb", DEFAULT_FUZZY_SETS["bb_position"])
    assert bb_frame.index.equals(bb.index)
    np.testing.assert_array_equal(bb_frame.to_numpy()[:5], [[1, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1], [0, 0, 1]])
    assert bb_frame.iloc[5].isna().all()


def _perturbed(c: dict[str, np.ndarray], k: int, seed: int) -> dict[str, np.ndarray]:
    """Same candles up to k; after k, random noise (still valid candles)."""
    rng = np.random.default_rng(seed)
    noise = np.exp(rng.normal(0.0, 0.05, len(c["close"]) - k - 1))
    out = {name: values.copy() for name, values in c.items()}
    out["close"][k + 1 :] *= noise
    out["high"][k + 1 :] = np.maximum(out["high"][k + 1 :] * noise, out["close"][k + 1 :]) * 1.01
    out["low"][k + 1 :] = np.minimum(out["low"][k + 1 :] * noise, out["close"][k + 1 :]) * 0.99
    out["volume"][k + 1 :] = rng.lognormal(5.0, 2.0, len(noise))
    return out


CAUSAL_FUNCTIONS = {
    "corwin_schultz": lambda c: corwin_schultz_spread(c["high"], c["low"]),
    "roll": lambda c: roll_spread(c["close"], 15),
    "slippage": lambda c: slippage_estimate(c["high"], c["low"], c["close"], c["volume"], 15),
    "slippage_fixed_order": lambda c: slippage_estimate(
        c["high"], c["low"], c["close"], c["volume"], 15, order_value=1e4
    ),
    "volatility_regime": lambda c: volatility_regime(c["close"], 10, 60),
    "triangular": lambda c: triangular(c["close"], 95.0, 100.0, 105.0),
    "trapezoid": lambda c: trapezoid(c["close"], 95.0, 98.0, 102.0, 105.0),
    "fuzzy": lambda c: fuzzy_memberships(c["close"] - 100.0, "x", {"a": [-5, 0, 5], "b": [0, 0, 2, 6]}),
}


@pytest.mark.parametrize("name", CAUSAL_FUNCTIONS)
@pytest.mark.parametrize("k", [80, 160, 300])
def test_outputs_up_to_k_ignore_inputs_after_k(name, k):
    fn = CAUSAL_FUNCTIONS[name]
    candles = random_candles(400, seed=11)
    base = np.asarray(fn(candles), dtype=np.float64)
    moved = np.asarray(fn(_perturbed(candles, k, seed=k)), dtype=np.float64)
    assert not np.isnan(base[k]).all(), "k must be past the warm-up for the check to mean anything"
    np.testing.assert_array_equal(base[: k + 1], moved[: k + 1])
    assert not np.array_equal(base[k + 1 :], moved[k + 1 :], equal_nan=True), "perturbation had no effect"


@pytest.mark.parametrize("k", [10, 100])
def test_session_features_ignore_timestamps_after_k(k):
    rng = np.random.default_rng(k)
    stamps = pd.date_range("2024-01-01", periods=200, freq="37min", tz="UTC")
    shuffled = stamps[: k + 1].append(pd.DatetimeIndex(rng.choice(stamps[k + 1 :], len(stamps) - k - 1)))
    base, moved = session_features(stamps), session_features(shuffled)
    pd.testing.assert_frame_equal(base.iloc[: k + 1], moved.iloc[: k + 1], check_freq=False)
    assert not base.iloc[k + 1 :].reset_index(drop=True).equals(moved.iloc[k + 1 :].reset_index(drop=True))
