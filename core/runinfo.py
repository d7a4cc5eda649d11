"""Run identity and safe writes: run id, git commit, config hash, atomic JSON/dir writes."""

import hashlib
import json
import os
import secrets
import shutil
import subprocess
import tempfile
from datetime import datetime, timezone
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

# Keys that place, continue, log, pace or judge a run rather than define its model: excluded from the
# config hash (dotted keys drop one leaf, e.g. the thread count a plan sweeper sets per job).
_PLACEMENT_KEYS = (
    "paths",
    "resume",
    "registry",
    "logger",
    "eval",
    "plan",
    "runtime",
    "callbacks",
    "trainer.num_threads",
    "device.devices",
    "model.checks",  # the ranges a family's keys are checked against, not the model
)


def utc_now() -> str:
    """ISO time with milliseconds: enough to order a plan's jobs that start within one second."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def hydra_mode() -> str | None:
    """How Hydra started this process: "RUN" (one `python train.py ...`), "MULTIRUN" (a job of `-m`), or
    None when no Hydra app is running (a direct call of trainer.train)."""
    from hydra.core.hydra_config import HydraConfig

    return HydraConfig.get().mode.name if HydraConfig.initialized() else None


def new_run_id() -> str:
    """UTC time to the millisecond plus 32 random bits: unique per process even when many start together."""
    now = datetime.now(timezone.utc)
    return f"{now:%Y%m%dT%H%M%S}.{now.microsecond // 1000:03d}-{secrets.token_hex(4)}"


def register_resolvers() -> None:
    """``${run_stamp:}`` in conf/hydra names a run or sweep folder with a fresh run id; cached per config, so
    every read of ``hydra.run.dir`` (and every job of a sweep, which inherits the cache) sees the same one."""
    if not OmegaConf.has_resolver("run_stamp"):
        OmegaConf.register_new_resolver("run_stamp", new_run_id, use_cache=True)


register_resolvers()


def git_commit(root: Path) -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    return out.stdout.strip() or None


def config_hash(cfg: DictConfig) -> str:
    container = OmegaConf.to_container(cfg, resolve=True)
    for key in _PLACEMENT_KEYS:
        *parents, leaf = key.split(".")
        node = container
        for part in parents:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(leaf, None)
    blob = json.dumps(container, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def write_json_atomic(path: Path, payload: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(payload, f, indent=2, default=str)
    os.replace(tmp, path)


def fresh_temp_dir(final: Path) -> Path:
    final.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.", suffix=".tmp"))


def publish_dir(tmp: Path, final: Path) -> None:
    """Move a fully written directory into place (replacing an older one)."""
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)


def data_fingerprint(by_symbol: dict) -> str:
    """sha256 over every symbol's candles (timestamps and OHLCV values): which data a model was trained on."""
    h = hashlib.sha256()
    for sym in sorted(by_symbol):
        frame = by_symbol[sym]
        h.update(sym.encode())
        h.update(frame["timestamp"].to_numpy("datetime64[ns]").astype("int64").tobytes())
        h.update(frame[["open", "high", "low", "close", "volume"]].to_numpy("float64").tobytes())
    return h.hexdigest()[:16]
