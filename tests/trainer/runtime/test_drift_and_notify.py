"""Drift alerts (live figures vs the test period's, stored, notified, optional halt) and the Telegram sink
(the Bot API request checked by a local server on 127.0.0.1; tiers; retries with backoff, never fatal)."""

import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from core.errors import UserError
from trainer.runtime.broker import PaperBroker
from trainer.runtime.drift import DriftMonitor, drift_monitor, reference_figures
from trainer.runtime.engine import KillSwitch, Runtime, replay
from trainer.runtime.guardrails import Guardrails
from trainer.runtime.notify import Notifier, TelegramSink, build_sinks, telegram_sink
from trainer.runtime.signals import Signal
from trainer.runtime.store import RuntimeStore

TOKEN, CHAT = "123456:TEST-token", "-100777"
TEST_PERIOD = {
    "win_rate": 0.60,
    "avg_trade_return": 0.002,
    "n_trades": 40,
    "ignored_while_in_position": 10,
    "n_bars": 500,
    "n_symbols": 1,
}


def test_reference_figures_are_the_served_models_weighted_test_period():
    a = SimpleNamespace(weight=0.75, trading=TEST_PERIOD)
    b = SimpleNamespace(weight=0.25, trading={**TEST_PERIOD, "win_rate": 0.40, "avg_trade_return": None})
    ref = reference_figures([a, b, SimpleNamespace(weight=1.0, trading=None)])
    assert ref["win_rate"] == pytest.approx(0.55) and ref["mean_return"] == pytest.approx(0.002)
    assert ref["signal_rate"] == pytest.approx(50 / 500)


def test_an_excursion_beyond_the_band_alerts_once_and_rearms_inside_it():
    monitor = DriftMonitor({"win_rate": 0.6}, {"win_rate": 0.05}, window_trades=10, min_trades=10)
    alerts = [monitor.on_trade(0.01 if i % 2 else -0.01) for i in range(10)]  # 50% win rate: 10 pp below
    assert [len(a) for a in alerts] == [0] * 9 + [1]  # judged only once the window holds min_trades
    (alert,) = alerts[-1]
    assert (alert.metric, alert.live, alert.reference, alert.window) == ("win_rate", 0.5, 0.6, 10)
    assert "win_rate 50.00% vs 60.00%" in alert.describe()
    assert monitor.on_trade(-0.01) == []  # still out: no second alert
    for _ in range(3):
        monitor.on_trade(0.01)  # back to 60%: inside the band, re-armed
    assert monitor.live()["win_rate"] == pytest.approx(0.6) and "win_rate" not in monitor.alerting
    with pytest.raises(UserError, match="must be >= 1"):
        DriftMonitor({}, {"win_rate": 0.05}, window_trades=0)
    assert drift_monitor({"enabled": False}, []) is None


class Losing:
    """Calls every other candle long for one candle: on a falling market every trade loses (win rate 0 vs the
    test period's 60%)."""

    def __init__(self):
        self.calls = 0

    def on_candle(self, symbol, history):
        self.calls += 1
        at = pd.Timestamp(history["timestamp"].iloc[-1])
        if self.calls % 2 == 0:
            return Signal(symbol, at, 0.5, 0.5, 0, 0.5, None, 1, {"m:1": 0.5}, "below_threshold")
        return Signal(symbol, at, 0.8, 0.2, 1, 0.8, "high", 1, {"m:1": 0.8}, "emitted")


def _falling(n: int) -> pd.DataFrame:
    ts = pd.date_range("2024-03-01", periods=n, freq="1h", tz="UTC")
    close = 100.0 * 0.999 ** np.arange(1, n + 1)
    open_ = np.r_[100.0, close[:-1]]
    return pd.DataFrame(
        {"timestamp": ts, "open": open_, "high": open_ * 1.0001, "low": close * 0.9999, "close": close, "volume": 1.0}
    )


@pytest.mark.parametrize("halt", [False, True])
def test_live_drift_is_stored_notified_and_optionally_halts(tmp_path, halt):
    store = RuntimeStore(tmp_path)
    seen = []
    monitor = drift_monitor(
        {"win_rate_band": 0.05, "window_trades": 5, "min_trades": 5, "halt": halt},
        [SimpleNamespace(weight=1.0, trading=TEST_PERIOD)],
    )
    rt = Runtime(
        Losing(),
        pd.Timedelta("1h"),
        store,
        Notifier([seen.append]),
        KillSwitch(tmp_path / "KILL", None),
        True,
        PaperBroker(10_000.0, 0, 0, 0),
        Guardrails(10_000.0, max_daily_loss=0.5, max_total_loss=0.5),
        0.2,
    )
    rt.drift = monitor
    steps = replay(rt, {"BTC": _falling(60)}, pd.Timestamp("2024-03-01", tz="UTC"), None, history=10)
    store.close()
    events = [json.loads(x) for x in (tmp_path / "events.jsonl").read_text().splitlines()]
    drift = [e for e in events if e["kind"] == "drift"]
    assert len(drift) == 1 and drift[0]["detail"]["metric"] == "win_rate"
    assert drift[0]["detail"]["live"] == 0.0 and drift[0]["detail"]["reference"] == 0.6
    notified = [e for e in seen if e["kind"] == "drift"]
    assert len(notified) == 1 and notified[0]["level"] == "warning" and "win_rate 0.00%" in notified[0]["message"]
    if halt:  # stopped at the alert, flat, with far fewer candles than given
        assert rt.stopped and rt.stopping.startswith("drift") and not rt.broker.positions and steps < 30
        assert len(rt.broker.closed_trades) == 5
    else:
        assert steps == 60 and not rt.stopped


class TelegramServer:
    """A local Bot API stand-in on 127.0.0.1: records each request, answers from a script of status codes."""

    def __init__(self, statuses):
        self.requests, self.statuses = [], list(statuses)
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                outer.requests.append((self.path, self.headers["Content-Type"], json.loads(body)))
                status = outer.statuses.pop(0) if outer.statuses else 200
                answer = (
                    {"ok": True, "result": {"message_id": len(outer.requests)}}
                    if status == 200
                    else {
                        "ok": False,
                        "error_code": status,
                        "description": "Too Many Requests"
                        if status == 429
                        else "Bad Request: chat not found"
                        if status == 400
                        else "Internal Server Error",
                        **({"parameters": {"retry_after": 7}} if status == 429 else {}),
                    }
                )
                data = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self):
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


def test_telegram_sends_the_bot_api_request_for_the_tiers_it_is_given():
    env = {"CANDLELAB_TELEGRAM_TOKEN": TOKEN, "CANDLELAB_TELEGRAM_CHAT_ID": CHAT}
    with TelegramServer([]) as api:
        sink = telegram_sink({"base_url": api.url, "tiers": ["high"], "min_level": "warning"}, env)
        notifier = Notifier([sink])
        notifier.notify("signal", "BTC long p=0.700 tier=high", level="info", at="2024-03-01 10:00", tier="high")
        notifier.notify("signal", "BTC long p=0.560 tier=medium", level="debug", tier="medium")  # filtered
        notifier.notify("trade", "BTC closed", level="info")  # below warning
        notifier.notify("drift", "live win_rate 40% vs 60%", level="warning")
    assert [r[0] for r in api.requests] == [f"/bot{TOKEN}/sendMessage"] * 2
    assert all(r[1] == "application/json" for r in api.requests)
    first, second = (r[2] for r in api.requests)
    assert first["chat_id"] == CHAT and first["text"] == "signal: BTC long p=0.700 tier=high (at 2024-03-01 10:00)"
    assert second["text"].startswith("drift: live win_rate 40%") and sink.sent == 2


def test_telegram_retries_with_backoff_and_a_dead_api_is_never_fatal(caplog):
    waits = []
    with TelegramServer([500, 429, 200]) as api:
        sink = TelegramSink(TOKEN, CHAT, base_url=api.url, retries=3, backoff=0.5, wait=waits.append)
        sink({"kind": "guardrail", "level": "warning", "message": "daily_loss"})
    assert len(api.requests) == 3 and sink.sent == 1 and sink.failed == 0
    assert waits == [0.5, 7.0]  # backoff 0.5 * 2**0, then the 429's retry_after (longer than 0.5 * 2**1)
    waits.clear()
    with TelegramServer([400]) as api:  # the API refused the request itself: not retried
        sink = TelegramSink(TOKEN, CHAT, base_url=api.url, retries=3, backoff=0.5, wait=waits.append)
        with caplog.at_level(logging.WARNING, logger="candlelab.runtime"):
            sink({"kind": "guardrail", "level": "warning", "message": "daily_loss"})
    assert len(api.requests) == 1 and waits == [] and sink.failed == 1
    with TelegramServer([]) as api:
        closed = api.url
    dead = TelegramSink(TOKEN, CHAT, base_url=closed, retries=2, backoff=1.0, timeout=2.0, wait=waits.append)
    with caplog.at_level(logging.WARNING, logger="candlelab.runtime"):
        Notifier([dead]).notify("kill_switch", "stopping", level="warning")  # nothing listens: bounded retries
    assert waits == [1.0, 2.0] and dead.failed == 1
    assert any("telegram" in r.getMessage() and "after 3 attempt(s)" in r.getMessage() for r in caplog.records)
    assert not any(TOKEN in r.getMessage() for r in caplog.records)  # the token never reaches the log


def test_telegram_secrets_come_from_the_environment_only():
    with pytest.raises(UserError) as missing:
        telegram_sink({}, {})
    assert (
        "CANDLELAB_TELEGRAM_TOKEN" in missing.value.what and missing.value.where == "runtime.notify.telegram.token_env"
    )
    with pytest.raises(UserError, match="does not belong in a config file"):
        telegram_sink({"token": TOKEN}, {"CANDLELAB_TELEGRAM_TOKEN": TOKEN, "CANDLELAB_TELEGRAM_CHAT_ID": CHAT})
    env = {"MY_TOKEN": TOKEN, "MY_CHAT": CHAT}
    sink = telegram_sink({"token_env": "MY_TOKEN", "chat_id_env": "MY_CHAT"}, env)
    assert sink.chat_id == CHAT and sink.base_url == "https://api.telegram.org"
    with pytest.raises(UserError, match="CANDLELAB_TELEGRAM_TOKEN"):
        build_sinks({"sinks": ["telegram"], "telegram": {"token_env": "CANDLELAB_TELEGRAM_TOKEN_UNSET_HERE"}})
