"""Trading backtest: prices come from real candles, one position per symbol, honest costs and equity."""

import math

import numpy as np
import pandas as pd
import pytest
from omegaconf import OmegaConf

from core.errors import UserError
from trainer.backtest import backtest

STEP = pd.Timedelta(minutes=1)
T0 = pd.Timestamp("2024-01-01", tz="UTC")
FREE = {"fee_bps": 0, "spread_bps": 0, "slippage_bps": 0}


def make_candles(n: int, seed: int, drift: float = 0.0, vol: float = 1e-3, start: float = 100.0) -> pd.DataFrame:
    """A geometric random walk; each candle opens at the previous close."""
    rng = np.random.default_rng(seed)
    price = start * np.exp(np.cumsum(np.r_[0.0, drift + vol * rng.standard_normal(n)]))
    open_, close = price[:-1], price[1:]
    wick = 1.0 + 0.2 * vol * rng.random(n)
    return pd.DataFrame(
        {
            "timestamp": T0 + STEP * np.arange(n),
            "open": open_,
            "high": np.maximum(open_, close) * wick,
            "low": np.minimum(open_, close) / wick,
            "close": close,
            "volume": rng.random(n) * 10,
        }
    )


def random_signals(candles: dict[str, pd.DataFrame], seed: int, every: int = 1) -> pd.DataFrame:
    """Random probabilities at every `every`-th candle of each symbol, rows shuffled across symbols."""
    rng = np.random.default_rng(seed)
    parts = []
    for sym, c in candles.items():
        ts = c["timestamp"].iloc[::every]
        parts.append(
            pd.DataFrame(
                {
                    "symbol": sym,
                    "timestamp": ts.to_numpy(),
                    "p_long": rng.random(len(ts)),
                    "p_short": rng.random(len(ts)),
                }
            )
        )
    sig = pd.concat(parts, ignore_index=True)
    return sig.sample(frac=1.0, random_state=seed).reset_index(drop=True)


def constant_signals(c: pd.DataFrame, sym: str, side: int) -> pd.DataFrame:
    p = np.full(len(c), 0.9)
    return pd.DataFrame(
        {
            "symbol": sym,
            "timestamp": c["timestamp"],
            "p_long": p if side > 0 else 1 - p,
            "p_short": 1 - p if side > 0 else p,
        }
    )


@pytest.fixture(scope="module")
def walk() -> dict[str, pd.DataFrame]:
    return {"BTC": make_candles(5000, 1), "ETH": make_candles(5000, 2, start=2000.0)}


def test_prices_are_the_candle_opens_at_entry_and_exit(walk):
    horizon = 4
    res = backtest(random_signals(walk, 3), walk, STEP, horizon, {"threshold": 0.55})
    opens = {(sym, ts): o for sym, c in walk.items() for ts, o in zip(c["timestamp"], c["open"])}
    tr = res.trades
    assert len(tr) > 300
    for row in tr.itertuples():
        assert row.entry_time == row.signal_time + STEP
        assert row.exit_time == row.signal_time + (horizon + 1) * STEP
        assert row.entry_price == opens[(row.symbol, row.signal_time + STEP)]
        assert row.exit_price == opens[(row.symbol, row.signal_time + (horizon + 1) * STEP)]
        expected = (row.exit_price / row.entry_price - 1) * row.side
        assert row.gross_return == pytest.approx(expected, rel=1e-12, abs=1e-15)
    assert np.allclose(tr["net_return"], tr["gross_return"] - tr["cost"])
    assert list(tr.columns) == [
        "symbol",
        "side",
        "signal_time",
        "entry_time",
        "entry_price",
        "exit_time",
        "exit_price",
        "gross_return",
        "cost",
        "net_return",
    ]
    assert list(res.equity.columns) == ["timestamp", "equity", "drawdown"]


def test_random_signals_on_a_random_walk_win_about_half_and_costs_hurt(walk):
    sig = random_signals(walk, 4)
    free = backtest(sig, walk, STEP, 3, {**FREE, "threshold": 0.5})
    paid = backtest(sig, walk, STEP, 3, {"threshold": 0.5, "fee_bps": 10, "spread_bps": 5, "slippage_bps": 2})
    m = free.metrics
    assert m["n_trades"] > 1000
    assert 0.35 <= m["win_rate"] <= 0.6
    assert m["long_trades"] > 300 and m["short_trades"] > 300
    assert m["long_trades"] + m["short_trades"] == m["n_trades"]
    # same trades, same prices: only the costs differ
    assert paid.trades["gross_return"].equals(free.trades["gross_return"])
    assert paid.trades["net_return"].sum() < free.trades["net_return"].sum()
    assert paid.metrics["total_return"] < m["total_return"]
    assert paid.metrics["win_rate"] < m["win_rate"]
    assert paid.metrics["costs_paid"] == pytest.approx(m["n_trades"] * 0.0029 / 2)
    assert m["costs_paid"] == 0.0


def test_always_long_on_a_falling_market_loses_every_trade():
    """The replaced evaluator priced exits as a multiple of the entry and won 100%: here the market decides."""
    c = make_candles(2000, 5, drift=-2e-3, vol=1e-4)
    assert np.all(np.diff(c["open"]) < 0)
    res = backtest(constant_signals(c, "BTC", +1), {"BTC": c}, STEP, 2, FREE)
    m = res.metrics
    assert m["n_trades"] > 500 and m["long_trades"] == m["n_trades"]
    assert m["win_rate"] == 0.0
    assert (res.trades["net_return"] < 0).all()
    assert m["profit_factor"] == 0.0 and m["no_losing_trades"] is False
    assert m["total_return"] < -0.5
    assert m["max_drawdown"] == pytest.approx(-m["total_return"])


def test_oracle_wins_every_trade_for_free_and_fewer_once_costs_exceed_the_moves(walk):
    horizon = 3
    parts = []
    for sym, c in walk.items():
        o = c["open"].to_numpy()
        up = np.full(len(o), np.nan)
        up[: -(horizon + 1)] = np.sign(o[horizon + 1 :] - o[1:-horizon])  # open at exit vs open at entry
        parts.append(
            pd.DataFrame(
                {
                    "symbol": sym,
                    "timestamp": c["timestamp"],
                    "p_long": np.where(up > 0, 0.9, 0.1),
                    "p_short": np.where(up < 0, 0.9, 0.1),
                }
            )
        )
    sig = pd.concat(parts, ignore_index=True)
    free = backtest(sig, walk, STEP, horizon, FREE)
    m = free.metrics
    assert m["n_trades"] > 1000 and m["long_trades"] > 300 and m["short_trades"] > 300
    assert m["win_rate"] == 1.0
    assert m["no_losing_trades"] is True and m["profit_factor"] is None
    assert m["total_return"] > 0 and m["sharpe"] > 0
    # 2 * 100 bps per side dwarfs ~0.2% moves
    costly = backtest(sig, walk, STEP, horizon, {"fee_bps": 100, "spread_bps": 0, "slippage_bps": 0})
    assert costly.metrics["win_rate"] < 0.05
    assert costly.metrics["total_return"] < 0
    assert costly.trades["gross_return"].equals(free.trades["gross_return"])
    assert np.allclose(costly.trades["cost"], 0.02)


def test_trades_needing_a_missing_candle_are_skipped_and_counted(walk):
    rng = np.random.default_rng(6)
    c = walk["BTC"]
    holes = rng.choice(np.arange(10, len(c) - 10), size=300, replace=False)
    gappy = c.drop(index=holes).reset_index(drop=True)
    missing = set(c["timestamp"].iloc[holes])
    horizon = 3
    sig = random_signals({"BTC": c}, 7)  # signals on every original candle, including the missing ones
    res = backtest(sig, {"BTC": gappy}, STEP, horizon, {**FREE, "threshold": 0.5})
    tr = res.trades
    assert not set(tr["entry_time"]) & missing and not set(tr["exit_time"]) & missing

    # independent walk: one position at a time, skip when the entry or exit candle is absent
    sig = sig.sort_values("timestamp")
    busy_until, taken, skipped, ignored = None, [], 0, 0
    for row in sig.itertuples():
        side = (
            1
            if row.p_long >= 0.5 and row.p_long > row.p_short
            else -1
            if (row.p_short >= 0.5 and row.p_short > row.p_long)
            else 0
        )
        if side == 0:
            continue
        if busy_until is not None and row.timestamp < busy_until:
            ignored += 1
        elif (
            row.timestamp + STEP in missing
            or row.timestamp + (horizon + 1) * STEP in missing
            or (row.timestamp + (horizon + 1) * STEP > c["timestamp"].iloc[-1])
        ):
            skipped += 1
        else:
            taken.append(row.timestamp)
            busy_until = row.timestamp + (horizon + 1) * STEP
    assert res.metrics["skipped_gap"] == skipped > 50
    assert res.metrics["ignored_while_in_position"] == ignored
    assert list(tr["signal_time"]) == taken


def test_one_position_per_symbol_at_a_time(walk):
    horizon = 5
    sig = random_signals(walk, 8)
    sig["p_long"] = np.where(sig["p_long"] > 0.5, 0.8, 0.2)
    sig["p_short"] = 1 - sig["p_long"]  # every candle carries a long or short signal
    res = backtest(sig, walk, STEP, horizon, FREE)
    for sym, c in walk.items():
        tr = res.trades[res.trades["symbol"] == sym].sort_values("entry_time")
        n = (sig["symbol"] == sym).sum()
        assert 0 < len(tr) <= math.ceil(n / (horizon + 1))
        assert (tr["entry_time"].iloc[1:].to_numpy() > tr["exit_time"].iloc[:-1].to_numpy()).all()
    assert res.metrics["ignored_while_in_position"] >= len(sig) - res.metrics["n_trades"] - 2 * (horizon + 1)
    assert res.metrics["ignored_while_in_position"] > 0


def test_signal_order_does_not_matter(walk):
    sig = random_signals(walk, 9)
    a = backtest(sig, walk, STEP, 2, {})
    b = backtest(sig.sort_values(["symbol", "timestamp"]).reset_index(drop=True), walk, STEP, 2, {})
    pd.testing.assert_frame_equal(a.trades, b.trades)
    pd.testing.assert_frame_equal(a.equity, b.equity)


def two_symbol_case() -> tuple[dict, pd.DataFrame]:
    """A long on A (100 -> 110 -> 99) and a short on B (50 -> 55 -> 45), horizon 2, both signalled at t0."""
    ts = T0 + STEP * np.arange(5)
    a = pd.DataFrame({"timestamp": ts, "open": [100.0, 100, 110, 99, 99]})
    b = pd.DataFrame({"timestamp": ts, "open": [50.0, 50, 55, 45, 45]})
    for c in (a, b):
        c["close"] = c["open"].shift(-1).fillna(c["open"])
        c["high"], c["low"], c["volume"] = c[["open", "close"]].max(1), c[["open", "close"]].min(1), 1.0
    sig = pd.DataFrame({"symbol": ["A", "B"], "timestamp": [ts[0], ts[0]], "p_long": [0.9, 0.1], "p_short": [0.1, 0.9]})
    return {"A": a, "B": b}, sig


def test_equity_of_two_symbols_is_the_mean_of_their_bar_returns():
    candles, sig = two_symbol_case()
    res = backtest(sig, candles, STEP, 2, FREE)
    tr = res.trades.set_index("symbol")
    assert tr.loc["A", "gross_return"] == pytest.approx(-0.01)
    assert tr.loc["B", "gross_return"] == pytest.approx(0.1)  # (50 - 45) / 50
    # A long marks 1.10, 0.99 (bar returns +0.1, -0.1); B short marks 0.90, 1.10 (-0.1, +0.2222)
    bar = [(0.1 - 0.1) / 2, (0.99 / 1.1 - 1 + 1.1 / 0.9 - 1) / 2]
    eq = res.equity
    assert list(eq["timestamp"]) == list(T0 + STEP * np.arange(1, 4))
    assert np.allclose(eq["equity"], [1.0, 1.0 + bar[0], (1.0 + bar[0]) * (1 + bar[1])])
    m = res.metrics
    assert m["total_return"] == pytest.approx(eq["equity"].iloc[-1] - 1)
    assert m["exposure"] == 1.0
    assert m["turnover"] == pytest.approx(2 * 2 / 2 / 2 * 365 * 24 * 60)
    assert m["n_bars"] == 2 and m["win_rate"] == 0.5

    # with costs: the round trip is charged on the exit bar, so each sleeve compounds to 1 + net
    paid = backtest(sig, candles, STEP, 2, {"fee_bps": 10, "spread_bps": 0, "slippage_bps": 0})
    assert np.allclose(paid.trades["cost"], 0.002)
    bar_paid = [bar[0], (0.988 / 1.1 - 1 + 1.098 / 0.9 - 1) / 2]
    assert np.allclose(paid.equity["equity"], np.cumprod([1.0, 1 + bar_paid[0], 1 + bar_paid[1]]))
    assert paid.metrics["costs_paid"] == pytest.approx(0.002)


def test_equity_drawdown_and_ratios_match_a_recomputation(walk):
    res = backtest(random_signals(walk, 10), walk, STEP, 4, {})
    eq = res.equity["equity"].to_numpy()
    m = res.metrics
    assert eq[0] == 1.0 and m["total_return"] == pytest.approx(eq[-1] - 1.0)
    peak = np.maximum.accumulate(eq)
    assert m["max_drawdown"] == pytest.approx(np.max((peak - eq) / peak)) and m["max_drawdown"] > 0
    assert np.allclose(res.equity["drawdown"], 1 - eq / peak)
    r = eq[1:] / eq[:-1] - 1
    ppy = 365 * 24 * 60
    assert m["sharpe"] == pytest.approx(r.mean() / r.std(ddof=1) * np.sqrt(ppy))
    assert m["sortino"] == pytest.approx(r.mean() / np.sqrt(np.mean(np.minimum(r, 0) ** 2)) * np.sqrt(ppy))
    assert 0 < m["exposure"] < 1
    assert res.equity["timestamp"].is_monotonic_increasing
    assert res.equity["timestamp"].iloc[0] == walk["BTC"]["timestamp"].iloc[0] + STEP
    assert res.equity["timestamp"].iloc[-1] == max(res.trades["exit_time"].max(), walk["BTC"]["timestamp"].iloc[-1])
    assert m["periods_per_year"] == ppy
    daily = backtest(random_signals(walk, 10), walk, STEP, 4, {"periods_per_year": 252}).metrics
    assert daily["sharpe"] == pytest.approx(r.mean() / r.std(ddof=1) * np.sqrt(252))


def test_spread_from_signals_when_finite_else_spread_bps(walk):
    sig = random_signals(walk, 11)
    rng = np.random.default_rng(11)
    sig["spread"] = np.where(rng.random(len(sig)) < 0.5, np.nan, rng.random(len(sig)) * 1e-3)
    cfg = {"fee_bps": 10, "slippage_bps": 2, "spread_bps": 5}
    res = backtest(sig, walk, STEP, 3, cfg)
    spread = sig.set_index(["symbol", "timestamp"])["spread"]
    used = spread.loc[list(zip(res.trades["symbol"], res.trades["signal_time"]))].to_numpy()
    expected = 2 * (10 + 2) / 1e4 + np.where(np.isfinite(used), used, 5 / 1e4)
    assert np.isnan(used).any() and np.isfinite(used).any()
    assert np.allclose(res.trades["cost"], expected)
    ca = res.metrics["cost_assumptions"]
    assert ca["spread_source"] == "mixed" and ca["trades_with_signal_spread"] == int(np.isfinite(used).sum())
    no_column = backtest(sig.drop(columns="spread"), walk, STEP, 3, cfg)
    assert np.allclose(no_column.trades["cost"], 2 * 12 / 1e4 + 5 / 1e4)
    assert no_column.metrics["cost_assumptions"]["spread_source"] == "cfg"


def test_threshold_ties_and_allow_short(walk):
    c = walk["BTC"].iloc[:200]
    sig = pd.DataFrame({"symbol": "BTC", "timestamp": c["timestamp"], "p_long": 0.6, "p_short": 0.6})
    assert backtest(sig, {"BTC": c}, STEP, 2, {}).metrics["n_trades"] == 0  # a tie is no signal
    sig["p_long"], sig["p_short"] = 0.3, 0.56
    assert backtest(sig, {"BTC": c}, STEP, 2, {"threshold": 0.55}).metrics["short_trades"] > 0
    none = backtest(sig, {"BTC": c}, STEP, 2, OmegaConf.create({"threshold": 0.55, "allow_short": False}))
    m = none.metrics
    assert m["n_trades"] == 0 and m["win_rate"] is None and m["sharpe"] is None and m["profit_factor"] is None
    assert m["total_return"] == 0.0 and m["max_drawdown"] == 0.0 and m["exposure"] == 0.0
    assert backtest(sig, {"BTC": c}, STEP, 2, {"threshold": 0.57}).metrics["n_trades"] == 0


@pytest.mark.parametrize(
    "key,value",
    [
        ("threshold", 0.4),
        ("threshold", 1.2),
        ("threshold", "high"),
        ("fee_bps", -1),
        ("spread_bps", -0.5),
        ("slippage_bps", float("nan")),
        ("periods_per_year", 0),
        ("allow_short", "yes"),
    ],
)
def test_bad_config_values_raise_user_error(walk, key, value):
    sig = random_signals(walk, 12, every=50)
    with pytest.raises(UserError) as err:
        backtest(sig, walk, STEP, 2, OmegaConf.create({key: value}))
    assert err.value.where == f"eval.trading.{key}"


def test_bad_inputs_raise_user_error(walk):
    sig = random_signals(walk, 13, every=50)
    with pytest.raises(UserError, match="no candles"):
        backtest(sig, {"BTC": walk["BTC"]}, STEP, 2, {})
    with pytest.raises(UserError, match="horizon"):
        backtest(sig, walk, STEP, 0, {})
    with pytest.raises(UserError, match="lack columns"):
        backtest(sig.drop(columns="p_short"), walk, STEP, 2, {})
    naive = sig.assign(timestamp=sig["timestamp"].dt.tz_localize(None))
    with pytest.raises(UserError, match="tz-aware"):
        backtest(naive, walk, STEP, 2, {})


def test_no_signals_is_an_empty_evaluation(walk):
    res = backtest(random_signals(walk, 14).iloc[:0], walk, STEP, 2, {})
    assert res.metrics["n_trades"] == 0 and res.metrics["win_rate"] is None and res.metrics["total_return"] == 0.0
    assert res.trades.empty and list(res.trades.columns)[:2] == ["symbol", "side"]
    assert res.equity.empty
