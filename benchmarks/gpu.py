"""GPU-stage training speed of the sequence nets: throughput, GPU utilisation and memory, the GPU/CPU ratio
and the cost of the progress/cancellation hooks on the GPU. Writes JSON, prints a table.

    .venv/bin/python benchmarks/gpu.py                         # 3.08M 1m candles, lstm + transformer, 1 epoch
    .venv/bin/python benchmarks/gpu.py --quick                 # 100k candles, 1 epoch, one hooks pair
    .venv/bin/python benchmarks/gpu.py --families lstm --epochs 2 --precision bf16-mixed --batch-size 2048
    .venv/bin/python benchmarks/gpu.py --families transformer --out benchmarks/results/gpu_transformer.json

Families: `lstm` (hidden 128, 3 layers, window 60) and `transformer` (its defaults, window 60), one synthetic
coin, every run through `trainer.train` (logger none, no shuffled-label control, no trading backtest, no
registry, patience larger than the epochs so every epoch runs). Per family, on a CUDA GPU:

- samples/s: training windows per second in the steady state of the epoch, counted from the progress
  events (every 10th batch): windows between the first and the last step event of an epoch over the time
  between them. The first batches (CUDA/cuDNN start-up) and the validation pass are outside it. The JSON
  also holds the cruder `samples_per_s_fit_phase` = training windows x epochs / fit-phase seconds.
- epoch s: wall time of one epoch as the run waits for it (training + validation pass; the first epoch
  also carries Lightning's set-up). With more than one epoch: the median of the epochs after the first.
- fit s: `run.phase_seconds.fit` of result.json. It also holds what follows the last epoch ("after
  epochs s": best-checkpoint restore and the test-set prediction, on the same GPU).
- GPU utilisation: sampled every 200 ms in a background thread (NVML through `pynvml`, else
  `nvidia-smi -lms 200`): mean and p10/p50/p90 of the samples taken during the training epochs (first to
  last step event), and the mean over the whole fit phase. NVML's figure is the share of time in which any
  kernel ran, not how busy the SMs were.
- peak GPU memory: `torch.cuda.max_memory_allocated` over the family's runs (reserved memory in the JSON).
- CPU samples/s: the same model on the same candles with `device=cpu`, timed the same way over the first
  `--cpu-batches` batches; the run is then stopped through its cancellation token, so no CPU validation
  pass or test prediction is waited for. GPU/CPU = the ratio of the two steady-state rates.
- hooks: fit-phase seconds with `callbacks.hooks=true` vs `false` in ABBA order after a small warm-up run,
  as benchmarks/callbacks.py does; on a GPU the hooks also synchronise (the loss is read every 10th batch).
  "of training" relates the difference to the fit phase without its after-epochs part.

Targets: GPU utilisation >= 90% during the LSTM epoch on an H100; hooks < 1% of the fit.
Without a CUDA GPU the CPU numbers are measured, the GPU columns read "n/a (no CUDA GPU)", and the
script exits 0 with a one-line note.
"""

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("CANDLELAB_ROOT", str(ROOT))

import numpy as np  # noqa: E402
import pytorch_lightning as pl  # noqa: E402
import torch  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402

from callbacks.cancel import CancellationToken  # noqa: E402
from core.devices import resolve_device  # noqa: E402
from trainer import train  # noqa: E402

NO_GPU = "n/a (no CUDA GPU)"
FAMILIES = {
    "lstm": ["model=lstm", "model.hidden=128", "model.layers=3", "model.window=60"],
    "transformer": ["model=transformer", "model.window=60"],
}
COMMON = [
    "logger=none",
    "eval.leakage.shuffled_control=false",
    "eval.trading.enabled=false",
    "registry.enabled=false",
    "model.patience=1000",
]
SAMPLE_MS = 200
UTIL_TARGET_PCT = 90.0
HOOKS_TARGET_PCT = 1.0


def cfg_for(*overrides):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


def gpu_ids() -> list[str]:
    """NVML / nvidia-smi names that may denote torch's cuda:0, most specific first: its UUID (immune to
    CUDA_VISIBLE_DEVICES renumbering), the first visible device, index 0."""
    ids = []
    try:
        ids.append(f"GPU-{torch.cuda.get_device_properties(0).uuid}")
    except Exception:
        pass
    ids += [os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",")[0].strip(), "0"]
    return list(dict.fromkeys(i for i in ids if i))


class UtilSampler:
    """Samples (unix time, utilisation %, memory used MiB) of one GPU every SAMPLE_MS in the background."""

    def __init__(self, candidates: list[str]):
        self.gpu_id = None
        self.samples: list[tuple[float, float, float]] = []
        self.source = None
        self.error = None
        self._stop = threading.Event()
        self._thread = self._proc = self._handle = None
        try:
            import pynvml
        except ImportError:
            pynvml = None
        for gpu_id in candidates:
            try:
                if pynvml is not None:
                    self._nvml, self._handle = pynvml, self._nvml_handle(pynvml, gpu_id)
                    pynvml.nvmlDeviceGetUtilizationRates(self._handle)  # fails here where unsupported (MIG)
                    self.source = "pynvml"
                elif shutil.which("nvidia-smi"):
                    subprocess.run(
                        ["nvidia-smi", "-i", gpu_id, "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits"],
                        check=True,
                        capture_output=True,
                        timeout=30,
                    )
                    self.source = "nvidia-smi"
                else:
                    self.error = "neither pynvml nor nvidia-smi available"
                    return
                self.gpu_id, self.error = gpu_id, None
                return
            except Exception as exc:
                self.error = f"{'NVML' if pynvml is not None else 'nvidia-smi'} ({gpu_id}): {exc}"

    @staticmethod
    def _nvml_handle(pynvml, gpu_id: str):
        pynvml.nvmlInit()
        if gpu_id.isdigit():
            return pynvml.nvmlDeviceGetHandleByIndex(int(gpu_id))
        try:
            return pynvml.nvmlDeviceGetHandleByUUID(gpu_id)
        except Exception:  # older bindings take bytes
            return pynvml.nvmlDeviceGetHandleByUUID(gpu_id.encode())

    def start(self) -> None:
        self.samples, self._stop = [], threading.Event()
        if self.source == "pynvml":
            self._thread = threading.Thread(target=self._poll_nvml, daemon=True)
        elif self.source == "nvidia-smi":
            # the timestamp column dates each sample even if the pipe delivers lines late
            self._proc = subprocess.Popen(
                [
                    "nvidia-smi",
                    "-i",
                    self.gpu_id,
                    "--query-gpu=timestamp,utilization.gpu,memory.used",
                    "--format=csv,noheader,nounits",
                    "-lms",
                    str(SAMPLE_MS),
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                text=True,
            )
            self._thread = threading.Thread(target=self._read_smi, daemon=True)
        else:
            return
        self._thread.start()

    def stop(self) -> list[tuple[float, float, float]]:
        self._stop.set()
        if self._proc is not None:
            self._proc.terminate()
            self._proc.wait(timeout=10)
            self._proc = None
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        return list(self.samples)

    def _poll_nvml(self) -> None:
        while not self._stop.is_set():
            try:
                util = self._nvml.nvmlDeviceGetUtilizationRates(self._handle).gpu
                used = self._nvml.nvmlDeviceGetMemoryInfo(self._handle).used / 2**20
                self.samples.append((time.time(), float(util), float(used)))
            except Exception as exc:
                self.error = f"NVML: {exc}"
            self._stop.wait(SAMPLE_MS / 1000)

    def _read_smi(self) -> None:
        for line in self._proc.stdout:
            parts = [p.strip() for p in line.split(",")]
            try:
                try:
                    stamp = datetime.strptime(parts[0], "%Y/%m/%d %H:%M:%S.%f").timestamp()
                except ValueError:
                    stamp = time.time()
                self.samples.append((stamp, float(parts[1]), float(parts[2])))
            except (IndexError, ValueError):  # "[N/A]" or "[Not Supported]"
                self.error = f"nvidia-smi: {line.strip()}"


class Timeline:
    """Progress events of one run with their arrival time, and the fit-phase windows derived from them."""

    def __init__(self):
        self.events: list[tuple[float, object]] = []

    def add(self, event) -> None:
        self.events.append((time.time(), event))

    def fit_window(self) -> tuple[float, float] | None:
        start = next((t for t, e in self.events if e.phase == "fit" and e.kind == "phase"), None)
        if start is None:
            return None
        end = next((t for t, e in self.events if t >= start and e.phase != "fit"), self.events[-1][0])
        return start, end

    def steps(self) -> dict[int, list[tuple[float, int, int]]]:
        """epoch -> [(time, batch within the epoch, batches in the epoch)] of the fit's step events."""
        out: dict[int, list] = {}
        for t, e in self.events:
            if e.phase == "fit" and e.kind == "step":
                out.setdefault(e.epoch, []).append((t, e.batch, e.batches))
        return out

    def epoch_ends(self) -> list[float]:
        return [t for t, e in self.events if e.phase == "fit" and e.kind == "epoch"]

    def epoch_windows(self) -> list[tuple[float, float]]:
        return [(s[0][0], s[-1][0]) for s in self.steps().values() if len(s) > 1]

    def steady_rate(self, batch_size: int, n_train: int | None) -> dict | None:
        """Windows per second between the first and the last step event of each epoch (summed over epochs)."""

        def windows_through(batch, batches):  # the last batch of an epoch may be short
            if n_train and batch >= batches:
                return n_train
            return batch * batch_size

        windows = seconds = batches_timed = 0
        for s in self.steps().values():
            if len(s) < 2:
                continue
            (t0, b0, n), (t1, b1, _) = s[0], s[-1]
            windows += windows_through(b1, n) - windows_through(b0, n)
            seconds += t1 - t0
            batches_timed += b1 - b0
        if not seconds:
            return None
        return {
            "samples_per_s": windows / seconds,
            "windows_timed": windows,
            "seconds_timed": seconds,
            "batches_timed": batches_timed,
        }


def summarise(samples, windows) -> dict | None:
    inside = [(u, m) for t, u, m in samples if any(a <= t <= b for a, b in windows)]
    if not inside:
        return None
    util = np.array([u for u, _ in inside])
    return {
        "mean": float(util.mean()),
        "p10": float(np.percentile(util, 10)),
        "p50": float(np.percentile(util, 50)),
        "p90": float(np.percentile(util, 90)),
        "samples": len(inside),
        "memory_used_max_mib": float(max(m for _, m in inside)),
    }


def run_once(overrides: list[str], sampler: UtilSampler | None = None, stop_after_batches: int | None = None) -> dict:
    """One train() call; its result, its events, and (on a GPU) utilisation samples and peak memory."""
    timeline, token = Timeline(), CancellationToken()

    def on_event(event):
        timeline.add(event)
        if stop_after_batches and event.kind == "step" and event.batch >= stop_after_batches:
            token.cancel("benchmark: CPU slice timed")

    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    if sampler is not None:
        sampler.start()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            cfg = cfg_for(*overrides, f"paths.run_dir={tmp}")
            result = train(cfg, progress_callback=on_event, cancellation_token=token)
    finally:
        samples = sampler.stop() if sampler is not None else []
    out = {
        "result": result.to_json(),
        "timeline": timeline,
        "samples": samples,
        "batch_size": int(cfg.model.batch_size),
    }
    if cuda:
        out["peak_allocated_mib"] = torch.cuda.max_memory_allocated() / 2**20
        out["peak_reserved_mib"] = torch.cuda.max_memory_reserved() / 2**20
    return out


def gpu_run_summary(run: dict, hooks: bool) -> dict:
    result, timeline = run["result"], run["timeline"]
    n_train = result["data_summary"]["rows_per_split"]["train"]
    fit_s = result["run"]["phase_seconds"]["fit"]
    window = timeline.fit_window()
    ends = timeline.epoch_ends()
    out = {
        "hooks": hooks,
        "fit_s": fit_s,
        "epochs_run": len(ends) if hooks else None,
        "peak_allocated_mib": run["peak_allocated_mib"],
        "peak_reserved_mib": run["peak_reserved_mib"],
        "util_fit": summarise(run["samples"], [window]) if window else None,
    }
    if hooks and window and ends:
        epochs = len(ends)
        out.update(
            epoch_s=[b - a for a, b in zip([window[0], *ends], ends)],
            after_epochs_s=window[1] - ends[-1],
            samples_per_s_fit_phase=n_train * epochs / fit_s,
            steady=timeline.steady_rate(run["batch_size"], n_train),
            util_epoch=summarise(run["samples"], timeline.epoch_windows()),
        )
    return out


def median_of(runs: list[dict], key):
    values = [key(r) for r in runs]
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def measure_family(family: str, args, gpu: bool, sampler: UtilSampler | None) -> dict:
    base = [
        *FAMILIES[family],
        *COMMON,
        f"data.rows={args.rows}",
        f"model.max_epochs={args.epochs}",
        f"trainer.num_threads={args.threads}",
    ]
    if args.batch_size:
        base.append(f"model.batch_size={args.batch_size}")
    gpu_over = [*base, "device=gpu", *([f"device.precision={args.precision}"] if args.precision else [])]
    report: dict = {"overrides_gpu": gpu_over, "overrides_cpu": [*base, "device=cpu"]}
    cfg = cfg_for(*gpu_over)
    report["batch_size"] = int(cfg.model.batch_size)
    report["precision_gpu"] = resolve_device(cfg.device, cfg.model.stage).precision if gpu else NO_GPU
    report["precision_cpu"] = str(cfg_for(*base, "device=cpu").device.precision)

    if gpu:
        warm = [
            *gpu_over,
            f"data.rows={min(args.rows, 20_000)}",
            "model.max_epochs=1",
            "trainer.limit_train_batches=20",
        ]
        run_once(warm)  # CUDA context, cuDNN handles, allocator: paid once per process, not by the timed runs
        runs = []
        for i in range(args.pairs):  # ABBA, so drift in machine load hits both alike
            for hooks in (True, False) if i % 2 == 0 else (False, True):
                run = run_once([*gpu_over, f"callbacks.hooks={str(hooks).lower()}"], sampler)
                runs.append(gpu_run_summary(run, hooks))
                split_rows = run["result"]["data_summary"]["rows_per_split"]
                report["n_parameters"] = run["result"]["model_info"].get("n_parameters")
                r = runs[-1]
                rate = r.get("steady") or {}
                print(
                    f"[gpu] {family} hooks={'on ' if hooks else 'off'} fit {r['fit_s']:.1f} s"
                    + (f", {rate['samples_per_s']:,.0f} samples/s" if rate else "")
                    + (f", util {r['util_epoch']['mean']:.0f}%" if r.get("util_epoch") else ""),
                    file=sys.stderr,
                    flush=True,
                )
        report["windows"] = split_rows
        report["batches_per_epoch"] = -(-split_rows["train"] // report["batch_size"])
        on = [r for r in runs if r["hooks"]]
        off = [r for r in runs if not r["hooks"]]
        epoch_s = [e for r in on for e in (r["epoch_s"][1:] if len(r["epoch_s"]) > 1 else r["epoch_s"])]
        report["gpu"] = {
            "samples_per_s": median_of(on, lambda r: (r.get("steady") or {}).get("samples_per_s")),
            "samples_per_s_fit_phase": median_of(on, lambda r: r.get("samples_per_s_fit_phase")),
            "epoch_s": statistics.median(epoch_s) if epoch_s else None,
            "fit_s": median_of(on, lambda r: r["fit_s"]),
            "after_epochs_s": median_of(on, lambda r: r.get("after_epochs_s")),
            "util_epoch": {
                k: median_of(on, lambda r: (r.get("util_epoch") or {}).get(k))
                for k in ("mean", "p10", "p50", "p90", "samples")
            },
            "util_fit_mean": median_of(on, lambda r: (r.get("util_fit") or {}).get("mean")),
            "peak_allocated_mib": max(r["peak_allocated_mib"] for r in runs),
            "peak_reserved_mib": max(r["peak_reserved_mib"] for r in runs),
            "util_source": sampler.source if sampler else None,
            "util_error": sampler.error if sampler else None,
            "runs": runs,
        }
        m_on, m_off = median_of(on, lambda r: r["fit_s"]), median_of(off, lambda r: r["fit_s"])
        tail = report["gpu"]["after_epochs_s"] or 0.0
        off_s = [r["fit_s"] for r in off]
        report["hooks"] = {
            "with_hooks_s": [r["fit_s"] for r in on],
            "without_hooks_s": off_s,
            "median_with_s": m_on,
            "median_without_s": m_off,
            "overhead_pct": 100.0 * (m_on - m_off) / m_off,
            "overhead_pct_of_training": 100.0 * (m_on - m_off) / (m_off - tail) if m_off > tail else None,
            "noise_pct": 100.0 * (max(off_s) - min(off_s)) / min(off_s) if len(off_s) > 1 else None,
        }
    else:
        report["gpu"] = report["hooks"] = NO_GPU

    cpu = run_once([*base, "device=cpu"], stop_after_batches=args.cpu_batches)
    n_train = (cpu["result"].get("data_summary") or {}).get("rows_per_split", {}).get("train")
    rate = cpu["timeline"].steady_rate(cpu["batch_size"], n_train)
    report["cpu"] = {**(rate or {"samples_per_s": None}), "threads": args.threads, "status": cpu["result"]["status"]}
    print(
        f"[cpu] {family}: "
        + (
            f"{rate['samples_per_s']:,.0f} samples/s over {rate['batches_timed']} batches"
            if rate
            else "too few batches to time"
        ),
        file=sys.stderr,
        flush=True,
    )
    g = report["gpu"]["samples_per_s"] if gpu else None
    report["gpu_over_cpu"] = g / rate["samples_per_s"] if g and rate else (None if gpu else NO_GPU)
    return report


def targets(report: dict) -> dict:
    out = {}
    lstm_gpu = report["families"].get("lstm", {}).get("gpu")
    util = lstm_gpu["util_epoch"]["mean"] if isinstance(lstm_gpu, dict) else None
    out["lstm_gpu_util_pct"] = {
        "target": f">= {UTIL_TARGET_PCT:.0f} (H100)",
        "value": util,
        "met": None if util is None else util >= UTIL_TARGET_PCT,
    }
    for family, r in report["families"].items():
        if isinstance(r.get("hooks"), dict):
            pct = r["hooks"]["overhead_pct"]
            out[f"{family}_hooks_pct"] = {
                "target": f"< {HOOKS_TARGET_PCT:.0f}",
                "value": pct,
                "met": pct < HOOKS_TARGET_PCT,
            }
    return out


def fmt(value, spec: str, unit: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    return f"{value:{spec}}{unit}"


def print_table(headers: list[str], rows: list[list[str]]) -> None:
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(headers)]
    print("  ".join(h.ljust(w) if i == 0 else h.rjust(w) for i, (h, w) in enumerate(zip(headers, widths))))
    for r in rows:
        print("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))))


def print_report(report: dict) -> None:
    rows, hook_rows, failed = [], [], []
    for family, r in report["families"].items():
        if "error" in r:
            failed.append(f"{family}: failed: {r['error']}")
            continue
        g, h = r["gpu"], r["hooks"]
        if isinstance(g, dict):
            u = g["util_epoch"]
            gpu_cells = [
                fmt(g["samples_per_s"], ",.0f"),
                fmt(g["epoch_s"], ".1f"),
                fmt(g["fit_s"], ".1f"),
                fmt(g["after_epochs_s"], ".1f"),
                fmt(u["mean"], ".0f", "%"),
                fmt(u["p10"], ".0f", "%"),
                fmt(u["p50"], ".0f", "%"),
                fmt(u["p90"], ".0f", "%"),
                fmt(g["util_fit_mean"], ".0f", "%"),
                fmt(g["peak_allocated_mib"], ",.0f"),
            ]
        else:
            gpu_cells = [NO_GPU] * 10
        rows.append(
            [
                family,
                r["precision_gpu"],
                *gpu_cells,
                fmt(r["cpu"]["samples_per_s"], ",.0f"),
                fmt(r["gpu_over_cpu"], ".1f", "x"),
            ]
        )
        if isinstance(h, dict):
            hook_rows.append(
                [
                    family,
                    fmt(h["median_with_s"], ".2f", " s"),
                    fmt(h["median_without_s"], ".2f", " s"),
                    fmt(h["overhead_pct"], "+.2f", "%"),
                    fmt(h["overhead_pct_of_training"], "+.2f", "%"),
                    fmt(h["noise_pct"], ".1f", "%"),
                    f"< {HOOKS_TARGET_PCT:.0f}%",
                ]
            )
        else:
            hook_rows.append([family] + [NO_GPU] * 5 + [f"< {HOOKS_TARGET_PCT:.0f}%"])
    s = report["settings"]
    print(
        f"device: {report['device']}  torch {report['torch']}  rows {s['rows']:,}  epochs {s['epochs']}  "
        f"threads {s['threads']}  GPU utilisation from: {report['util_source'] or '-'}"
    )
    print_table(
        [
            "family",
            "precision",
            "GPU samples/s",
            "epoch s",
            "fit s",
            "after epochs s",
            "GPU util",
            "p10",
            "p50",
            "p90",
            "util (fit phase)",
            "peak GPU MiB",
            "CPU samples/s",
            "GPU/CPU",
        ],
        rows,
    )
    print()
    print_table(["family", "fit with hooks", "without", "difference", "of training", "noise", "target"], hook_rows)
    for line in failed:
        print(line)
    for name, t in report["targets"].items():
        met = "-" if t["met"] is None else ("met" if t["met"] else "missed")
        print(f"target {name} {t['target']}: {fmt(t['value'], '.2f')} ({met})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="100k candles, 1 epoch, one hooks pair")
    ap.add_argument("--families", default="lstm,transformer")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--rows", type=int, default=None, help="candles (default 3,080,000; --quick 100,000)")
    ap.add_argument("--precision", default=None, help="device.precision of the GPU runs (default: the device config's)")
    ap.add_argument("--batch-size", type=int, default=None, help="model.batch_size (default: the family's)")
    ap.add_argument("--pairs", type=int, default=None, help="hooks on/off pairs, ABBA (default 2; --quick 1)")
    ap.add_argument("--cpu-batches", type=int, default=50, help="batches timed on the CPU (timed from the 10th)")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="trainer.num_threads (default: all)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "gpu.json"))
    args = ap.parse_args()
    families = args.families.split(",")
    unknown = [f for f in families if f not in FAMILIES]
    if unknown:
        ap.error(f"unknown families {unknown}; available: {', '.join(FAMILIES)}")
    args.rows = args.rows or (100_000 if args.quick else 3_080_000)
    args.pairs = args.pairs or (1 if args.quick else 2)

    gpu = torch.cuda.is_available()
    sampler = UtilSampler(gpu_ids()) if gpu else None
    report = {
        "device": torch.cuda.get_device_name(0) if gpu else "cpu only",
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if gpu else None,
        "lightning": pl.__version__,
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "quick": args.quick,
        "settings": {
            "rows": args.rows,
            "epochs": args.epochs,
            "precision": args.precision or "device config",
            "batch_size": args.batch_size or "family config",
            "pairs": args.pairs,
            "cpu_batches": args.cpu_batches,
            "threads": args.threads,
            "common": COMMON,
        },
        "util_source": sampler.source if sampler else None,
        "util_gpu_id": sampler.gpu_id if sampler else None,
        "util_error": sampler.error if sampler else None,
        "families": {},
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    failed = False
    for family in families:
        try:
            report["families"][family] = measure_family(family, args, gpu, sampler)
        except Exception as exc:  # one family failing must not lose the other's numbers
            failed = True
            report["families"][family] = {"error": f"{type(exc).__name__}: {exc}"}
            print(f"[error] {family}: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
        report["targets"] = targets(report)
        out.write_text(json.dumps(report, indent=2, default=str))  # after each family, so a cut-off run keeps some
    print_report(report)
    print(f"written: {out}")
    if not gpu:
        print(f"note: no CUDA GPU visible to torch {torch.__version__}: CPU numbers only, GPU columns are n/a")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
