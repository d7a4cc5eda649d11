"""The runtime soak at full length: 3 days of 1m candles (4,320) served poll by poll to a paper session
(live-paper over stored candles, 30 a poll) with faults: provider errors on some polls, a kill -9 inside a
candle's transaction a third of the way, a resume that is served already-processed candles again, a SIGTERM
two thirds of the way and a resume. Checks that the faulted session ends exactly as an uninterrupted one
(equity to the last bit, signals, fills, trades) and writes the figures as JSON, printing a table.

    .venv/bin/python benchmarks/runtime_soak.py                 # 4,320 candles
    .venv/bin/python benchmarks/runtime_soak.py --candles 600   # shorter

Each candle is scored on the per-candle path (features over runtime.history=300 trailing candles), as a live
session scores it; tests/trainer/runtime/test_soak.py runs the same soak over 180 candles in CI.
"""

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("CANDLELAB_ROOT", str(ROOT))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--candles", type=int, default=4320)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "runtime_soak.json"))
    args = parser.parse_args()
    from tests.trainer.runtime.test_soak import PER_POLL, record, worker
    from tests.trainer.runtime.world import candles_after_test_start, promoted_world

    work = Path(tempfile.mkdtemp(prefix="candlelab-soak-"))
    started = time.perf_counter()
    world = promoted_world(work / "world")
    train_s = time.perf_counter() - started
    _, first = candles_after_test_start(world)
    n, until = args.candles, first + args.candles
    third = n // 3
    legs = [
        ("uninterrupted", work / "reference", dict(first=first), 0),
        ("provider errors + kill -9", work / "faulted", dict(first=first, failing=[3, 40], kill_at=third), -9),
        (
            "resume + provider error + SIGTERM",
            work / "faulted",
            dict(first=first + third - PER_POLL, failing=[2], term_at=third, resume=True),
            3,
        ),
        (
            "resume to the end + provider errors",
            work / "faulted",
            dict(first=first + 2 * third, failing=[1, 4], resume=True),
            0,
        ),
    ]
    timings, finals = [], {}
    for name, run_dir, spec, code in legs:
        t = time.perf_counter()
        proc = worker(world, run_dir, until=until, **spec)
        seconds = time.perf_counter() - t
        if proc.returncode != code:
            sys.stderr.write(proc.stderr[-3000:])
            raise SystemExit(f"{name}: exit {proc.returncode}, expected {code}")
        if proc.stdout.strip():
            finals[run_dir.name] = json.loads(proc.stdout.strip().splitlines()[-1])
        timings.append({"leg": name, "exit_code": proc.returncode, "seconds": round(seconds, 1)})
    ref, got = record(work / "reference"), record(work / "faulted")
    checks = {
        "equity_equal": finals["faulted"]["equity"] == finals["reference"]["equity"],
        "signals_equal": got["signals"] == ref["signals"],
        "fills_equal": got["fills"] == ref["fills"],
        "trades_equal": got["trades"] == ref["trades"],
        "candles_total": finals["faulted"]["candles_total"],
        "guardrail_and_drift_events_equal": got["risk_events"] == ref["risk_events"],
        "guardrail_and_drift_events": len(ref["risk_events"]),
        "integrity": got["integrity"],
        "provider_errors": got["events"].count("provider_error"),
        "resumes": got["events"].count("resume"),
    }
    doc = {
        "candles": n,
        "per_poll": PER_POLL,
        "train_seconds": round(train_s, 1),
        "legs": timings,
        "reference_seconds_per_candle": round(timings[0]["seconds"] / n, 4),
        "equity": finals["reference"]["equity"],
        "signals": len(ref["signals"]),
        "trades": len(ref["trades"]),
        "fills": len(ref["fills"]),
        "checks": checks,
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "load_1m": round(os.getloadavg()[0], 2),
        },
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(doc, indent=1) + "\n")
    print(f"soak: {n} candles, {len(ref['signals'])} signals, {len(ref['trades'])} trades, equity {doc['equity']:.6f}")
    print(f"{'leg':<40} {'exit':>5} {'seconds':>8}")
    for leg in timings:
        print(f"{leg['leg']:<40} {leg['exit_code']:>5} {leg['seconds']:>8.1f}")
    print("checks: " + ", ".join(f"{k}={v}" for k, v in checks.items()))
    ok = (
        all(
            checks[k]
            for k in (
                "equity_equal",
                "signals_equal",
                "fills_equal",
                "trades_equal",
                "guardrail_and_drift_events_equal",
            )
        )
        and checks["candles_total"] == n
        and checks["integrity"] == "ok"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
