"""What honest evaluation costs, and how fast the registry takes writes. Writes JSON, prints tables.

    .venv/bin/python benchmarks/evaluation.py            # 1 run per family + 8x50 registry writes
    .venv/bin/python benchmarks/evaluation.py --quick    # smaller data, 4x25 writes

Per family (default data, 200k synthetic 1m candles): wall time of each pipeline phase from
``result.json`` (``run.phase_seconds``): fit, evaluate (metrics, baselines, significance with 1000 block-
bootstrap resamples, trading backtest, split verification), control (the shuffled-label refit), save,
register. Registry: N processes each registering M small model dirs into one SQLite registry
(WAL, ``BEGIN IMMEDIATE``); rows/second overall and the slowest single write.
"""

import argparse
import json
import multiprocessing as mp
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("CANDLELAB_ROOT", str(ROOT))

FAMILIES = {"lightgbm": ["model=lightgbm"], "lstm": ["model=lstm", "model.max_epochs=3", "model.patience=10"]}
PHASES = ("fit", "evaluate", "control", "save", "register")


def run_family(overrides: list[str], rows: int) -> dict:
    from hydra import compose, initialize_config_dir

    from trainer import train

    with tempfile.TemporaryDirectory() as tmp:
        with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
            cfg = compose(
                config_name="config",
                overrides=[
                    *overrides,
                    f"data.rows={rows}",
                    "logger=none",
                    "trainer.num_threads=2",
                    f"paths.output_dir={tmp}",
                    f"paths.run_dir={tmp}/run",
                ],
            )
        result = train(cfg)
    phases = result.run.phase_seconds
    return {
        "test_rows": result.test_metrics["n"],
        "trades": result.trading["n_trades"],
        "gates_passed": result.gates["passed"],
        **{p: phases.get(p) for p in PHASES},
    }


def _writer(root: str, worker: int, writes: int, source: str, out) -> None:
    from trainer.registry import Registry

    registry = Registry(root)
    slowest = 0.0
    for i in range(writes):
        record = {
            "family": "lightgbm",
            "symbol": f"S{worker % 3}",
            "timeframe": "1m",
            "target": "direction_h1",
            "headline": "accuracy",
            "headline_value": 0.5 + (i % 7) / 100,
            "metrics": {"accuracy": 0.5},
            "gates": {"passed": i % 2 == 0},
            "run_id": f"w{worker}-{i}",
            "run_dir": "/tmp",
            "git_commit": None,
            "config_hash": f"c{i % 5}",
            "data_fingerprint": f"d{worker}",
        }
        model = Path(source).parent / record["run_id"]  # each run's own model dir: its card names the run
        shutil.copytree(source, model)
        (model / "model_card.json").write_text(json.dumps({"family": "lightgbm", "run_id": record["run_id"]}))
        t0 = time.perf_counter()
        registry.register(record, model, auto_promote=True, keep_candidates=None)
        slowest = max(slowest, time.perf_counter() - t0)
    out.put(slowest)


def registry_throughput(procs: int, writes: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "model"
        source.mkdir()
        (source / "model_card.json").write_text(json.dumps({"family": "lightgbm"}))
        (source / "weights.txt").write_text("x" * 20_000)
        ctx = mp.get_context("spawn")
        out = ctx.Queue()
        workers = [
            ctx.Process(target=_writer, args=(f"{tmp}/registry", w, writes, str(source), out)) for w in range(procs)
        ]
        t0 = time.perf_counter()
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        seconds = time.perf_counter() - t0
        slowest = max(out.get() for _ in workers)
        from trainer.registry import Registry

        rows = len(Registry(f"{tmp}/registry").rows())
    return {
        "processes": procs,
        "writes_each": writes,
        "rows": rows,
        "seconds": round(seconds, 2),
        "rows_per_second": round(rows / seconds, 1),
        "slowest_write_s": round(slowest, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    rows = 60_000 if args.quick else 200_000
    report = {"data_rows": rows, "families": {}, "registry": None}
    for name, overrides in FAMILIES.items():
        report["families"][name] = run_family(overrides, rows)
    report["registry"] = registry_throughput(4, 25) if args.quick else registry_throughput(8, 50)
    out = ROOT / "benchmarks" / "results" / "evaluation.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(f"\nphase seconds per run ({rows} synthetic candles, BTC 1m, holdout)")
    print(f"{'family':10} {'test rows':>9} {'trades':>6} " + " ".join(f"{p:>9}" for p in PHASES))
    for name, r in report["families"].items():
        print(f"{name:10} {r['test_rows']:>9} {r['trades']:>6} " + " ".join(f"{(r[p] or 0):>9.2f}" for p in PHASES))
    g = report["registry"]
    print(
        f"\nregistry: {g['processes']} processes x {g['writes_each']} writes -> {g['rows']} rows in "
        f"{g['seconds']} s ({g['rows_per_second']} rows/s, slowest write {g['slowest_write_s']} s)"
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
