"""The data path on 3.08M synthetic 1m candles (one coin, ~5.9 years): wall time and peak RSS per step,
and the lazy window dataset (construction time, memory added). Writes JSON, prints a table.

    .venv/bin/python benchmarks/data.py            # 3.08M candles
    .venv/bin/python benchmarks/data.py --rows 300000
    .venv/bin/python benchmarks/data.py --quick    # 100,000 candles in seconds: a smoke check of the path
"""

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("CANDLELAB_ROOT", str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402

from data.features import compute_features  # noqa: E402
from data.providers import load_candles  # noqa: E402
from data.schema import validate_candles  # noqa: E402
from data.splits import make_folds  # noqa: E402
from data.table import FeatureTable, join_labels  # noqa: E402
from data.windows import WindowBatches  # noqa: E402


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def versions() -> dict:
    """The library versions a figure was measured with."""
    import pandas
    import pytorch_lightning

    return {
        "python": sys.version.split()[0],
        "pandas": pandas.__version__,
        "numpy": np.__version__,
        "torch": torch.__version__,
        "pytorch_lightning": pytorch_lightning.__version__,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=None, help="candles [3,080,000]")
    ap.add_argument("--quick", action="store_true", help="100,000 candles (seconds), unless --rows is given")
    ap.add_argument("--window", type=int, default=60)
    ap.add_argument("--out", default=None, help="[benchmarks/results/data.json, data_quick.json with --quick]")
    args = ap.parse_args()
    if args.rows is None:
        args.rows = 100_000 if args.quick else 3_080_000
    args.out = args.out or str(ROOT / "benchmarks" / "results" / ("data_quick.json" if args.quick else "data.json"))
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=["features=full", f"data.rows={args.rows}"])
    steps = []

    def step(name, fn):  # cpu_s: this process's CPU time, what a busy shared machine disturbs least
        start, cpu = time.perf_counter(), time.process_time()
        out = fn()
        steps.append(
            {
                "step": name,
                "seconds": round(time.perf_counter() - start, 3),
                "cpu_s": round(time.process_time() - cpu, 3),
                "rss_mb": round(rss_mb()),
                "peak_rss_mb": round(peak_mb()),
            }
        )
        return out

    candles = step(
        "provider: synthetic generation (+ outlier rule, gap report)", lambda: load_candles(cfg.data, ["BTC"], cfg.seed)
    )
    btc = candles.by_symbol["BTC"]
    step("validation (schema rules)", lambda: validate_candles(btc, "BTC"))
    frames = step("features: full set (30 features)", lambda: {"BTC": compute_features(btc, cfg.features)})
    table: FeatureTable = step(
        "labels: direction + t1 + persistence, joined by timestamp",
        lambda: join_labels({"BTC": btc}, frames, cfg.features, cfg.target, candles.step),
    )
    frame = table.frame
    eligible = frame["label"].notna().to_numpy()
    step(
        "split: holdout cutoffs, purge, embargo",
        lambda: make_folds(cfg.split, frame["timestamp"], frame["purge_end"], eligible, candles.step),
    )
    X = torch.from_numpy(table.matrix(np.float32))
    ends = np.flatnonzero(table.run_position() >= args.window - 1)
    before = rss_mb()
    start = time.perf_counter()
    windows = WindowBatches(X, ends, np.zeros(len(ends), dtype=np.int64), args.window, batch_size=1024)
    built = time.perf_counter() - start
    added = rss_mb() - before
    x, _ = next(iter(windows))
    report = {
        "versions": versions(),
        "rows": len(btc),
        "features": len(table.feature_names),
        "window": args.window,
        "steps": steps,
        "windows": {
            "count": int(len(ends)),
            "construction_s": round(built, 4),
            "rss_added_mb": round(added, 1),
            "feature_matrix_mb": round(X.numel() * 4 / 2**20, 1),
            "materialised_would_be_mb": round(len(ends) * args.window * X.shape[1] * 4 / 2**20),
            "first_batch_shape": list(x.shape),
        },
        "peak_rss_mb": round(peak_mb()),
    }
    path = steps[2:]  # features + labels + split: the figure with a 5 s target
    report["features_labels_split_s"] = round(sum(s["seconds"] for s in path), 2)
    report["features_labels_split_cpu_s"] = round(sum(s["cpu_s"] for s in path), 2)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2))
    width = max(len(s["step"]) for s in steps)
    print(f"{'step':<{width}}  {'seconds':>8}  {'CPU s':>6}  {'RSS MB':>7}  {'peak MB':>8}")
    for s in steps:
        print(
            f"{s['step']:<{width}}  {s['seconds']:>8.2f}  {s['cpu_s']:>6.2f}  {s['rss_mb']:>7}  {s['peak_rss_mb']:>8}"
        )
    print(
        f"features + labels + split: {report['features_labels_split_s']:.2f} s "
        f"({report['features_labels_split_cpu_s']:.2f} s CPU)"
    )
    w = report["windows"]
    print(
        f"window dataset: {w['count']:,} windows x {args.window} built in {w['construction_s'] * 1000:.1f} ms, "
        f"+{w['rss_added_mb']} MB (a materialised copy would be {w['materialised_would_be_mb']:,} MB)"
    )
    print(f"peak RSS: {report['peak_rss_mb']} MB   written: {args.out}")
    print("versions: " + ", ".join(f"{k} {v}" for k, v in report["versions"].items()))


if __name__ == "__main__":
    main()
