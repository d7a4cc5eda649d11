"""Which stored session a new one continues (``runtime.resume``), and the lock that keeps two processes
off one session.

A session records its settings (what decides its trades: mode, symbols, data, target, seed, the runtime's
signal, position, broker and guardrail keys) and their hash in ``runtime.db``; ``runtime.resume=true`` picks
the newest session under ``<paths.output_dir>/runtime/`` with the same hash that is resumable (stopped,
stopped at once, or killed: still marked running but no process holds its lock); ``runtime.resume=<folder>``
names one, and is refused when its settings differ. Keys that only bound or observe a session (its length,
exports, notifications, kill switch, folder) may change between runs.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from core.errors import UserError
from trainer.runtime.store import DB_NAME, RuntimeStore

RESUMABLE = ("running", "stopped", "interrupted")
# runtime keys that bound or observe a session without changing what it trades
FREE_KEYS = ("resume", "run_dir", "notify", "kill_switch", "metrics_window", "metrics_every", "registry_root")
FREE_SUBKEYS = {"live": ("max_polls", "poll_seconds"), "replay": ("max_candles",)}
LOCK_NAME = ".session.lock"


def settings(cfg: DictConfig) -> dict:
    """The settings a resumed session must share with the stored one."""
    rt = OmegaConf.to_container(cfg.runtime, resolve=True)
    for key in FREE_KEYS:
        rt.pop(key, None)
    for key, subkeys in FREE_SUBKEYS.items():
        for sub in subkeys:
            (rt.get(key) or {}).pop(sub, None)
    return json.loads(
        json.dumps(
            {
                "runtime": rt,
                "symbols": [str(s) for s in cfg.coin.symbols],
                "data": OmegaConf.to_container(cfg.data, resolve=True),
                "target": OmegaConf.to_container(cfg.target, resolve=True),
                "seed": cfg.get("seed"),
            },
            default=str,
        )
    )


def settings_hash(values: dict) -> str:
    return hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()[:16]


def _differences(old, new, prefix: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for key in sorted(set(old) | set(new)):
            out += _differences(old.get(key), new.get(key), f"{prefix}.{key}" if prefix else str(key))
        return out
    return [] if old == new else [f"{prefix} {json.dumps(old)} -> {json.dumps(new)}"]


def session_record(run_dir: Path) -> dict | None:
    """The ``session`` state a folder's runtime.db holds (None when it holds none or is not a session)."""
    if not (Path(run_dir) / DB_NAME).is_file():
        return None
    try:
        store = RuntimeStore(run_dir, readonly=True)
    except Exception:  # not a database: not a session to resume
        return None
    try:
        return store.get_state("session")
    except Exception:
        return None
    finally:
        store.close()


def is_locked(run_dir: Path) -> bool:
    path = Path(run_dir) / LOCK_NAME
    if not path.exists():
        return False
    with open(path, "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return True
        fcntl.flock(f, fcntl.LOCK_UN)
    return False


def to_resume(cfg: DictConfig, values: dict) -> tuple[Path, dict] | None:
    """The session folder ``runtime.resume`` asks to continue, with its record; None for a new session."""
    wanted = cfg.runtime.get("resume")
    if wanted in (None, False) or str(wanted).lower() in ("false", "null", "none", ""):
        return None
    digest = settings_hash(values)
    if wanted is True or str(wanted).lower() == "true":
        root = Path(str(cfg.paths.output_dir)) / "runtime"
        found = []
        for db in root.glob(f"*/{DB_NAME}") if root.is_dir() else []:
            record = session_record(db.parent)
            if (
                record
                and record.get("settings_hash") == digest
                and record.get("status") in RESUMABLE
                and not is_locked(db.parent)
            ):
                found.append((str(record.get("started_at")), db.parent, record))
        if not found:
            raise UserError(
                f"no resumable session with these settings under {root} (a stopped or killed session "
                f"of the same mode, symbols, data, target and runtime settings)",
                "runtime.resume",
            )
        _, run_dir, record = max(found, key=lambda f: f[0])
        return run_dir, record
    run_dir = Path(str(wanted)).expanduser()
    record = session_record(run_dir)
    if record is None:
        raise UserError(
            f"{run_dir} is not a runtime session folder (no {DB_NAME} with a session record)", "runtime.resume"
        )
    if record.get("status") not in RESUMABLE:
        raise UserError(f"session {run_dir} is {record.get('status')}: nothing to resume", "runtime.resume")
    if record.get("settings_hash") != digest:
        diff = _differences(record.get("settings") or {}, values)
        raise UserError(
            f"session {run_dir} ran with other settings ({'; '.join(diff[:3])}"
            f"{'; ...' if len(diff) > 3 else ''}): resume it with the same ones",
            "runtime.resume",
        )
    return run_dir, record


class SessionLock:
    """An exclusive lock on a session folder for the life of the process that runs it (the kernel releases
    it when the process dies, so a killed session is resumable)."""

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / LOCK_NAME
        self._file = None

    def __enter__(self) -> SessionLock:
        self._file = open(self.path, "a")
        try:
            fcntl.flock(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self._file.close()
            raise UserError(f"session {self.path.parent} is running in another process", "runtime.resume") from None
        self._file.write("")
        os.utime(self.path)
        return self

    def __exit__(self, *exc) -> None:
        if self._file is not None:
            fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()
            self._file = None
