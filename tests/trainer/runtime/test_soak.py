"""An accelerated soak: a paper session over stored 1m candles served poll by poll, with provider errors on
some polls, a kill -9 inside a candle's transaction and a resume, a SIGTERM and a resume, ends exactly where
an uninterrupted session ends: same equity to the last bit, same trades, fills and signals, none lost or
doubled. CI replays SOAK_CANDLES candles; benchmarks/runtime_soak.py runs the full 3 days (4,320)."""

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.trainer.runtime.world import candles_after_test_start, promoted_world

SOAK_CANDLES = 180  # 3 days = 4,320 in benchmarks/runtime_soak.py; per-candle scoring keeps CI to this
PER_POLL = 30


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return promoted_world(tmp_path_factory.getbasetemp() / "runtime-world")


def worker(world: Path, run_dir: Path, first: int, until: int, **faults) -> subprocess.CompletedProcess:
    spec = {"base": str(world), "run_dir": str(run_dir), "first": first, "per_poll": PER_POLL, "until": until, **faults}
    return subprocess.run(
        [sys.executable, str(ROOT / "tests" / "trainer" / "runtime" / "soak_worker.py"), json.dumps(spec)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )


def record(run_dir: Path) -> dict:
    with sqlite3.connect(run_dir / "runtime.db") as db:
        return {
            "signals": [r[0] for r in db.execute("SELECT row_json FROM signals ORDER BY id")],
            "fills": db.execute(
                "SELECT at, symbol, side, quantity, price, cost, reason FROM fills ORDER BY id"
            ).fetchall(),
            "trades": db.execute(
                "SELECT symbol, side, entry_time, entry_price, exit_time, exit_price, quantity, "
                "gross_pnl, costs, net_pnl, reason FROM trades ORDER BY id"
            ).fetchall(),
            "equity": db.execute("SELECT at, equity FROM equity ORDER BY id").fetchall(),
            "events": [r[0] for r in db.execute("SELECT kind FROM events ORDER BY id")],
            "risk_events": db.execute(
                "SELECT kind, at, detail_json FROM events WHERE kind IN ('guardrail', 'drift') ORDER BY id"
            ).fetchall(),
            "integrity": db.execute("PRAGMA integrity_check").fetchone()[0],
        }


def soak(world: Path, root: Path, n: int) -> dict:
    """Runs the uninterrupted session and the faulted one over ``n`` candles; returns both records."""
    _, first = candles_after_test_start(world)
    until = first + n
    reference = worker(world, root / "reference", first, until)
    assert reference.returncode == 0, reference.stderr[-3000:]
    faulted = root / "faulted"
    third = n // 3
    killed = worker(world, faulted, first, until, failing=[3], kill_at=third)  # kill -9 mid-candle
    assert killed.returncode == -9, killed.stderr[-3000:]
    # the resumed process is served candles it already processed again: none may count twice
    termed = worker(world, faulted, first + third - PER_POLL, until, failing=[2], term_at=third, resume=True)
    assert termed.returncode == 3, termed.stderr[-3000:]  # SIGTERM: a clean stop
    assert json.loads(termed.stdout.strip().splitlines()[-1])["stop_kind"] == "signal"
    finished = worker(world, faulted, first + 2 * third, until, failing=[1, 4], resume=True)
    assert finished.returncode == 0, finished.stderr[-3000:]
    return {
        "reference": json.loads(reference.stdout.strip().splitlines()[-1]),
        "faulted": json.loads(finished.stdout.strip().splitlines()[-1]),
        "reference_record": record(root / "reference"),
        "faulted_record": record(faulted),
    }


@pytest.mark.slow
def test_a_session_with_provider_errors_a_kill_and_a_sigterm_ends_as_an_uninterrupted_one(world, tmp_path):
    out = soak(world, tmp_path, SOAK_CANDLES)
    ref, got = out["reference_record"], out["faulted_record"]
    assert got["integrity"] == "ok"
    assert out["faulted"]["equity"] == out["reference"]["equity"]  # exact: state round trips unchanged
    assert out["faulted"]["candles_total"] == out["reference"]["candles_total"] == SOAK_CANDLES
    assert got["signals"] == ref["signals"] and len(ref["signals"]) == SOAK_CANDLES  # none lost, none doubled
    assert got["trades"] == ref["trades"] and len(ref["trades"]) > 0
    assert got["fills"] == ref["fills"]
    assert sorted(set(got["equity"])) == sorted(set(ref["equity"]))
    assert got["risk_events"] == ref["risk_events"]  # guardrail and drift state carried over
    # the faults are on record: provider errors retried, the kill and the SIGTERM resumed
    assert got["events"].count("provider_error") == 4 and got["events"].count("resume") == 2  # 1 + 1 + 2
    assert "stop" in got["events"] and "provider_error" not in ref["events"]
    lines = (tmp_path / "faulted" / "signals.jsonl").read_text().splitlines()
    assert lines == ref["signals"]  # the JSONL follows the database
