"""Cost of the progress + cancellation hooks, and cancellation latency, per family. Writes JSON, prints a table.

    .venv/bin/python benchmarks/callbacks.py             # overhead (3-5 repeats) + 20 latency trials per family
    .venv/bin/python benchmarks/callbacks.py --quick     # fewer repeats and trials

Overhead: the fit phase of the same run (same data, seed, fixed number of epochs/rounds) with
`callbacks.hooks=true` (default sinks: log + JSONL, token polled) vs `callbacks.hooks=false`, in ABBA
order; "noise" is the spread of the hook-free runs, the floor below which a difference means nothing.
Because that floor is large on a shared machine, the hooks' own cost is also timed directly: per batch or
boosting round, real sinks, every 10th call reporting, as a share of one measured step ("hook %").
Latency: a token is cancelled from another thread at a random moment of the fit; the time from
`cancel()` to `train()` returning (checkpoint/partial model and result.json written) is recorded.
"""

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("CANDLELAB_ROOT", str(ROOT))

from hydra import compose, initialize_config_dir  # noqa: E402

from callbacks.cancel import CancellationToken  # noqa: E402
from trainer import train  # noqa: E402

COMMON = ["logger=none", "trainer.num_threads=2"]
OVERHEAD = {
    "lstm": ["model=lstm", "data.rows=60000", "model.max_epochs=2", "model.patience=10"],
    "lightgbm": ["model=lightgbm", "data.rows=100000", "model.n_estimators=300", "model.early_stopping_rounds=1000"],
    "xgboost": ["model=xgboost", "data.rows=100000", "model.n_estimators=300", "model.early_stopping_rounds=1000"],
    "catboost": ["model=catboost", "data.rows=100000", "model.n_estimators=300", "model.early_stopping_rounds=1000"],
}
LATENCY = {
    "lstm": ["model=lstm", "model.max_epochs=100", "model.patience=100"],
    "lightgbm": [
        "model=lightgbm",
        "model.n_estimators=100000",
        "model.early_stopping_rounds=100000",
        "model.params.learning_rate=0.0001",
    ],
    "xgboost": [
        "model=xgboost",
        "model.n_estimators=100000",
        "model.early_stopping_rounds=100000",
        "model.params.learning_rate=0.0001",
    ],
    "catboost": [
        "model=catboost",
        "model.n_estimators=100000",
        "model.early_stopping_rounds=100000",
        "model.params.learning_rate=0.0001",
    ],
}


def cfg_for(*overrides):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


def fit_seconds(overrides, hooks: bool) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        result = train(cfg_for(*overrides, *COMMON, f"callbacks.hooks={str(hooks).lower()}", f"paths.run_dir={tmp}"))
    return result.run.phase_seconds["fit"]


def overhead(family: str, pairs: int) -> dict:
    fit_seconds(OVERHEAD[family], True)  # warm caches and imports
    on, off = [], []
    for i in range(pairs):  # ABBA order, so drift in machine load hits both alike
        for hooks in (True, False) if i % 2 == 0 else (False, True):
            (on if hooks else off).append(fit_seconds(OVERHEAD[family], hooks))
    m_on, m_off = statistics.median(on), statistics.median(off)
    return {
        "with_hooks_s": on,
        "without_hooks_s": off,
        "median_with_s": m_on,
        "median_without_s": m_off,
        "overhead_pct": 100.0 * (m_on - m_off) / m_off,
        "overhead_pct_of_minimums": 100.0 * (min(on) - min(off)) / min(off),
        "noise_pct": 100.0 * (max(off) - min(off)) / min(off),
    }


def latency_trial(family: str, rng: random.Random) -> dict:
    token = CancellationToken()
    marks: dict = {"steps": []}

    def on_event(event):
        if event.kind == "step":
            marks["steps"].append(time.perf_counter())
            if "timer" not in marks:  # the fit is running: cancel at a random moment from another thread

                def fire():
                    marks["cancel"] = time.perf_counter()
                    token.cancel("benchmark")

                marks["timer"] = threading.Timer(rng.uniform(0.05, 0.4), fire)
                marks["timer"].start()

    with tempfile.TemporaryDirectory() as tmp:
        cfg = cfg_for(
            *LATENCY[family], *COMMON, "data.rows=20000", "callbacks.progress.every_n_batches=1", f"paths.run_dir={tmp}"
        )
        result = train(cfg, progress_callback=on_event, cancellation_token=token)
        returned = time.perf_counter()
    assert result.status == "cancelled", result.status
    steps = marks["steps"]
    gaps = [b - a for a, b in zip(steps, steps[1:])]
    return {
        "latency_ms": 1000 * (returned - marks["cancel"]),
        "step_ms": 1000 * statistics.median(gaps) if gaps else None,
    }


def hook_cost_us(family: str, calls: int = 20000) -> float:
    """Mean cost of the hooks per batch (nets) or round (trees), with the real sinks (log + JSONL) and a
    token whose stop file is polled, reporting every 10th call as the default config does."""
    from types import SimpleNamespace

    import lightgbm as lgb
    import torch

    from callbacks.boosting import LightGBMHooks
    from callbacks.lightning import CancelCallback, ProgressCallback
    from callbacks.progress import ProgressReporter
    from callbacks.sinks import build_sinks

    with tempfile.TemporaryDirectory() as tmp:
        reporter = ProgressReporter(build_sinks(Path(tmp), console=False))
        reporter.emit("fit")
        token = CancellationToken(stop_file=Path(tmp) / "STOP")
        if family == "lstm":
            progress, cancel = ProgressCallback(reporter, 10), CancelCallback(token, Path(tmp) / "c.ckpt", 5)
            trainer = SimpleNamespace(
                global_step=0, num_training_batches=1000, max_epochs=10, current_epoch=0, received_sigterm=False
            )
            outputs = {"loss": torch.tensor(0.69)}

            def call(i):
                trainer.global_step = i
                progress.on_train_batch_end(trainer, None, outputs, None, i)
                cancel.on_train_batch_end(trainer, None, outputs, None, i)
        else:  # the three tree hooks share _round; LightGBM's wrapper stands for them
            hooks = LightGBMHooks(reporter, token, 10, calls)
            results = [("train", "binary_logloss", 0.69, False), ("val", "binary_logloss", 0.69, False)]

            def call(i):
                hooks(lgb.callback.CallbackEnv(None, {}, i, 0, calls, results))

        start = time.perf_counter()
        for i in range(calls):
            call(i)
        elapsed = time.perf_counter() - start
        reporter.close()
    return 1e6 * elapsed / calls


def pct(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--families", default="lstm,lightgbm,xgboost,catboost")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "callbacks.json"))
    args = ap.parse_args()
    families = args.families.split(",")
    pairs, trials = (2, 5) if args.quick else (4, 20)
    rng = random.Random(0)
    report = {"cpus": os.cpu_count(), "quick": args.quick, "families": {}}
    for family in families:
        ov = overhead(family, pairs if family == "lstm" else 3 * pairs)
        runs = [latency_trial(family, rng) for _ in range(trials)]
        lat = [r["latency_ms"] for r in runs]
        step = statistics.median([r["step_ms"] for r in runs if r["step_ms"] is not None])
        cost = hook_cost_us(family)
        report["families"][family] = {
            "overhead": ov,
            "hook_us_per_step": cost,
            "hook_overhead_pct": 100.0 * cost / (1000.0 * step),
            "latency_ms": {
                "p50": pct(lat, 0.5),
                "p95": pct(lat, 0.95),
                "max": max(lat),
                "trials": len(lat),
                "all": lat,
            },
            "one_step_ms": step,
            "latency_target_ms": 50 + step,
        }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2))
    print(
        f"{'family':<10} {'fit w/ hooks':>13} {'w/o hooks':>10} {'overhead':>9} {'(of mins)':>9} {'noise':>7} "
        f"{'hook/step':>10} {'hook %':>7} {'cancel p50':>11} {'p95':>8} {'1 step':>8} {'target p95':>11}"
    )
    for family, r in report["families"].items():
        o, lt = r["overhead"], r["latency_ms"]
        print(
            f"{family:<10} {o['median_with_s']:>12.2f}s {o['median_without_s']:>9.2f}s {o['overhead_pct']:>8.2f}% "
            f"{o['overhead_pct_of_minimums']:>8.2f}% {o['noise_pct']:>6.1f}% "
            f"{r['hook_us_per_step']:>8.1f}us {r['hook_overhead_pct']:>6.2f}% "
            f"{lt['p50']:>9.1f}ms {lt['p95']:>6.1f}ms {r['one_step_ms']:>6.1f}ms {r['latency_target_ms']:>9.1f}ms"
        )
    print(f"written: {args.out}")


if __name__ == "__main__":
    main()
