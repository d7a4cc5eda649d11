"""Every way a runtime session stops: SIGINT, SIGTERM, the kill switch and a fatal provider error end the
same way (stop event, positions flattened at the next open or at the last close, report, metrics and
session summary); a second signal stops at once and leaves a consistent database that a resume continues;
resume refusals; periodic and after-the-fact metrics exports; the signals-only live mode."""

import json
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from core.errors import UserError
from tests.conftest import ROOT, make_cfg
from tests.trainer.runtime.world import Polls, candles_after_test_start, promoted_world, runtime_overrides
from trainer.runtime.session import run
from trainer.runtime.stops import StoppedAtOnce
from trainer.runtime.store import RuntimeStore


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    base = promoted_world(tmp_path_factory.getbasetemp() / "runtime-world")
    candles, first = candles_after_test_start(base)
    return base, candles, first


def live_cfg(base: Path, run_dir: Path, *extra: str):
    return make_cfg(
        *runtime_overrides(
            base,
            "runtime.mode=live-paper",
            f"runtime.run_dir={run_dir}",
            "runtime.live.poll_seconds=0",
            "runtime.live.max_polls=400",
            *extra,
        )
    )


def db_rows(run_dir: Path, sql: str) -> list:
    with sqlite3.connect(run_dir / "runtime.db") as db:
        return db.execute(sql).fetchall()


def checkpoint(run_dir: Path) -> dict:
    return json.loads(db_rows(run_dir, "SELECT value_json FROM state WHERE key = 'checkpoint'")[0][0])


def after_first_entry(monkeypatch, action):
    """Calls ``action()`` right after the session's first opening fill is stored (a position is open)."""
    original = RuntimeStore.fill
    fired = []

    def fill(self, f):
        original(self, f)
        if not fired and "signal" in f.reason:
            fired.append(f.timestamp)
            action()

    monkeypatch.setattr(RuntimeStore, "fill", fill)
    return fired


def finished_cleanly(run_dir: Path, summary: dict, kind: str) -> None:
    """The clean ending every stop shares."""
    assert summary["status"] == "stopped" and summary["stop_kind"] == kind
    assert json.loads((run_dir / "session.json").read_text())["status"] == "stopped"
    assert (run_dir / "report.md").is_file() and (run_dir / "metrics.json").is_file()
    assert [json.loads(d)["kind"] for (d,) in db_rows(run_dir, "SELECT detail_json FROM events WHERE kind='stop'")] == [
        kind
    ]
    assert checkpoint(run_dir)["broker"]["positions"] == {} and checkpoint(run_dir)["broker"]["pending"] == {}


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_stops_the_session_flattening_at_the_next_open(world, tmp_path, monkeypatch, sig):
    base, candles, first = world
    fired = after_first_entry(monkeypatch, lambda: os.kill(os.getpid(), sig))
    summary = run(live_cfg(base, tmp_path / "s"), source=Polls(candles, first, 10, first + 300), wait=lambda s: None)
    run_dir = tmp_path / "s"
    finished_cleanly(run_dir, summary, "signal")
    assert summary["stopped_by"] == signal.Signals(sig).name
    # seen on the candle of the entry, flattened at the next candle's open; both candles' signals stored
    stop_candle = fired[0]
    flat_at = stop_candle + pd.Timedelta(minutes=1)
    ((reason, exit_time, exit_price),) = db_rows(run_dir, "SELECT reason, exit_time, exit_price FROM trades")[-1:]
    assert reason == f"stop: {signal.Signals(sig).name}" and pd.Timestamp(exit_time) == flat_at
    assert exit_price == candles.loc[candles["timestamp"] == flat_at, "open"].item()
    assert pd.Timestamp(db_rows(run_dir, "SELECT MAX(at) FROM signals")[0][0]) == flat_at
    assert summary["steps"] == len(db_rows(run_dir, "SELECT id FROM signals"))


def test_the_kill_switch_stops_the_cli_with_exit_code_3_and_the_clean_ending(world, tmp_path):
    base, _, _ = world
    kill = tmp_path / "STOP"
    kill.touch()
    run_dir = tmp_path / "k"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "trainer.runtime",
            "mode=paper",
            *runtime_overrides(base, f"runtime.run_dir={run_dir}", f"runtime.kill_switch.file={kill}"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 3, proc.stderr[-2000:]
    assert "stopped by kill file" in proc.stdout
    summary = json.loads((run_dir / "session.json").read_text())
    finished_cleanly(run_dir, summary, "kill_switch")
    assert summary["steps"] == 1 and db_rows(run_dir, "SELECT COUNT(*) FROM fills")[0][0] == 0


def test_a_provider_failing_poll_after_poll_stops_and_closes_at_the_last_close(world, tmp_path, monkeypatch):
    base, candles, first = world
    polls = Polls(candles, first, 1, first + 300)
    # from the poll after the first entry on, the provider fails: no later price will come
    after_first_entry(monkeypatch, lambda: polls.failing.update(range(polls.polls + 1, polls.polls + 10)))
    summary = run(
        live_cfg(base, tmp_path / "p", "runtime.live.max_provider_errors=3"), source=polls, wait=lambda s: None
    )
    run_dir = tmp_path / "p"
    finished_cleanly(run_dir, summary, "provider_error")
    kinds = [k for (k,) in db_rows(run_dir, "SELECT kind FROM events ORDER BY id")]
    assert kinds.count("provider_error") == 3 and "flattened_at_last_close" in kinds  # said so
    last = pd.Timestamp(db_rows(run_dir, "SELECT MAX(at) FROM signals")[0][0])
    ((reason, exit_time, exit_price),) = db_rows(run_dir, "SELECT reason, exit_time, exit_price FROM trades")[-1:]
    assert "(last close)" in reason and pd.Timestamp(exit_time) == last
    assert exit_price == candles.loc[candles["timestamp"] == last, "close"].item()
    assert "closed at their last close" in (run_dir / "report.md").read_text()


def test_provider_error_exit_code_is_documented_with_the_others():
    proc = subprocess.run(
        [sys.executable, "-m", "trainer.runtime", "--help"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0
    for code in (
        "0  the session ran to its end",
        "3  stopped on request",
        "4  stopped by a fatal provider error",
        "5  stopped at once by a second signal",
    ):
        assert code in proc.stdout


def test_a_second_signal_stops_at_once_and_a_resume_ends_as_an_uninterrupted_run(world, tmp_path, monkeypatch):
    base, candles, first = world
    until = first + 60
    reference = run(live_cfg(base, tmp_path / "ref"), source=Polls(candles, first, 10, until), wait=lambda s: None)

    original = RuntimeStore.signal
    sent = []

    def signal_row(self, row):  # the second SIGTERM arrives inside the stop candle's transaction
        if sent:
            os.kill(os.getpid(), signal.SIGTERM)
        return original(self, row)

    fired = after_first_entry(monkeypatch, lambda: (sent.append(1), os.kill(os.getpid(), signal.SIGTERM)))
    monkeypatch.setattr(RuntimeStore, "signal", signal_row)
    run_dir = tmp_path / "s"
    with pytest.raises(StoppedAtOnce):
        run(live_cfg(base, run_dir), source=Polls(candles, first, 10, until), wait=lambda s: None)
    monkeypatch.undo()
    # consistent: the candle in flight rolled back whole; the checkpoint is the candle before it
    assert db_rows(run_dir, "PRAGMA integrity_check")[0][0] == "ok"
    before = fired[0] - pd.Timedelta(minutes=1)
    assert pd.Timestamp(checkpoint(run_dir)["last_candle"]["BTC"]) == before
    for table in ("signals", "fills", "equity"):
        assert pd.Timestamp(db_rows(run_dir, f"SELECT MAX(at) FROM {table}")[0][0] or before) <= before
    stored = db_rows(run_dir, "SELECT COUNT(*) FROM signals")[0][0]
    assert len((run_dir / "signals.jsonl").read_text().splitlines()) == stored
    assert (
        json.loads(db_rows(run_dir, "SELECT value_json FROM state WHERE key='session'")[0][0])["status"]
        == "interrupted"
    )

    resumed = run(
        live_cfg(base, run_dir, f"runtime.resume={run_dir}"),
        source=Polls(candles, first + 10, 10, until),
        wait=lambda s: None,
    )
    assert resumed["status"] == "completed" and resumed["equity"] == reference["equity"]
    assert resumed["candles_total"] == reference["candles_total"] == 60
    for sql in ("SELECT row_json FROM signals ORDER BY id", "SELECT at, side, quantity, price FROM fills ORDER BY id"):
        assert db_rows(run_dir, sql) == db_rows(tmp_path / "ref", sql)


def test_a_stopped_paper_replay_resumes_where_it_stopped(world, tmp_path, monkeypatch):
    base, candles, first = world
    end = f"runtime.replay.end='{candles['timestamp'][first + 79].isoformat()}'"
    keep = ["runtime.mode=paper", "runtime.stop.flatten=false", end]
    reference = run(make_cfg(*runtime_overrides(base, *keep, f"runtime.run_dir={tmp_path / 'ref'}")))
    after_first_entry(monkeypatch, lambda: os.kill(os.getpid(), signal.SIGTERM))
    stopped = run(make_cfg(*runtime_overrides(base, *keep)))  # a new folder under <output_dir>/runtime/
    monkeypatch.undo()
    run_dir = Path(stopped["run_dir"])
    assert stopped["status"] == "stopped" and stopped["steps"] < 80
    # positions stay open (stop.flatten=false) for the resume; the newest resumable session is found
    resumed = run(make_cfg(*runtime_overrides(base, *keep, "runtime.resume=true")))
    assert resumed["run_dir"] == str(run_dir) and resumed["status"] == "completed"
    assert stopped["steps"] + resumed["steps"] == reference["steps"] == resumed["candles_total"] == 80
    assert resumed["equity"] == reference["equity"]
    sql = "SELECT symbol, side, entry_time, exit_time, net_pnl FROM trades ORDER BY id"
    assert db_rows(run_dir, sql) == db_rows(tmp_path / "ref", sql)
    # nothing left to resume now; a session of other settings is refused with the key that differs
    with pytest.raises(UserError) as err:
        run(make_cfg(*runtime_overrides(base, *keep, "runtime.resume=true")))
    assert err.value.where == "runtime.resume" and "no resumable session" in str(err.value)
    with pytest.raises(UserError) as err:
        run(make_cfg(*runtime_overrides(base, *keep, f"runtime.resume={run_dir}")))
    assert "completed: nothing to resume" in str(err.value)


def test_resuming_with_other_settings_is_refused_naming_the_key(world, tmp_path, monkeypatch):
    base, candles, first = world
    keep = ["runtime.mode=paper", "runtime.replay.max_candles=5"]
    store = RuntimeStore(tmp_path / "s")  # a session killed before its first candle: only its record
    from trainer.runtime.resume import settings, settings_hash

    values = settings(make_cfg(*runtime_overrides(base, *keep)))
    store.put_state(
        "session", {"settings": values, "settings_hash": settings_hash(values), "status": "running", "models": []}
    )
    store.close()
    with pytest.raises(UserError) as err:
        run(make_cfg(*runtime_overrides(base, *keep, "runtime.broker.fee_bps=3", f"runtime.resume={tmp_path / 's'}")))
    assert err.value.where == "runtime.resume" and "runtime.broker.fee_bps 10 -> 3" in str(err.value)


def test_metrics_refresh_during_the_session_per_day_and_for_any_window_afterwards(world, tmp_path):
    base, candles, first = world
    run_dir = tmp_path / "m"
    # 23:00 to 01:00 of candle time: 60 candles on the first day, 61 on the next
    day = candles["timestamp"][first].normalize() + pd.Timedelta(days=1)
    run(
        make_cfg(
            *runtime_overrides(
                base,
                "runtime.mode=paper",
                f"runtime.run_dir={run_dir}",
                "runtime.metrics_every=50",
                f"runtime.replay.start='{(day - pd.Timedelta(hours=1)).isoformat()}'",
                f"runtime.replay.end='{(day + pd.Timedelta(hours=1)).isoformat()}'",
            )
        )
    )
    first_day = json.loads((run_dir / f"metrics-{(day - pd.Timedelta(days=1)):%Y-%m-%d}.json").read_text())
    next_day = json.loads((run_dir / f"metrics-{day:%Y-%m-%d}.json").read_text())
    assert first_day["signals"]["total"] == 60 and next_day["signals"]["total"] == 61
    assert json.loads((run_dir / "metrics.json").read_text())["signals"]["total"] == 121  # 24h window, at the end

    proc = subprocess.run(
        [sys.executable, "-m", "trainer.runtime.metrics", str(run_dir), "--window", "30min"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["signals"]["total"] == 30 and json.loads(proc.stdout)["window"] == "0 days 00:30:00"
    for args, where in (
        ([str(tmp_path / "nothing")], "(session)"),
        ([str(run_dir), "--window", "soon"], "(--window)"),
        ([str(run_dir), "--window=-1h"], "(--window)"),
    ):
        proc = subprocess.run(
            [sys.executable, "-m", "trainer.runtime.metrics", *args],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1
        assert proc.stderr.startswith("error: ") and proc.stderr.strip().endswith(where)


def test_live_mode_polls_every_120_seconds_and_emits_signals_without_trading(world, tmp_path):
    base, candles, first = world
    waits = []
    cfg = make_cfg(
        *runtime_overrides(base, "runtime.mode=live", f"runtime.run_dir={tmp_path / 'l'}", "runtime.live.max_polls=3")
    )
    summary = run(cfg, source=Polls(candles, first, 5, first + 10), wait=waits.append)
    assert waits == [120.0, 120.0] and summary["steps"] == 10 and summary["equity"] is None
    assert db_rows(tmp_path / "l", "SELECT COUNT(*) FROM signals")[0][0] == 10
    assert db_rows(tmp_path / "l", "SELECT COUNT(*) FROM fills")[0][0] == 0


def test_a_checkpoint_restores_broker_guardrails_and_rate_limits_exactly(tmp_path):
    from collections import deque

    from tests.trainer.runtime.test_runtime_end_to_end import ScriptedSignals, _candles, _runtime
    from trainer.runtime.checkpoint import restore, snapshot
    from trainer.runtime.engine import replay

    closes = [100.0] * 5 + [70.0] + [71.0 + i for i in range(6)]  # a crash while long: a total-loss breach
    rt, store, broker, guard = _runtime(tmp_path / "a", ScriptedSignals())
    rt.engine._emitted = deque([(pd.Timestamp("2024-03-01 04:00", tz="UTC"), "high")])  # a rate-limit window
    replay(rt, {"BTC": _candles(closes)}, pd.Timestamp("2024-03-01", tz="UTC"), None, history=50)
    state = json.loads(json.dumps(snapshot(rt)))  # through JSON, as stored
    fresh, fresh_store, fresh_broker, fresh_guard = _runtime(tmp_path / "b", ScriptedSignals())
    fresh.engine._emitted = deque()
    restore(fresh, state)
    assert list(fresh.engine._emitted) == list(rt.engine._emitted) and fresh.last_candle == rt.last_candle
    assert snapshot(fresh) == state
    assert fresh_broker.equity == broker.equity and fresh_broker.balance == broker.balance
    assert fresh_guard.halted_forever and [b.kind for b in fresh_guard.breaches] == [b.kind for b in guard.breaches]
    assert not fresh_guard.allows_trading(pd.Timestamp("2024-03-02", tz="UTC"))
    store.close()
    fresh_store.close()
