"""How fast the runtime replays stored candles: probabilities computed ahead in one pass per model
(``runtime.replay.precompute=true``) against features computed per candle. Writes JSON, prints a table.

    .venv/bin/python benchmarks/runtime.py            # 40k synthetic 1m candles, ~6k replayed (test period)
    .venv/bin/python benchmarks/runtime.py --quick    # 20k candles, ~3k replayed

A LightGBM is trained on synthetic BTC 1m candles and promoted (a fixed policy that trades, so paper mode
fills orders); then whole sessions (``trainer.runtime.session.run``: candle loading, model loading, the
replay, SQLite/JSONL records and the report) run in ``dry`` and ``paper`` mode. The per-candle path replays
only ``--per-candle`` candles (it costs tens of milliseconds each). candles/s = replayed candles / seconds in
the replay loop plus the precompute pass (both counted; the session's fixed costs, loading candles and models
and the report, are in ``session_seconds``); candles per CPU second beside it, since the machine is shared.
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
TRAIN = [
    "model=lightgbm",
    "logger=none",
    "trainer.num_threads=2",
    "eval.leakage.shuffled_control=false",
    "eval.policy.mode=fixed",
    "eval.trading.threshold=0.52",
]


def _cfg(*overrides: str):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


class _Timed:
    """Wall and CPU seconds spent inside a wrapped function (the replay loop, the precompute pass)."""

    def __init__(self, fn):
        self.fn, self.wall, self.cpu = fn, 0.0, 0.0

    def __call__(self, *args, **kwargs):
        t0, c0 = time.perf_counter(), time.process_time()
        try:
            return self.fn(*args, **kwargs)
        finally:
            self.wall += time.perf_counter() - t0
            self.cpu += time.process_time() - c0


def _session(out: Path, rows: int, mode: str, precompute: bool, max_candles: int | None, name: str) -> dict:
    from trainer.runtime import session
    from trainer.runtime.signals import SignalEngine

    loop, ahead = _Timed(session.replay), _Timed(SignalEngine.precompute)
    session.replay, SignalEngine.precompute = loop, lambda self, *a, **k: ahead(self, *a, **k)
    overrides = [
        f"data.rows={rows}",
        "logger=none",
        f"paths.output_dir={out}",
        f"runtime.mode={mode}",
        f"runtime.replay.precompute={str(precompute).lower()}",
        f"runtime.run_dir={out / name}",
    ]
    if max_candles is not None:
        overrides.append(f"runtime.replay.max_candles={max_candles}")
    cfg = _cfg(*overrides)
    t0, c0 = time.perf_counter(), time.process_time()
    try:
        summary = session.run(cfg)
    finally:
        session.replay, SignalEngine.precompute = loop.fn, ahead.fn
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    steps = summary["steps"]
    replay_wall, replay_cpu = loop.wall + ahead.wall, loop.cpu + ahead.cpu
    return {
        "mode": mode,
        "precompute": precompute,
        "candles": steps,
        "session_seconds": round(seconds, 3),
        "session_cpu_seconds": round(cpu, 3),
        "replay_seconds": round(replay_wall, 3),
        "replay_cpu_seconds": round(replay_cpu, 3),
        "precompute_seconds": round(ahead.wall, 3),
        "candles_per_s": round(steps / replay_wall, 1),
        "candles_per_cpu_s": round(steps / replay_cpu, 1),
        "session_candles_per_s": round(steps / seconds, 1),
        "signals_emitted": summary["signals_emitted"],
        "equity": summary["equity"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="20k candles instead of 40k")
    parser.add_argument("--per-candle", type=int, default=200, help="candles the per-candle path replays")
    args = parser.parse_args()
    rows = 20_000 if args.quick else 40_000
    import lightgbm
    import pandas as pd

    from trainer import train
    from trainer.registry import Registry

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        result = train(_cfg(*TRAIN, f"data.rows={rows}", f"paths.output_dir={out}", f"paths.run_dir={out}/train"))
        reg = result.registry
        if reg["stage"] != "promoted":
            Registry(out / "registry").promote(reg["model_id"], reg["version"], force=True)
        sessions = []
        for mode in ("dry", "paper"):
            sessions.append(_session(out, rows, mode, True, None, f"{mode}-fast"))
            sessions.append(_session(out, rows, mode, False, args.per_candle, f"{mode}-slow"))
    report = {
        "benchmark": "runtime replay",
        "rows": rows,
        "model": "lightgbm",
        "timeframe": "1m",
        "cpu_count": os.cpu_count(),
        "load_average": os.getloadavg(),
        "python": platform.python_version(),
        "pandas": pd.__version__,
        "lightgbm": lightgbm.__version__,
        "sessions": sessions,
    }
    for mode in ("dry", "paper"):
        fast, slow = (s for s in sessions if s["mode"] == mode)
        report[f"{mode}_speedup"] = round(fast["candles_per_cpu_s"] / slow["candles_per_cpu_s"], 1)
    results = ROOT / "benchmarks" / "results"
    results.mkdir(parents=True, exist_ok=True)
    path = results / f"runtime{'_quick' if args.quick else ''}.json"
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(
        f"load average {report['load_average'][0]:.1f} on {report['cpu_count']} CPUs\n"
        "| mode | path | candles | replay s | replay CPU s | candles/s | candles/CPU s | session s |\n"
        "|---|---|---:|---:|---:|---:|---:|---:|"
    )
    for s in sessions:
        print(
            f"| {s['mode']} | {'precomputed' if s['precompute'] else 'per candle'} | {s['candles']} | "
            f"{s['replay_seconds']:.2f} | {s['replay_cpu_seconds']:.2f} | {s['candles_per_s']:,.0f} | "
            f"{s['candles_per_cpu_s']:,.0f} | {s['session_seconds']:.2f} |"
        )
    print(f"speed-up (CPU): dry x{report['dry_speedup']}, paper x{report['paper_speedup']} -> {path}")


if __name__ == "__main__":
    main()
