"""Speed of the data path and of one default run per family (CPU), and pooled data preparation over many
symbols (peak RSS, seconds, rows/s against the estimate of data/memory.py). Writes JSON, prints tables.

    .venv/bin/python benchmarks/pipeline.py            # full: 3.08M-candle generation + default runs
    .venv/bin/python benchmarks/pipeline.py --quick    # smaller sizes, for a smoke check
    .venv/bin/python benchmarks/pipeline.py --pooled --coins 1,4,10 --rows 1000000   # pooled preparation only

Pooled preparation is what a run does before its fit (candles, features=full, labels, holdout split, float64
model matrix, scaler fit, float32 scaled matrix), each coin count in a fresh process so its peak RSS is its own;
a count whose estimate exceeds the memory available is reported as refused, as a run would refuse it.
"""

import argparse
import json
import os
import platform
import resource
import subprocess
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


def versions() -> dict:
    import numpy
    import pandas

    return {"python": platform.python_version(), "pandas": pandas.__version__, "numpy": numpy.__version__}


def cfg_for(*overrides):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


SYMBOLS = ["BTC", "ETH", "SOL", "BNB", "XRP", "ADA", "DOGE", "AVAX", "DOT", "LINK"]


def pooled_child(coins: int, rows: int) -> dict:
    """One pooled preparation in this process: the steps trainer.pipeline takes before the fit."""
    import numpy as np

    from core.errors import UserError
    from data.features import all_feature_names, feature_names
    from data.memory import available_bytes, check_fits, release_freed, train_share
    from data.providers import load_candles
    from data.scaling import Standardizer
    from data.splits import make_folds
    from data.table import feature_frames, join_labels

    cfg = cfg_for("features=full", f"data.rows={rows}")
    n_all, n_sel = len(all_feature_names(cfg.features)), len(feature_names(cfg.features))
    try:
        estimate = check_fits(coins * rows, coins, n_all, n_sel, train_share(cfg.split), None)
    except UserError as exc:
        return {
            "coins": coins,
            "candles": coins * rows,
            "refused": exc.line(),
            "available_gb": round((available_bytes() or 0) / 1e9, 1),
        }
    peaks = {}

    def mark(step: str) -> None:  # the process's peak so far, after each step
        peaks[step] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)

    start, cpu = time.perf_counter(), time.process_time()
    candles = load_candles(cfg.data, SYMBOLS[:coins], cfg.seed)
    mark("candles")
    frames = feature_frames(candles.by_symbol, cfg.features)
    mark("features")
    table = join_labels(candles.by_symbol, frames, cfg.features, cfg.target, candles.step)
    del frames
    release_freed()
    mark("labels + join")
    eligible = table.frame["label"].notna().to_numpy()
    fold = make_folds(cfg.split, table.frame["timestamp"], table.frame["purge_end"], eligible, candles.step)[0]
    raw = table.matrix()
    mark("split + matrix")
    scaler = Standardizer.fit(raw[fold.rows["train"]], table.feature_names)
    mark("scaler fit")
    X = scaler.transform(raw)
    mark("scaled float32")
    seconds = time.perf_counter() - start
    n = sum(map(len, candles.by_symbol.values()))
    return {
        "coins": coins,
        "candles": n,
        "table_rows": len(table.frame),
        "features": n_sel,
        "seconds": round(seconds, 2),
        "cpu_s": round(time.process_time() - cpu, 2),
        "rows_per_s": round(n / seconds),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "estimate_mb": round(estimate / 2**20),
        "X_mb": round(X.nbytes / 2**20),
        "X_dtype": str(X.dtype),
        "finite": bool(np.isfinite(X[: min(len(X), 1000)]).all()),
        "peak_after_mb": peaks,
    }


def pooled(coin_counts: list[int], rows: int) -> list[dict]:
    out = []
    for coins in coin_counts:  # a fresh process per count: ru_maxrss is that count's own peak
        proc = subprocess.run(
            [sys.executable, __file__, "--child", str(coins), "--rows", str(rows)], capture_output=True, text=True
        )
        if proc.returncode != 0:
            out.append({"coins": coins, "candles": coins * rows, "failed": proc.stderr.strip().splitlines()[-1:]})
        else:
            out.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        print(json.dumps(out[-1]), flush=True)
    fitted = [r for r in out if "peak_rss_mb" in r]
    if len(fitted) >= 2:  # bytes per candle from the slope between the smallest and the largest measured count
        a, b = fitted[0], fitted[-1]
        slope = (b["peak_rss_mb"] - a["peak_rss_mb"]) * 2**20 / (b["candles"] - a["candles"])
        for r in out:
            r["peak_bytes_per_candle_measured"] = round(slope)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--pooled", action="store_true", help="only the pooled preparation over --coins")
    ap.add_argument("--coins", default="1,4,10", help="coin counts for the pooled preparation")
    ap.add_argument("--rows", type=int, default=None, help="candles per coin for the pooled preparation [3,080,000]")
    ap.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    if args.child is not None:
        print(json.dumps(pooled_child(args.child, args.rows)))
        return
    if args.pooled:
        rows = args.rows or (100_000 if args.quick else 3_080_000)
        results = pooled([int(c) for c in args.coins.split(",")], rows)
        out = args.out or str(ROOT / "benchmarks" / "results" / ("pooled_quick.json" if args.quick else "pooled.json"))
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(json.dumps({"versions": versions(), "rows_per_coin": rows, "pooled": results}, indent=2))
        print(
            f"{'coins':>5}  {'candles':>12}  {'seconds':>8}  {'CPU s':>7}  {'rows/s':>10}  {'peak RSS MB':>11}  "
            f"{'estimate MB':>11}"
        )
        for r in results:
            if "peak_rss_mb" in r:
                print(
                    f"{r['coins']:>5}  {r['candles']:>12,}  {r['seconds']:>8.2f}  {r.get('cpu_s', 0):>7.2f}  "
                    f"{r['rows_per_s']:>10,}  {r['peak_rss_mb']:>11,}  {r['estimate_mb']:>11,}"
                )
            else:
                print(f"{r['coins']:>5}  {r['candles']:>12,}  {r.get('refused') or r.get('failed')}")
        print(f"written: {out}")
        return
    args.out = args.out or str(ROOT / "benchmarks" / "results" / "pipeline.json")
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
            cfg = cfg_for(
                f"model={family}",
                "logger=none",
                f"paths.run_dir={tmp}",
                *(["data.rows=50000"] if args.quick else []),
                *extra,
            )
            result, s = timed(lambda: train(cfg))
        runs[family] = {
            "wall_s": round(s, 2),
            "accuracy": result.test_metrics["accuracy"],
            "oracle_accuracy": result.data_summary.oracle_accuracy,
            "persistence": result.baselines["persistence"]["accuracy"],
            "phase_seconds": result.run.phase_seconds,
            "train_rows": result.data_summary.rows_per_split["train"],
        }
        rows.append((f"default run: {family} (synthetic, {cfg.data.rows} candles)", cfg.data.rows, s))

    report = {
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform()},
        "quick": args.quick,
        "measurements": [
            {"what": w, "rows": n, "seconds": round(s, 3), "rows_per_s": round(n / s)} for w, n, s in rows
        ],
        "runs": runs,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2))
    width = max(len(w) for w, _, _ in rows)
    print(f"{'what':<{width}}  {'rows':>10}  {'seconds':>8}  {'rows/s':>12}")
    for w, n, s in rows:
        print(f"{w:<{width}}  {n:>10,}  {s:>8.2f}  {n / s:>12,.0f}")
    for family, r in runs.items():
        print(
            f"{family}: accuracy {r['accuracy']:.4f}  persistence {r['persistence']:.4f}  "
            f"oracle {r['oracle_accuracy']:.4f}  phases {r['phase_seconds']}"
        )
    print(f"written: {args.out}")


if __name__ == "__main__":
    main()
