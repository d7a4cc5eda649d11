"""Speed of the data path and of one default run per family (CPU). Writes JSON, prints a table.

    .venv/bin/python benchmarks/pipeline.py            # full: 3.08M-candle generation + default runs
    .venv/bin/python benchmarks/pipeline.py --quick    # smaller sizes, for a smoke check
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

from hydra import compose, initialize_config_dir  # noqa: E402

from data.synthetic import generate  # noqa: E402
from data.table import build_table  # noqa: E402
from data.timeframes import to_timedelta  # noqa: E402


def cfg_for(*overrides):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "pipeline.json"))
    args = ap.parse_args()
    rows_gen = 300_000 if args.quick else 3_080_000
    rows_feat = 200_000 if args.quick else 1_000_000
    rows = []

    _, s = timed(lambda: generate(["BTC", "ETH", "SOL", "BNB"], rows_gen, seed=0))
    rows.append(("synthetic generation, 4 coins", rows_gen * 4, s))
    gen = generate(["BTC"], rows_feat, seed=0)
    feats = cfg_for().features
    target = cfg_for().target
    _, s = timed(lambda: build_table(gen.candles, feats, target, to_timedelta("1m")))
    rows.append(("features + labels (table build)", rows_feat, s))

    from trainer import train
    runs = {}
    for family, extra in (("lightgbm", []), ("lstm", [])):
        with tempfile.TemporaryDirectory() as tmp:
            cfg = cfg_for(f"model={family}", "logger=none", f"paths.run_dir={tmp}",
                          *(["data.rows=50000"] if args.quick else []), *extra)
            result, s = timed(lambda: train(cfg))
        runs[family] = {"wall_s": round(s, 2), "accuracy": result["test_metrics"]["accuracy"],
                        "oracle_accuracy": result["data_summary"]["oracle_accuracy"],
                        "persistence": result["baselines"]["persistence"]["accuracy"],
                        "phase_seconds": result["run"]["phase_seconds"],
                        "train_rows": result["data_summary"]["rows_per_split"]["train"]}
        rows.append((f"default run: {family} (synthetic, {cfg.data.rows} candles)", cfg.data.rows, s))

    report = {
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform()},
        "quick": args.quick,
        "measurements": [{"what": w, "rows": n, "seconds": round(s, 3), "rows_per_s": round(n / s)}
                         for w, n, s in rows],
        "runs": runs,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2))
    width = max(len(w) for w, _, _ in rows)
    print(f"{'what':<{width}}  {'rows':>10}  {'seconds':>8}  {'rows/s':>12}")
    for w, n, s in rows:
        print(f"{w:<{width}}  {n:>10,}  {s:>8.2f}  {n / s:>12,.0f}")
    for family, r in runs.items():
        print(f"{family}: accuracy {r['accuracy']:.4f}  persistence {r['persistence']:.4f}  "
              f"oracle {r['oracle_accuracy']:.4f}  phases {r['phase_seconds']}")
    print(f"written: {args.out}")


if __name__ == "__main__":
    main()
