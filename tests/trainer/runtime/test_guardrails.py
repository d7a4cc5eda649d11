"""Guardrails hold what they promise: a late candle never moves the day back, gross exposure is capped, a gap
through a limit breaches on its candle with the overshoot reported, FTMO's rules as its rule book writes them
(worked examples, midnight CE(S)T across DST changes), and every breach the guardrails see is acted upon."""

import json
import os
import sqlite3
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from tests.conftest import ROOT, make_cfg
from trainer.runtime.broker import PaperBroker
from trainer.runtime.engine import KillSwitch, Runtime, live, replay
from trainer.runtime.guardrails import Guardrails
from trainer.runtime.notify import Notifier
from trainer.runtime.session import guardrails_from
from trainer.runtime.signals import Signal
from trainer.runtime.store import RuntimeStore

T0 = pd.Timestamp("2024-03-01 00:00", tz="UTC")
HOUR = pd.Timedelta(hours=1)
DAY = pd.Timedelta(days=1)


def utc(text: str) -> pd.Timestamp:
    return pd.Timestamp(text, tz="UTC")


def path(closes, start=T0, lows=None, highs=None) -> pd.DataFrame:
    """Hourly candles opening at the previous close; lows/highs default to the candle body."""
    c = np.asarray(closes, dtype=float)
    o = np.r_[c[0], c[:-1]]
    low = np.minimum(o, c) if lows is None else np.asarray(lows, dtype=float)
    high = np.maximum(o, c) if highs is None else np.asarray(highs, dtype=float)
    return pd.DataFrame(
        {
            "timestamp": pd.date_range(start, periods=len(c), freq="1h", tz="UTC"),
            "open": o,
            "high": high,
            "low": low,
            "close": c,
            "volume": 1.0,
        }
    )


class Scripted:
    """Signals from a schedule {(symbol, candle time): side}; ``always`` is the side of every other candle."""

    def __init__(self, schedule=None, always=0, on_call=None):
        self.schedule, self.always, self.on_call = dict(schedule or {}), always, on_call
        self.calls = 0

    def on_candle(self, symbol, history):
        self.calls += 1
        if self.on_call:
            self.on_call(self.calls)
        at = pd.Timestamp(history["timestamp"].iloc[-1])
        side = self.schedule.get((symbol, at), self.always)
        if not side:
            return Signal(symbol, at, 0.5, 0.5, 0, 0.5, None, 1000, {}, "below_threshold")
        p = 0.8 if side > 0 else 0.2
        return Signal(symbol, at, p, 1 - p, side, 0.8, "high", 1000, {"scripted": p}, "emitted")


def session(tmp_path, engine, guard, fraction, equity=10_000.0):
    store = RuntimeStore(tmp_path)
    broker = PaperBroker(equity, fee_bps=0, spread_bps=0, slippage_bps=0)
    notes = []
    rt = Runtime(
        engine,
        HOUR,
        store,
        Notifier([notes.append]),
        KillSwitch(tmp_path / "KILL", None),
        True,
        broker,
        guard,
        fraction,
    )
    return rt, store, broker, notes


def stored(tmp_path, kind: str) -> list[dict]:
    events = [json.loads(x) for x in (tmp_path / "events.jsonl").read_text().splitlines()]
    return [e for e in events if e["kind"] == kind]


def ftmo(start_equity=100_000) -> Guardrails:
    """The shipped preset, composed as `runtime/guardrails=ftmo` on the command line composes it."""
    return guardrails_from(make_cfg("runtime/guardrails=ftmo", f"runtime.broker.start_equity={start_equity}").runtime)


# a late candle never moves the day back


def test_a_late_candle_does_not_move_the_day_back_or_reset_its_start():
    g = Guardrails(10_000.0, max_daily_loss=0.05, max_total_loss=0.20)
    day2 = T0 + DAY
    assert g.check(day2, 10_000.0) is None  # day 2 starts at 10 000
    assert g.check(day2 - HOUR, 9_600.0) is None  # a day-1 candle that arrived late
    breach = g.check(day2 + HOUR, 9_200.0)  # 8% under the day's start
    assert breach is not None and (breach.kind, breach.limit) == ("daily_loss", pytest.approx(9_500.0))
    assert g.day_start_equity == 10_000.0
    assert not g.allows_trading(day2 - HOUR)  # the late candle's time is today, halted


def test_live_paper_with_a_lagging_symbol_still_breaches_an_8_percent_daily_loss(tmp_path):
    # BTC falls 10% then 8.9% on day 2 while long 0.45 of equity: 8.1% under the day's start over two candles;
    # ETH (flat) delivers its day-1 candles late, between them
    btc = path([100.0] * 24 + [90.0, 82.0] + [82.0] * 4)
    eth = path([100.0] * 30)
    guard = Guardrails(10_000.0, max_daily_loss=0.05, max_total_loss=0.10)
    rt, store, broker, notes = session(tmp_path, Scripted(always=1), guard, fraction=0.45)
    polls = iter(
        [
            {"BTC": btc.iloc[:22], "ETH": eth.iloc[:22]},
            {"BTC": btc.iloc[:25], "ETH": eth.iloc[:22]},  # BTC reaches day 2, ETH lags
            {"BTC": btc.iloc[:26], "ETH": eth.iloc[:24]},  # ETH's 22:00 and 23:00 of day 1 arrive
            {"BTC": btc.iloc[:27], "ETH": eth.iloc[:27]},
        ]
    )
    live(rt, lambda: next(polls), 50, 0.0, 4, lambda s: None)
    daily = [b for b in guard.breaches if b.kind == "daily_loss"]
    assert daily, "an 8% daily loss must breach"
    assert daily[0].at == T0 + 25 * HOUR and daily[0].limit == pytest.approx(9_500.0)
    assert daily[0].reached_loss == pytest.approx(10_000.0 - daily[0].equity)
    assert broker.equity < 9_500.0 and broker.positions == {}
    store.close()
    with sqlite3.connect(tmp_path / "runtime.db") as db:
        marks = [pd.Timestamp(r[0]) for r in db.execute("SELECT at FROM equity ORDER BY id")]
    assert marks == sorted(marks)  # the session's time never went back
    assert [e["detail"]["kind"] for e in stored(tmp_path, "guardrail")] == ["daily_loss"]


# gross exposure


def test_orders_beyond_the_gross_exposure_cap_are_refused(tmp_path):
    flat = path([100.0] * 6)
    guard = Guardrails(10_000.0)  # max_position 0.5, max_gross_exposure 1.0
    rt, store, broker, _ = session(tmp_path, Scripted(always=1), guard, fraction=0.5)
    replay(rt, {s: flat for s in ("BTC", "ETH", "SOL", "BNB")}, T0, None, history=50)
    assert sorted(broker.positions) == ["BTC", "ETH"]  # 2 x 0.5 = the cap; SOL and BNB refused
    assert broker.cash >= -1e-9 and broker.exposure() <= 1.0 + 1e-12
    assert {b.kind for b in guard.breaches} == {"gross_exposure"}
    store.close()
    refused = stored(tmp_path, "order_refused")
    assert refused and {e["detail"]["symbol"] for e in refused} == {"SOL", "BNB"}
    assert all(e["detail"]["gross_exposure"] == pytest.approx(1.5) for e in refused)
    with sqlite3.connect(tmp_path / "runtime.db") as db:
        assert db.execute("SELECT MAX(exposure) FROM equity").fetchone()[0] <= 1.0 + 1e-12


def test_the_broker_reports_gross_exposure_after_an_order():
    b = PaperBroker(10_000.0, fee_bps=0, spread_bps=0, slippage_bps=0)
    b.target("BTC", 1, 0.5, T0, "signal")
    b.on_candle("BTC", path([100.0, 120.0]).iloc[1])  # 50 BTC filled at 100, marked at 120
    assert b.equity == pytest.approx(11_000.0)
    assert b.gross_exposure_after() == pytest.approx(6_000 / 11_000)
    assert b.gross_exposure_after("BTC", 1, 0.2) == pytest.approx(6_000 / 11_000)  # same side: kept as is
    assert b.gross_exposure_after("BTC", -1, 0.2) == pytest.approx(0.2)  # reversal: the new size
    assert b.gross_exposure_after("ETH", 1, 0.5) == pytest.approx(6_000 / 11_000 + 0.5)
    assert b.gross_exposure_after("BTC", 0, 0.0) == 0.0


# losses at the candle's adverse extreme


def test_a_gap_through_the_limit_breaches_on_that_candle_and_reports_the_overshoot(tmp_path):
    # fully long; a candle trades 15% under its open and closes 2% down: a 10% total limit is crossed inside it
    closes = [100.0, 100.0, 98.0, 98.0, 98.0]
    lows = [100.0, 100.0, 85.0, 98.0, 98.0]
    guard = Guardrails(10_000.0, max_daily_loss=0.5, max_total_loss=0.10, max_position=1.0)
    rt, store, broker, notes = session(tmp_path, Scripted({("BTC", T0): 1}), guard, fraction=1.0)
    replay(rt, {"BTC": path(closes, lows=lows)}, T0, None, history=50)
    assert [b.kind for b in guard.breaches] == ["total_loss"]
    breach = guard.breaches[0]
    assert breach.at == T0 + 2 * HOUR  # on the gap's candle, not later
    assert breach.equity == pytest.approx(8_500.0) and breach.close_equity == pytest.approx(9_800.0)
    assert breach.limit == pytest.approx(9_000.0)
    assert breach.reached_loss == pytest.approx(1_500.0) and breach.max_loss == pytest.approx(1_000.0)
    assert breach.overshoot == pytest.approx(500.0)
    assert "overshoot 500.00" in breach.detail
    (trade,) = broker.closed_trades  # flattened at the next open
    assert (trade.reason, trade.exit_time, trade.exit_price) == ("total_loss", T0 + 3 * HOUR, 98.0)
    store.close()
    (event,) = stored(tmp_path, "guardrail")
    assert event["detail"]["overshoot"] == pytest.approx(500.0) and event["detail"]["equity"] == pytest.approx(8_500.0)
    assert any(n["kind"] == "guardrail" for n in notes)


def test_a_short_is_checked_at_the_candle_high():
    b = PaperBroker(10_000.0, fee_bps=0, spread_bps=0, slippage_bps=0)
    b.target("ETH", -1, 0.5, T0, "signal")
    candle = {"timestamp": T0 + HOUR, "open": 100.0, "high": 130.0, "low": 99.0, "close": 101.0}
    b.on_candle("ETH", candle)
    assert b.equity == pytest.approx(10_000.0 - 50.0)
    assert b.adverse_equity(["ETH"]) == pytest.approx(10_000.0 - 50 * 30.0)
    assert b.adverse_equity([]) == pytest.approx(b.equity)  # no candle of its own this step: its close
    assert b.balance == pytest.approx(10_000.0)  # floating P&L is not in the balance


# FTMO, as the rule book writes it (100,000 account: 5% daily = 5,000; 10% maximum = 10,000)


def test_ftmo_daily_floor_is_the_day_start_less_5_percent_of_the_initial_balance():
    g = ftmo()
    day1, day2, day3 = utc("2024-03-05 00:00"), utc("2024-03-06 00:00"), utc("2024-03-07 00:00")
    assert g.check(day1, 100_000.0, balance=100_000.0) is None
    assert g.daily_floor == 95_000.0 and g.total_floor == 90_000.0
    assert g.check(day1 + 12 * HOUR, 101_000.0, balance=101_000.0) is None
    # the previous day closed at 101,000 (profit 1,000): today's floor is 96,000 (not 95,950)
    assert g.check(day2, 101_000.0, balance=101_000.0) is None
    assert g.daily_floor == 96_000.0
    assert g.check(day2 + 10 * HOUR, 98_000.0, balance=98_000.0) is None
    # the day started at 98,000: its floor is 93,000
    assert g.check(day3, 98_000.0, balance=98_000.0) is None
    assert g.daily_floor == 93_000.0
    assert g.check(day3 + HOUR, 93_000.5) is None
    breach = g.check(day3 + 2 * HOUR, 92_999.0)
    assert (breach.kind, breach.limit, breach.halt) == ("daily_loss", 93_000.0, "forever")
    assert breach.max_loss == 5_000.0 and breach.overshoot == pytest.approx(1.0)
    assert not g.allows_trading(day3 + 30 * DAY)  # a daily breach fails the account


def test_ftmo_maximum_loss_is_fixed_at_90_percent_of_the_initial_balance_whatever_the_profits():
    g = ftmo()
    day1 = utc("2024-03-05 00:00")
    g.check(day1, 100_000.0, balance=100_000.0)
    g.check(day1 + HOUR, 120_000.0, balance=120_000.0)
    g.check(day1 + DAY, 120_000.0, balance=120_000.0)
    assert g.total_floor == 90_000.0 and g.daily_floor == 115_000.0
    g = ftmo()
    g.check(day1, 100_000.0, balance=100_000.0)
    g.check(day1 + 5 * HOUR, 95_500.0, balance=95_500.0)
    g.check(day1 + DAY, 94_000.0, balance=94_000.0)  # the day starts at 94,000: daily floor 89,000
    assert g.daily_floor == 89_000.0
    breach = g.check(day1 + DAY + HOUR, 89_999.0)
    assert (breach.kind, breach.limit, breach.halt) == ("total_loss", 90_000.0, "forever")


def test_ftmo_floor_resets_at_midnight_from_the_balance_not_the_equity():
    # the rule book's overnight example (200,000 account): a day closed with 4,000 profit while carrying a
    # 13,000 floating loss is inside that day's limit, but breaches at midnight when the limit resets
    g = ftmo(200_000)
    monday = utc("2024-03-03 23:00")  # 00:00 CET on Monday 2024-03-04
    assert g.check(monday, 200_000.0, balance=200_000.0) is None
    assert g.check(monday + 20 * HOUR, 191_000.0, balance=204_000.0) is None  # floor 190,000
    breach = g.check(monday + DAY, 191_000.0, balance=204_000.0)
    assert (breach.kind, breach.limit, breach.at) == ("daily_loss", 194_000.0, monday + DAY)


def test_ftmo_day_rolls_at_midnight_prague_time_across_dst_changes():
    g = ftmo()
    # spring forward (2024-03-31 02:00 CET -> 03:00 CEST): the day of the 31st runs 23:00 -> 22:00 UTC
    assert g.check(utc("2024-03-30 22:30"), 100_000.0, balance=100_000.0) is None  # 23:30 CET, the 30th
    assert g.check(utc("2024-03-30 23:00"), 101_000.0, balance=101_000.0) is None  # 00:00 CET, the 31st
    assert g.daily_floor == 96_000.0
    assert g.check(utc("2024-03-31 21:59"), 98_000.0, balance=98_000.0) is None  # 23:59 CEST, the 31st
    assert g.daily_floor == 96_000.0
    assert g.check(utc("2024-03-31 22:00"), 98_000.0, balance=98_000.0) is None  # 00:00 CEST, April 1st
    assert g.daily_floor == 93_000.0
    # fall back (2024-10-27 03:00 CEST -> 02:00 CET): the 27th is 25 hours long, 22:00 -> 23:00 UTC
    assert g.day_of(utc("2024-10-26 21:59")) == pd.Timestamp("2024-10-26").date()
    assert g.day_of(utc("2024-10-26 22:00")) == pd.Timestamp("2024-10-27").date()
    assert g.day_of(utc("2024-10-27 22:59")) == pd.Timestamp("2024-10-27").date()
    assert g.day_of(utc("2024-10-27 23:00")) == pd.Timestamp("2024-10-28").date()
    g.check(utc("2024-10-26 22:00"), 97_000.0, balance=97_000.0)
    g.check(utc("2024-10-27 22:30"), 99_000.0, balance=99_000.0)
    assert g.daily_floor == 92_000.0  # still the 27th: the day start has not moved
    g.check(utc("2024-10-27 23:00"), 99_000.0, balance=99_000.0)
    assert g.daily_floor == 94_000.0


def test_the_default_rules_are_unchanged_by_the_preset_group():
    g = guardrails_from(make_cfg().runtime)
    assert (g.max_daily_loss, g.max_total_loss, g.max_position, g.max_gross_exposure) == (0.05, 0.10, 0.5, 1.0)
    g.check(T0, 10_000.0)
    g.check(T0 + DAY, 10_100.0)
    assert g.daily_floor == pytest.approx(0.95 * 10_100.0)  # a fraction of the day's start, UTC days
    assert g.day_of(utc("2024-03-31 22:00")) == pd.Timestamp("2024-03-31").date()


def test_a_bad_guardrail_setting_is_refused_with_one_line_before_anything_loads(tmp_path):
    env = {**os.environ, "CANDLELAB_OUTPUT_DIR": str(tmp_path)}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "trainer.runtime",
            "mode=paper",
            "runtime/guardrails=ftmo",
            "runtime.guardrails.day_timezone=Mars/Olympus",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == (
        "error: 'Mars/Olympus' is not a time zone (an IANA name such "
        "as UTC or Europe/Prague) (runtime.guardrails.day_timezone)"
    )


# every breach is acted upon


def test_a_breach_at_the_start_of_a_candle_is_acted_upon_at_its_open(tmp_path):
    # FTMO overnight through the runtime: a long closes 2,000 up, the reversal short carries a 6,500 floating
    # loss into midnight CET; the first check of the new day (before its candle moves anything) breaches
    # and every position exits at that candle's open
    start = utc("2024-03-05 00:00")  # 01:00 CET; Prague midnight is 23:00 UTC
    closes = [100.0, 100.0, 102.0, 104.0, *np.linspace(104.0, 117.25, 19), *[117.25] * 5]
    schedule = {("BTC", start): 1, ("BTC", start + 3 * HOUR): -1}
    guard = ftmo()
    rt, store, broker, notes = session(tmp_path, Scripted(schedule), guard, fraction=0.5, equity=100_000.0)
    replay(rt, {"BTC": path(closes, start=start)}, start, None, history=50)
    midnight = utc("2024-03-05 23:00")
    (breach,) = guard.breaches
    assert (breach.kind, breach.at, breach.limit, breach.halt) == ("daily_loss", midnight, 97_000.0, "forever")
    assert breach.equity == pytest.approx(102_000.0 - 51_000.0 / 104.0 * 13.25)
    long_trade, short_trade = broker.closed_trades
    assert long_trade.net_pnl == pytest.approx(2_000.0)
    assert (short_trade.reason, short_trade.exit_time) == ("daily_loss", midnight)  # this candle's open
    assert all(f.timestamp <= midnight for f in broker.fills) and broker.positions == {}
    store.close()
    assert [e["detail"]["kind"] for e in stored(tmp_path, "guardrail")] == ["daily_loss"]
    assert [n["kind"] for n in notes].count("guardrail") == 1


def test_every_loss_breach_is_stored_and_notified_even_on_the_kill_switch_candle(tmp_path):
    # the kill file appears while candle 4 is read; candle 5 crashes 30% while long half the equity
    engine = Scripted(always=1, on_call=lambda n: (tmp_path / "KILL").touch() if n == 5 else None)
    guard = Guardrails(10_000.0)
    rt, store, broker, notes = session(tmp_path, engine, guard, fraction=0.5)
    replay(rt, {"BTC": path([100.0] * 5 + [70.0] * 5)}, T0, None, history=50)
    assert rt.stopped and broker.positions == {}
    store.close()
    losses = [b for b in guard.breaches if b.halt != "none"]
    assert [(e["detail"]["kind"], e["at"]) for e in stored(tmp_path, "guardrail")] == [
        (b.kind, b.at.strftime("%Y-%m-%dT%H:%M:%S.%f+00:00")) for b in losses
    ]  # each one stored
    assert [n["kind"] for n in notes].count("guardrail") == len(losses) == 1
    assert losses[0].kind == "total_loss" and losses[0].at == T0 + 5 * HOUR  # on the crash candle
