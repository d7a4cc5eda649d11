"""Paper broker, guardrails, runtime store and notification sinks, each on hand-built candles and events."""

import json
import logging
import math
import sqlite3
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pandas as pd
import pytest

from core.errors import UserError
from trainer.runtime.broker import ClosedTrade, Fill, PaperBroker
from trainer.runtime.guardrails import Guardrails
from trainer.runtime.notify import LogSink, Notifier, WebhookSink, build_sinks
from trainer.runtime.store import RuntimeStore

T0 = pd.Timestamp("2024-03-01 00:00", tz="UTC")
HOUR = pd.Timedelta(hours=1)
ADJ = 5 / 2 / 1e4 + 2 / 1e4  # half of the 5 bps spread + 2 bps slippage, per side
FEE = 10 / 1e4


def candle(i: int, open_: float, close: float) -> dict:
    return {
        "timestamp": T0 + i * HOUR,
        "open": open_,
        "high": max(open_, close) + 1,
        "low": min(open_, close) - 1,
        "close": close,
    }


def broker() -> PaperBroker:
    return PaperBroker(start_equity=10_000.0, fee_bps=10, spread_bps=5, slippage_bps=2)


# broker


def test_long_fills_at_next_open_with_costs_and_closes_with_net_equal_gross_minus_costs():
    b = broker()
    assert b.on_candle("BTC", candle(0, 100.0, 101.0)) == []
    b.target("BTC", 1, 0.5, T0, "signal high")
    assert b.on_candle("BTC", candle(0, 100.0, 101.0)) == []  # the decision's own candle never fills it

    fills = b.on_candle("BTC", candle(1, 102.0, 104.0))
    buy_price = 102.0 * (1 + ADJ)
    q = 5_000.0 / buy_price
    assert len(fills) == 1
    f = fills[0]
    assert (f.symbol, f.timestamp, f.side, f.reason) == ("BTC", T0 + HOUR, 1, "signal high")
    assert f.price == pytest.approx(102.0459)
    assert f.quantity == pytest.approx(q)
    assert f.cost == pytest.approx(5.0 + q * (buy_price - 102.0))
    assert b.cash == pytest.approx(10_000.0 - 5_000.0 - 5.0)
    assert b.equity == pytest.approx(4_995.0 + q * 104.0)  # marked to the close
    assert b.positions == {"BTC": (1, pytest.approx(q), 102.0, T0 + HOUR)}
    assert b.exposure() == pytest.approx(q * 104.0 / (4_995.0 + q * 104.0))

    b.target("BTC", 0, 0.0, T0 + HOUR, "horizon reached")
    (exit_fill,) = b.on_candle("BTC", candle(2, 106.0, 90.0))
    sell_price = 106.0 * (1 - ADJ)
    assert exit_fill.side == -1 and exit_fill.price == pytest.approx(105.9523)
    assert exit_fill.cost == pytest.approx(q * sell_price * FEE + q * (106.0 - sell_price))
    (trade,) = b.closed_trades
    assert isinstance(trade, ClosedTrade)
    assert (trade.side, trade.entry_price, trade.exit_price, trade.reason) == (1, 102.0, 106.0, "horizon reached")
    assert (trade.entry_time, trade.exit_time) == (T0 + HOUR, T0 + 2 * HOUR)
    assert trade.gross_pnl == pytest.approx(q * 4.0)
    assert trade.costs == pytest.approx(f.cost + exit_fill.cost)
    assert trade.net_pnl == pytest.approx(trade.gross_pnl - trade.costs)
    assert b.equity == pytest.approx(10_000.0 + trade.net_pnl)  # the close of 90 no longer matters
    assert b.positions == {} and b.exposure() == 0.0
    assert [x.side for x in b.fills] == [1, -1]


def test_short_profits_when_price_falls_and_marks_to_close():
    b = broker()
    b.on_candle("ETH", candle(0, 100.0, 100.0))
    b.target("ETH", -1, 0.5, T0, "signal")
    (sell,) = b.on_candle("ETH", candle(1, 100.0, 95.0))
    q = 5_000.0 / (100.0 * (1 - ADJ))
    assert sell.side == -1 and sell.quantity == pytest.approx(q)
    assert b.positions["ETH"][:2] == (-1, pytest.approx(q))
    assert b.equity == pytest.approx(10_000.0 + 5_000.0 - 5.0 - q * 95.0)
    assert b.equity > 10_000.0
    b.target("ETH", 0, 0.0, T0 + HOUR, "exit")
    b.on_candle("ETH", candle(2, 90.0, 91.0))
    (trade,) = b.closed_trades
    assert trade.side == -1
    assert trade.gross_pnl == pytest.approx(q * 10.0)
    assert trade.net_pnl == pytest.approx(trade.gross_pnl - trade.costs) and trade.net_pnl > 0
    assert b.equity == pytest.approx(10_000.0 + trade.net_pnl)


def test_reversal_closes_the_long_and_opens_a_short_at_the_same_open():
    b = broker()
    b.on_candle("BTC", candle(0, 100.0, 100.0))
    b.target("BTC", 1, 0.5, T0, "long")
    b.on_candle("BTC", candle(1, 100.0, 105.0))
    q_long = b.positions["BTC"][1]
    equity_at_decision = b.equity
    b.target("BTC", -1, 0.5, T0 + HOUR, "short")
    fills = b.on_candle("BTC", candle(2, 110.0, 108.0))
    assert [(f.side, f.reason) for f in fills] == [(-1, "short"), (-1, "short")]
    assert fills[0].quantity == pytest.approx(q_long)
    q_short = 0.5 * equity_at_decision / (110.0 * (1 - ADJ))
    assert fills[1].quantity == pytest.approx(q_short)
    (trade,) = b.closed_trades
    assert trade.side == 1 and trade.gross_pnl == pytest.approx(q_long * 10.0)
    assert b.positions == {"BTC": (-1, pytest.approx(q_short), 110.0, T0 + 2 * HOUR)}
    # cash accounting: start + round trip net + short proceeds - fee, marked at the close
    cash = 10_000.0 + trade.net_pnl + q_short * 110.0 * (1 - ADJ) * (1 - FEE)
    assert b.equity == pytest.approx(cash - q_short * 108.0)


def test_same_side_target_keeps_the_position_and_newer_target_replaces_pending():
    b = broker()
    b.on_candle("BTC", candle(0, 100.0, 100.0))
    b.target("BTC", -1, 0.5, T0, "first")
    b.target("BTC", 1, 0.3, T0, "second")  # replaces the pending short
    (buy,) = b.on_candle("BTC", candle(1, 100.0, 100.0))
    assert buy.side == 1 and buy.reason == "second"
    assert buy.quantity == pytest.approx(3_000.0 / (100.0 * (1 + ADJ)))
    b.target("BTC", 1, 0.5, T0 + HOUR, "again")
    assert b.on_candle("BTC", candle(2, 101.0, 102.0)) == []
    assert b.positions["BTC"][1] == pytest.approx(buy.quantity) and b.closed_trades == []


def test_flatten_closes_every_position_at_its_next_open_and_cancels_pending_entries():
    b = broker()
    for sym in ("BTC", "ETH"):
        b.on_candle(sym, candle(0, 100.0, 100.0))
        b.target(sym, 1 if sym == "BTC" else -1, 0.2, T0, "signal")
        b.on_candle(sym, candle(1, 100.0, 100.0))
    b.target("SOL", 1, 0.2, T0 + HOUR, "signal")
    assert set(b.positions) == {"BTC", "ETH"}
    b.flatten(T0 + HOUR, "kill switch")
    assert b.on_candle("BTC", candle(1, 100.0, 100.0)) == []  # not before the next candle
    b.on_candle("BTC", candle(2, 120.0, 121.0))
    assert set(b.positions) == {"ETH"}
    b.on_candle("ETH", candle(2, 80.0, 79.0))
    assert b.on_candle("SOL", candle(2, 50.0, 50.0)) == []
    assert b.positions == {} and b.exposure() == 0.0
    trades = {t.symbol: t for t in b.closed_trades}
    assert set(trades) == {"BTC", "ETH"} and all(t.reason == "kill switch" for t in trades.values())
    assert trades["BTC"].exit_price == 120.0 and trades["ETH"].exit_price == 80.0
    assert b.equity == pytest.approx(10_000.0 + sum(t.net_pnl for t in trades.values()))


def test_broker_refuses_bad_orders_and_candles():
    b = broker()
    with pytest.raises(ValueError):
        b.target("BTC", 2, 0.5, T0, "x")
    with pytest.raises(ValueError):
        b.target("BTC", 1, -0.1, T0, "x")
    with pytest.raises(UserError):
        b.target("BTC", 1, 0.1, pd.Timestamp("2024-03-01"), "naive time")
    with pytest.raises(UserError):
        b.on_candle("BTC", candle(0, 0.0, 100.0))
    with pytest.raises(UserError, match="fee_bps"):
        PaperBroker(fee_bps=-1)


# guardrails


def test_daily_loss_halts_until_the_next_utc_day_and_is_reported_once():
    g = Guardrails(10_000.0, max_daily_loss=0.05, max_total_loss=0.20)
    day2 = T0 + pd.Timedelta(days=1)
    assert g.check(T0, 10_000.0) is None and g.allows_trading(T0)
    assert g.check(T0 + HOUR, 9_600.0) is None
    breach = g.check(T0 + 5 * HOUR, 9_400.0)
    assert breach is not None
    assert (breach.kind, breach.halt, breach.at, breach.equity) == ("daily_loss", "day", T0 + 5 * HOUR, 9_400.0)
    assert breach.limit == pytest.approx(9_500.0)
    assert not g.allows_trading(T0 + 23 * HOUR)
    assert g.check(T0 + 6 * HOUR, 9_300.0) is None  # reported once
    assert g.breaches == [breach]
    assert g.allows_trading(day2)
    # the new day starts from its first checked equity (9 300): its floor is 8 835
    assert g.check(day2, 9_300.0) is None and g.check(day2 + HOUR, 8_900.0) is None
    assert g.allows_trading(day2 + HOUR)
    second = g.check(day2 + 2 * HOUR, 8_800.0)
    assert (second.kind, second.limit) == ("daily_loss", pytest.approx(8_835.0))
    assert not g.allows_trading(day2 + 3 * HOUR) and g.allows_trading(day2 + pd.Timedelta(days=1))
    assert len(g.breaches) == 2


def test_total_loss_halts_forever_and_is_reported_once():
    g = Guardrails(10_000.0, max_daily_loss=0.5, max_total_loss=0.10)
    assert g.check(T0, 10_000.0) is None
    breach = g.check(T0 + HOUR, 8_900.0)
    assert (breach.kind, breach.halt, breach.limit) == ("total_loss", "forever", pytest.approx(9_000.0))
    for later in (T0 + 2 * HOUR, T0 + pd.Timedelta(days=1), T0 + pd.Timedelta(days=30)):
        assert g.check(later, 8_000.0) is None
        assert not g.allows_trading(later)
    assert [b.kind for b in g.breaches] == ["total_loss"]


def test_total_breach_wins_over_daily_and_clamp_caps_the_fraction():
    g = Guardrails(10_000.0, max_daily_loss=0.05, max_total_loss=0.10, max_position=0.5)
    g.check(T0, 10_000.0)
    assert g.check(T0 + HOUR, 8_000.0).kind == "total_loss"
    assert len(g.breaches) == 1
    assert g.clamp_fraction(0.2) == 0.2
    assert g.clamp_fraction(0.8) == 0.5
    assert g.clamp_fraction(-0.3) == 0.0 and g.clamp_fraction(float("nan")) == 0.0
    assert len(g.breaches) == 1  # clamping without a time records nothing
    assert g.clamp_fraction(0.9, at=T0, equity=8_000.0) == 0.5
    assert (g.breaches[-1].kind, g.breaches[-1].halt) == ("position_size", "none")
    with pytest.raises(UserError, match="max_daily_loss"):
        Guardrails(10_000.0, max_daily_loss=1.5)


# store


def _fill(i: int) -> Fill:
    return Fill("BTC", T0 + i * HOUR, 1, 2.0, 100.5, 0.3, "signal")


def _trade(i: int, net: float) -> ClosedTrade:
    return ClosedTrade("BTC", 1, T0 + (i - 1) * HOUR, 100.0, T0 + i * HOUR, 101.0, 2.0, net + 0.5, 0.5, net, "exit")


def test_store_writes_sqlite_and_jsonl_and_windows_metrics(tmp_path):
    day2 = T0 + pd.Timedelta(days=1)
    store = RuntimeStore(tmp_path)
    store.signal(
        {"symbol": "BTC", "timestamp": T0.isoformat(), "status": "emitted", "tier": "high", "confidence": 0.71}
    )
    store.signal({"symbol": "BTC", "timestamp": day2, "status": "emitted", "tier": "medium", "confidence": 0.6})
    store.signal(
        {
            "symbol": "BTC",
            "timestamp": day2 + HOUR,
            "status": "below_threshold",
            "tier": None,
            "confidence": float("nan"),
        }
    )
    store.fill(_fill(1))
    store.fill(_fill(25))
    store.trade(_trade(2, 10.0))
    store.trade(_trade(26, -4.0))
    store.trade(_trade(27, 6.0))
    for at, eq in ((T0, 10_000.0), (T0 + 12 * HOUR, 11_000.0), (day2, 9_900.0), (day2 + 12 * HOUR, 10_450.0)):
        store.equity(at, eq, 0.2)
    store.event("guardrail", T0 + 3 * HOUR, {"kind": "daily_loss", "equity": 9_400.0})
    store.event("guardrail", day2 + 2 * HOUR, {"kind": "total_loss", "at": day2})
    store.event("kill_switch", day2 + 3 * HOUR, {"source": "kill file"})

    con = sqlite3.connect(tmp_path / "runtime.db")
    counts = {
        t: con.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0]
        for t in ("signals", "fills", "trades", "equity", "events")
    }
    assert counts == {"signals": 3, "fills": 2, "trades": 3, "equity": 4, "events": 3}
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert con.execute("SELECT at FROM fills ORDER BY id").fetchone()[0] == "2024-03-01T01:00:00.000000+00:00"
    con.close()
    lines = {
        name: [json.loads(x) for x in (tmp_path / f"{name}.jsonl").read_text().splitlines()]
        for name in ("signals", "trades", "events")
    }
    assert [len(v) for v in lines.values()] == [3, 3, 3]
    assert lines["signals"][2]["confidence"] is None and lines["signals"][1]["tier"] == "medium"
    assert lines["trades"][0]["net_pnl"] == 10.0 and lines["trades"][0]["exit_time"].startswith("2024-03-01T02:00")
    assert lines["events"][1] == {
        "kind": "guardrail",
        "at": "2024-03-02T02:00:00.000000+00:00",
        "detail": {"kind": "total_loss", "at": "2024-03-02T00:00:00+00:00"},
    }

    now = day2 + 12 * HOUR
    recent = store.metrics(pd.Timedelta("24h"), now=now)
    assert recent["signals"] == {
        "total": 2,
        "emitted": 1,
        "by_tier": {"medium": 1, "none": 1},
        "by_status": {"emitted": 1, "below_threshold": 1},
    }
    assert (recent["trades"], recent["wins"], recent["losses"]) == (2, 1, 1)
    assert recent["win_rate"] == 0.5 and recent["net_pnl"] == pytest.approx(2.0)
    assert recent["fills"] == 1
    assert recent["return"] == pytest.approx(10_450.0 / 11_000.0 - 1)  # from the equity at the window start
    assert recent["max_drawdown"] == pytest.approx(1 - 9_900.0 / 11_000.0)
    assert recent["breaches"] == {"total": 1, "by_kind": {"total_loss": 1}}
    assert recent["kill_switch_events"] == 1

    everything = store.metrics()
    assert everything["signals"]["total"] == 3 and everything["trades"] == 3
    assert everything["net_pnl"] == pytest.approx(12.0) and everything["return"] == pytest.approx(0.045)
    assert everything["breaches"]["by_kind"] == {"daily_loss": 1, "total_loss": 1}
    assert store.metrics(pd.Timedelta("24h")) == recent  # `now` defaults to the newest stored time

    path = store.export_metrics(tmp_path / "out" / "metrics.json", pd.Timedelta("24h"), now=now)
    assert json.loads(path.read_text()) == json.loads(json.dumps(recent))
    assert [p.name for p in path.parent.iterdir()] == ["metrics.json"]  # no temp file left behind
    store.close()
    reopened = RuntimeStore(tmp_path)  # a second session in the same folder appends
    reopened.event("note", T0, {})
    assert reopened.metrics()["events"] == {"guardrail": 2, "kill_switch": 1, "note": 1}
    reopened.close()


# notify


def test_log_sink_level_and_notifier_survives_a_failing_sink(caplog):
    def broken(event):
        raise RuntimeError("sink down")

    seen = []
    notifier = Notifier([broken, LogSink(), seen.append])
    with caplog.at_level(logging.INFO, logger="candlelab.runtime"):
        notifier.notify("guardrail", "daily_loss", level="warning", equity=9_400.0)
        notifier.notify("signal", "BTC long")
    levels = {
        r.getMessage().split(":")[0]: r.levelno
        for r in caplog.records
        if r.name == "candlelab.runtime" and not r.getMessage().startswith("notify")
    }
    assert levels == {"guardrail": logging.WARNING, "signal": logging.INFO}
    assert [e["kind"] for e in seen] == ["guardrail", "signal"] and seen[0]["equity"] == 9_400.0


def test_build_sinks_from_config():
    assert [type(s) for s in build_sinks({"sinks": ["log"]})] == [LogSink]
    sinks = build_sinks({"sinks": ["log", "webhook"], "webhook_url": "http://127.0.0.1:9/hook"})
    assert [type(s) for s in sinks] == [LogSink, WebhookSink]
    with pytest.raises(UserError) as err:
        build_sinks({"sinks": ["log", "pager"]})
    assert err.value.where == "runtime.notify.sinks"
    with pytest.raises(UserError, match="webhook_url"):
        build_sinks({"sinks": ["webhook"], "webhook_url": None})


def test_webhook_to_an_unreachable_url_logs_and_does_not_raise(caplog):
    sink = WebhookSink("http://127.0.0.1:9/", timeout=2.0)
    with caplog.at_level(logging.WARNING, logger="candlelab.runtime"):
        sink({"kind": "trade", "level": "info", "message": "closed"})
    assert any("webhook" in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)


def test_webhook_posts_the_event_as_json():
    received = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            length = int(self.headers["Content-Length"])
            received.append((self.path, self.headers["Content-Type"], self.rfile.read(length)))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/hook"
        Notifier(build_sinks({"sinks": ["webhook"], "webhook_url": url})).notify(
            "trade", "BTC closed", level="warning", symbol="BTC", net=1.5, at=T0, ratio=math.inf
        )
    finally:
        server.shutdown()
        server.server_close()
    ((path, content_type, body),) = received
    assert (path, content_type) == ("/hook", "application/json")
    event = json.loads(body)
    assert {k: event[k] for k in ("kind", "message", "level", "symbol", "net", "at", "ratio")} == {
        "kind": "trade",
        "message": "BTC closed",
        "level": "warning",
        "symbol": "BTC",
        "net": 1.5,
        "at": T0.isoformat(),
        "ratio": None,
    }
    assert "sent_at" in event
