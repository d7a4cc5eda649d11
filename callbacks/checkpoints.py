"""Reading a Lightning checkpoint safely, and moving it into a new run folder so that resuming keeps its
best-so-far state.

A checkpoint is a pickle: it is only ever read with ``weights_only=True`` (tensors, containers, numbers,
strings), so a crafted file cannot run code; a file that is not a readable checkpoint is a user error."""

import os
import shutil
from pathlib import Path

import torch

from core.errors import UserError

_PATH_KEYS = ("best_model_path", "kth_best_model_path", "last_model_path")
_REQUIRED = ("state_dict", "epoch", "global_step", "loops")


def read_checkpoint(path: Path, where: str, required: tuple[str, ...] = _REQUIRED) -> dict:
    """The checkpoint's content, loaded without running anything it names; refused with one line when it is
    truncated, corrupt, not a checkpoint, or asks for anything but plain data."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated zip, a foreign pickle, a global outside the allow-list, ...
        reason = str(exc).strip().splitlines()[0][:120] if str(exc).strip() else "empty or unreadable"
        raise UserError(f"{where}: not a usable checkpoint ({type(exc).__name__}: {reason})", str(path)) from None
    if (
        not isinstance(state, dict)
        or any(k not in state for k in required)
        or not isinstance(state["state_dict"], dict)
    ):
        raise UserError(f"{where}: not a Lightning training checkpoint (needs {', '.join(required)})", str(path))
    return state


def check_fits(state: dict, module: torch.nn.Module, path: Path, where: str) -> None:
    """Refuse a checkpoint whose weights are not this network's (another family or architecture)."""
    own = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    saved = {k: tuple(v.shape) if isinstance(v, torch.Tensor) else None for k, v in state["state_dict"].items()}
    if own != saved:
        diff = sorted(set(own) ^ set(saved)) or sorted(k for k in own if own[k] != saved[k])
        raise UserError(
            f"{where}: the checkpoint holds another network's weights (first difference: {diff[0]}); "
            "resume with the configuration it was trained with",
            str(path),
        )


def _beside(path, folder: Path) -> bool:
    """Whether a recorded checkpoint path is a plain local file directly in ``folder`` (no URL, no ``..``)."""
    return (
        isinstance(path, str)
        and "://" not in path
        and "::" not in path
        and Path(os.path.realpath(path)).parent == folder
    )


def drop_foreign_paths(state: dict, folder: Path) -> bool:
    """Forget the files a checkpoint's ModelCheckpoint states name outside ``folder``: Lightning deletes the
    ones it replaces (recursively, through fsspec for a URL such as ``local:///...``), so a crafted checkpoint
    could otherwise delete anything the user can. Returns whether anything was dropped."""
    dropped = False
    for key, cb_state in (state.get("callbacks") or {}).items():
        if not (str(key).startswith("ModelCheckpoint") and isinstance(cb_state, dict)):
            continue
        for k in _PATH_KEYS:
            if cb_state.get(k) and not _beside(cb_state[k], folder):
                cb_state[k], dropped = "", True
        best = cb_state.get("best_k_models")
        if isinstance(best, dict) and any(not _beside(p, folder) for p in best):
            cb_state["best_k_models"] = {p: v for p, v in best.items() if _beside(p, folder)}
            dropped = True
    return dropped


def adopt_checkpoint(
    source: Path, ckpt_dir: Path, write: bool = True, module: torch.nn.Module | None = None, where: str = "resume"
) -> Path:
    """Check ``source`` (safe load; its weights fit ``module``), then copy it and its best-* siblings into
    ``ckpt_dir``, rewriting the paths ModelCheckpoint recorded (Lightning restores the best score only when
    the checkpoint folder is unchanged); returns the checkpoint to resume from. ``write=False`` only names it
    (the extra ranks of a data-parallel fit, whose rank 0 writes it first)."""
    # Lightning records and compares real paths: resolve everything (relative dirs, symlinks)
    source, ckpt_dir = Path(os.path.realpath(source)), Path(os.path.realpath(ckpt_dir))
    old_dir = source.parent
    target = ckpt_dir / "resume_start.ckpt"
    state = read_checkpoint(source, where)
    if module is not None:
        check_fits(state, module, source, where)
    foreign = drop_foreign_paths(state, old_dir)
    if old_dir == ckpt_dir and not foreign:
        return source
    if not write:
        return target
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    for best in old_dir.glob("best-*.ckpt") if old_dir != ckpt_dir else ():
        read_checkpoint(best, where, ("state_dict", "epoch"))  # the fit reads it back at its end
        shutil.copy2(best, ckpt_dir / best.name)

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
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")  # never a half-written checkpoint
    torch.save(state, tmp)
    os.replace(tmp, target)
    return target
