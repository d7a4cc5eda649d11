"""Every model family on one fixed synthetic dataset with a planted signal: test accuracy against the
oracle and the baselines, fit time and peak RSS. Each family runs in its own process (so its peak RSS
is its own). Writes JSON, prints a table.

    .venv/bin/python benchmarks/zoo.py                      # all families, 100k candles
    .venv/bin/python benchmarks/zoo.py --rows 50000 --families lightgbm,mlp
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("CANDLELAB_ROOT", str(ROOT))


def run_one(family: str, rows: int) -> dict:
    from hydra import compose, initialize_config_dir

    from trainer import train

    with tempfile.TemporaryDirectory() as tmp, initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(
            config_name="config",
            overrides=[f"model={family}", f"data.rows={rows}", "logger=none", f"paths.run_dir={tmp}"],
        )
        start = time.perf_counter()
        result = train(cfg)
        wall = time.perf_counter() - start
    return {
        "family": family,
        "status": result.status,
        "accuracy": result.test_metrics.get("accuracy"),
        "oracle_accuracy": result.data_summary.oracle_accuracy,
        "majority": result.baselines.get("majority_class", {}).get("accuracy"),
        "persistence": result.baselines.get("persistence", {}).get("accuracy"),
        "fit_s": result.run.phase_seconds.get("fit"),
        "wall_s": round(wall, 2),
        "n_parameters": result.model_info.n_parameters,
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--families", default=None, help="comma-separated; default: every family in conf/model")
    ap.add_argument("--one", default=None, help=argparse.SUPPRESS)  # child mode: one family, JSON on stdout
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "zoo.json"))
    args = ap.parse_args()
    if args.one:
        sys.stdout.write("ZOO " + json.dumps(run_one(args.one, args.rows)) + "\n")
        return
    from models.families import families

    names = args.families.split(",") if args.families else [f["name"] for f in families()]
    results = []
    for name in names:
        proc = subprocess.run(
            [sys.executable, __file__, "--one", name, "--rows", str(args.rows)],
            cwd=ROOT,
            capture_output=True,
            text=True,
        )
        line = next((x for x in proc.stdout.splitlines() if x.startswith("ZOO ")), None)
        if line is None:
            results.append({"family": name, "status": "failed", "error": proc.stderr.strip().splitlines()[-1:]})
        else:
            results.append(json.loads(line[4:]))
        r = results[-1]
        sys.stderr.write(f"{name}: {r.get('status')} accuracy={r.get('accuracy')} fit={r.get('fit_s')}s\n")
    report = {"rows": args.rows, "cpus": os.cpu_count(), "families": results}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2))
    print(f"{'family':<18} {'accuracy':>8} {'oracle':>7} {'majority':>8} {'persist':>8} {'fit s':>7} {'peak MB':>8}")
    for r in results:

        def f(key, fmt):
            return format(r[key], fmt) if r.get(key) is not None else "-"

        print(
            f"{r['family']:<18} {f('accuracy', '.4f'):>8} {f('oracle_accuracy', '.4f'):>7} {f('majority', '.4f'):>8} "
            f"{f('persistence', '.4f'):>8} {f('fit_s', '.1f'):>7} {f('peak_rss_mb', 'd'):>8}"
        )
    leaks = [
        r["family"]
        for r in results
        if r.get("accuracy") and r.get("oracle_accuracy") and r["accuracy"] > r["oracle_accuracy"] + 0.01
    ]
    print(f"beats the oracle (a leak): {leaks or 'none'}   written: {args.out}")


if __name__ == "__main__":
    main()
