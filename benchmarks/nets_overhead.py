"""Lightning's cost in a net fit: the LSTM fit of models/nets.py against a plain PyTorch loop over the same body,
head, loss, batches (the same WindowBatches, same shuffle), optimiser, gradient clipping and steps: one epoch of
training windows plus one pass over the validation windows, in ABBA order. Writes JSON, prints a table.

    .venv/bin/python benchmarks/nets_overhead.py            # 96,000 training windows, 3 ABBA pairs
    .venv/bin/python benchmarks/nets_overhead.py --quick    # 12,000 windows, 1 pair (seconds)

Throughput ratio = raw-loop seconds / Lightning seconds (1.0 = no overhead; target >= 0.97), from CPU seconds
(one thread by default: on a shared machine the wall clock mostly measures the neighbours) and from wall time.
"""

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("CANDLELAB_ROOT", str(ROOT))

import numpy as np  # noqa: E402
import pandas  # noqa: E402
import pytorch_lightning as pl  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402
from hydra.utils import instantiate  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

from callbacks.cancel import CancellationToken  # noqa: E402
from callbacks.progress import ProgressReporter  # noqa: E402
from core.devices import resolve_device  # noqa: E402
from data.scaling import Standardizer  # noqa: E402
from data.synthetic import generate  # noqa: E402
from data.table import build_table  # noqa: E402
from data.timeframes import to_timedelta  # noqa: E402
from models.base import FitContext, Rows, Task, balanced_weights  # noqa: E402
from models.lstm import LSTMModel  # noqa: E402
from models.nets import NetModule  # noqa: E402

TASK = Task("binary", 2, "balanced")
EPOCH_LOGGING = NetModule._last_batch


def cfg_for(*overrides):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


def windows_data(n_train: int, n_val: int, window: int, seed: int) -> tuple[Rows, Rows]:
    """Scaled features of synthetic candles; training and validation windows that end at consecutive rows."""
    cfg = cfg_for()
    candles = generate(["BTC"], n_train + n_val + window + 400, seed=seed).candles
    table = build_table(candles, cfg.features, cfg.target, to_timedelta("1m"))
    ok = np.flatnonzero((table.run_position() >= window - 1) & table.frame["label"].notna().to_numpy())
    train_rows, val_rows = ok[:n_train], ok[n_train : n_train + n_val]
    raw = table.matrix()
    X = Standardizer.fit(raw[train_rows], table.feature_names).transform(raw)
    y = table.frame["label"].to_numpy()
    return (
        Rows(features=X, rows=train_rows, y=y[train_rows].astype(np.int64)),
        Rows(features=X, rows=val_rows, y=y[val_rows].astype(np.int64)),
    )


def lightning_fit(cfg, train: Rows, val: Rows, run_dir: Path, per_batch_logging: bool = False) -> tuple[float, float]:
    """The fit a run does (hooks, checkpoints, early stopping, best-weights restore), timed end to end;
    ``per_batch_logging``: a Lightning log call every batch, as nets logged before (for the comparison)."""
    NetModule._last_batch = (lambda self, validation: None) if per_batch_logging else EPOCH_LOGGING
    pl.seed_everything(cfg.seed, verbose=False)
    model = LSTMModel.from_config(cfg.model, train.features.shape[1], cfg.seed, torch.get_num_threads(), TASK)
    ctx = FitContext(
        run_dir=run_dir,
        seed=cfg.seed,
        reporter=ProgressReporter([]),
        token=CancellationToken(),
        callbacks=cfg.callbacks,
        trainer=cfg.trainer,
        device=resolve_device(cfg.device, "gpu"),
    )
    start, cpu = time.perf_counter(), time.process_time()
    model.fit(train, val, ctx)
    return time.perf_counter() - start, time.process_time() - cpu


def raw_fit(cfg, train: Rows, val: Rows) -> tuple[float, float]:
    """The same steps written by hand: shuffled training batches, AdamW, clipping, then a validation pass."""
    pl.seed_everything(cfg.seed, verbose=False)
    model = LSTMModel.from_config(cfg.model, train.features.shape[1], cfg.seed, torch.get_num_threads(), TASK)
    net = model.net
    weights = torch.tensor(balanced_weights(train.y, 2), dtype=torch.float32)
    opts = OmegaConf.to_container(cfg.model.optimizer, resolve=True)
    torch.use_deterministic_algorithms(False)  # a plain loop's default (a Lightning fit may have set it)
    start, cpu = time.perf_counter(), time.process_time()
    optimizer = instantiate(opts)(params=net.parameters())
    clip = cfg.trainer.gradient_clip_val
    net.train()
    for x, y in model._batches(train, shuffle_seed=cfg.seed):
        loss = F.cross_entropy(net(x), y, weight=weights)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if clip:
            torch.nn.utils.clip_grad_norm_(net.parameters(), float(clip))
        optimizer.step()
    net.eval()
    with torch.no_grad():
        total, n = 0.0, 0
        for x, y in model._batches(val):
            total += float(F.cross_entropy(net(x), y, weight=weights)) * len(y)
            n += len(y)
    return time.perf_counter() - start, time.process_time() - cpu


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--windows", type=int, default=None, help="training windows [96,000; 12,000 with --quick]")
    ap.add_argument("--pairs", type=int, default=None, help="ABBA pairs [3; 1 with --quick]")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads [1]")
    ap.add_argument(
        "--with-per-batch-logging",
        action="store_true",
        help="also time the fit with a Lightning log call per batch (how nets logged before)",
    )
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    n_train = args.windows or (12_000 if args.quick else 96_000)
    pairs = args.pairs or (1 if args.quick else 3)
    out = args.out or str(
        ROOT / "benchmarks" / "results" / ("nets_overhead_quick.json" if args.quick else "nets_overhead.json")
    )
    torch.set_num_threads(args.threads)
    cfg = cfg_for("model=lstm", "model.max_epochs=1", "model.patience=10", "device=cpu", "logger=none")
    train, val = windows_data(n_train, n_train // 8, int(cfg.model.window), cfg.seed)
    kinds = ["lightning", "raw"] + (["lightning_per_batch_log"] if args.with_per_batch_logging else [])
    wall: dict[str, list[float]] = {k: [] for k in kinds}
    cpu: dict[str, list[float]] = {k: [] for k in kinds}
    warm_train, warm_val = Rows(train.features, train.rows[:2048], train.y[:2048]), val
    with tempfile.TemporaryDirectory() as tmp:

        def one(kind: str, tr: Rows, va: Rows, record: bool = True) -> None:
            if kind == "raw":
                w, c = raw_fit(cfg, tr, va)
            else:
                run_dir = Path(tmp) / f"{kind}{len(wall[kind])}{record}"
                w, c = lightning_fit(cfg, tr, va, run_dir, kind == "lightning_per_batch_log")
            if record:
                wall[kind].append(w)
                cpu[kind].append(c)

        for kind in kinds:  # warm-up on a few batches: imports, allocator, thread pools
            one(kind, warm_train, warm_val, record=False)
        for i in range(pairs):  # ABBA: drift in machine load hits every kind alike
            for kind in kinds if i % 2 == 0 else kinds[::-1]:
                one(kind, train, val)
    # CPU seconds of this (one-threaded by default) process: what a busy shared machine disturbs least
    med = {k: (statistics.median(wall[k]), statistics.median(cpu[k])) for k in kinds}
    report = {
        "versions": {
            "torch": torch.__version__,
            "pytorch_lightning": pl.__version__,
            "numpy": np.__version__,
            "pandas": pandas.__version__,
        },
        "model": {k: cfg.model[k] for k in ("window", "hidden", "layers", "batch_size")},
        "train_windows": int(len(train.rows)),
        "val_windows": int(len(val.rows)),
        "threads": args.threads,
        "wall_s": wall,
        "cpu_s": cpu,
        "throughput_ratio_cpu": round(med["raw"][1] / med["lightning"][1], 4),
        "throughput_ratio_wall": round(med["raw"][0] / med["lightning"][0], 4),
        **(
            {"per_batch_logging_ratio_cpu": round(med["raw"][1] / med["lightning_per_batch_log"][1], 4)}
            if args.with_per_batch_logging
            else {}
        ),
    }
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(report, indent=2))
    print(
        f"LSTM {report['model']}, {report['train_windows']:,} training + {report['val_windows']:,} validation "
        f"windows, 1 epoch, {pairs} ABBA pairs, {args.threads} thread(s)"
    )
    print(f"{'fit':<24}  {'median CPU s':>12}  {'median wall s':>13}")
    for kind in kinds:
        print(f"{kind:<24}  {med[kind][1]:>12.2f}  {med[kind][0]:>13.2f}")
    if args.with_per_batch_logging:
        print(f"raw / Lightning with a log call per batch (CPU): {report['per_batch_logging_ratio_cpu']:.3f}")
    print(
        f"throughput ratio raw / Lightning: {report['throughput_ratio_cpu']:.3f} (CPU), "
        f"{report['throughput_ratio_wall']:.3f} (wall)   written: {out}"
    )


if __name__ == "__main__":
    main()
