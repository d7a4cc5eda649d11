"""Which checkpoint `resume=...` continues from: an explicit path, or the newest unfinished run of the
same configuration under the output folder. A run keeps ``latest.ckpt`` (each completed epoch) and, when it
was cancelled, ``cancelled.ckpt`` (the batch it stopped at, first epoch included): the newer one continues.
The chosen file is checked with a safe load (no code runs) before any work starts."""

import json
import logging
from pathlib import Path

from omegaconf import DictConfig

from callbacks.checkpoints import read_checkpoint
from core.errors import UserError
from trainer.result import RunResult

log = logging.getLogger(__name__)

LATEST = Path("checkpoints") / "latest.ckpt"
CANCELLED = Path("checkpoints") / "cancelled.ckpt"


def newest_checkpoint(run_dir: Path) -> Path | None:
    """The run's most recent resumable state: its cancel-time checkpoint or its last epoch's, the newer."""
    kept = [run_dir / p for p in (CANCELLED, LATEST) if (run_dir / p).is_file()]
    return max(kept, key=lambda p: p.stat().st_mtime_ns) if kept else None


def _continuable(path: Path, where: str) -> str:
    """``path`` after a safe load; a cancel-time state taken inside a validation pass (a signal that came
    between two of its batches) cannot be continued by Lightning: the epoch before it is, when there is one."""
    state = read_checkpoint(path, where)
    stopped = ((state.get("callbacks") or {}).get("CancelCallback") or {}).get("stopped_at") or {}
    if path.name != CANCELLED.name or not isinstance(stopped, dict) or stopped.get("during") != "validation":
        return str(path)
    latest = path.with_name(LATEST.name)
    if not latest.is_file():
        raise UserError(
            "the run stopped inside its first validation pass, before any state a fit can continue "
            "from; run it again without resume",
            str(path),
        )
    log.warning("%s was taken inside a validation pass: continuing from the epoch before it (%s)", path, latest)
    read_checkpoint(latest, where)
    return str(latest)


def _unfinished_with_checkpoint(run_dir: Path, config_hash: str) -> bool:
    try:
        identity = json.loads((run_dir / "run.json").read_text())
    except (OSError, ValueError):
        return False
    if (
        not isinstance(identity, dict)
        or identity.get("config_hash") != config_hash
        or newest_checkpoint(run_dir) is None
    ):
        return False
    result = RunResult.read(run_dir / "result.json")  # None: killed before it could write one (a crash)
    return result is None or result.status != "completed"


def resume_checkpoint(cfg: DictConfig, run_dir: Path, config_hash: str) -> str | None:
    value = cfg.get("resume", False)
    if value in (False, None) or str(value).lower() == "false":
        return None
    if cfg.model.kind != "net":
        log.warning("resume=%s: %s is a %s family and retrains from scratch", value, cfg.model.name, cfg.model.kind)
        return None
    if value is not True and str(value).lower() != "true":
        path = Path(str(value))
        if path.is_dir():  # a run folder
            path = newest_checkpoint(path) or path / LATEST
        if not path.is_file():
            raise UserError("checkpoint to resume from not found", f"resume={value}")
        return _continuable(path, f"resume={value}")
    out = Path(cfg.paths.output_dir)
    candidates = [run_dir, *out.glob("runs/*"), *out.glob("multiruns/*/*")]
    found = [d for d in candidates if d.is_dir() and _unfinished_with_checkpoint(d, config_hash)]
    if not found:
        raise UserError(
            f"nothing to resume: no cancelled or crashed run of this configuration "
            f"(config hash {config_hash}) left {CANCELLED} or {LATEST} under {out}",
            "resume=true",
        )
    newest = max((newest_checkpoint(d) for d in found), key=lambda p: p.stat().st_mtime_ns)
    chosen = _continuable(newest, "resume=true")
    log.info("resuming from %s", chosen)
    return chosen
