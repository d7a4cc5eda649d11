"""Moving a Lightning checkpoint into a new run folder so that resuming keeps its best-so-far state."""
import os
import shutil
from pathlib import Path

import torch

_PATH_KEYS = ("best_model_path", "kth_best_model_path", "last_model_path")


def adopt_checkpoint(source: Path, ckpt_dir: Path, write: bool = True) -> Path:
    """Copy ``source`` and its best-* siblings into ``ckpt_dir``, rewriting the paths ModelCheckpoint
    recorded (Lightning restores the best score only when the checkpoint folder is unchanged); returns the
    checkpoint to resume from. ``write=False`` only names it (the extra ranks of a data-parallel fit, whose
    rank 0 writes it first)."""
    # Lightning records and compares real paths: resolve everything (relative dirs, symlinks)
    source, ckpt_dir = Path(os.path.realpath(source)), Path(os.path.realpath(ckpt_dir))
    old_dir = source.parent
    target = ckpt_dir / "resume_start.ckpt"
    if old_dir == ckpt_dir:
        return source
    if not write:
        return target
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    for best in old_dir.glob("best-*.ckpt"):
        shutil.copy2(best, ckpt_dir / best.name)
    state = torch.load(source, map_location="cpu", weights_only=True)

    def moved(path):
        if not path or Path(os.path.realpath(path)).parent != old_dir:
            return path
        return str(ckpt_dir / Path(path).name)

    for key, cb_state in state.get("callbacks", {}).items():
        if key.startswith("ModelCheckpoint") and isinstance(cb_state, dict):
            cb_state["dirpath"] = str(ckpt_dir)
            for k in _PATH_KEYS:
                if k in cb_state:
                    cb_state[k] = moved(cb_state[k])
            if "best_k_models" in cb_state:
                cb_state["best_k_models"] = {moved(p): v for p, v in cb_state["best_k_models"].items()}
    torch.save(state, target)
    return target
