"""Which checkpoint `resume=...` continues from: an explicit path, or the newest unfinished run of the
same configuration under the output folder."""
import json
import logging
from pathlib import Path

from omegaconf import DictConfig

from data.errors import UserError

log = logging.getLogger(__name__)

LATEST = Path("checkpoints") / "latest.ckpt"


def _unfinished_with_checkpoint(run_dir: Path, config_hash: str) -> bool:
    try:
        identity = json.loads((run_dir / "run.json").read_text())
    except (OSError, ValueError):
        return False
    if identity.get("config_hash") != config_hash or not (run_dir / LATEST).is_file():
        return False
    try:
        status = json.loads((run_dir / "result.json").read_text()).get("status")
    except (OSError, ValueError):
        status = None  # killed before it could write one: a crash
    return status != "completed"


def resume_checkpoint(cfg: DictConfig, run_dir: Path, config_hash: str) -> str | None:
    value = cfg.get("resume", False)
    if value in (False, None) or str(value).lower() == "false":
        return None
    if cfg.model.kind != "net":
        log.warning("resume=%s: %s is a %s family and retrains from scratch", value, cfg.model.name, cfg.model.kind)
        return None
    if value is not True and str(value).lower() != "true":
        path = Path(str(value))
        path = path / LATEST if path.is_dir() else path
        if not path.is_file():
            raise UserError("checkpoint to resume from not found", f"resume={value}")
        return str(path)
    out = Path(cfg.paths.output_dir)
    candidates = [run_dir, *out.glob("runs/*"), *out.glob("multiruns/*/*")]
    found = [d for d in candidates if d.is_dir() and _unfinished_with_checkpoint(d, config_hash)]
    if not found:
        raise UserError(f"nothing to resume: no cancelled or crashed run of this configuration "
                        f"(config hash {config_hash}) left {LATEST} under {out}", "resume=true")
    newest = max(found, key=lambda d: (d / LATEST).stat().st_mtime)
    log.info("resuming from %s", newest / LATEST)
    return str(newest / LATEST)
