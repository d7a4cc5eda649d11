"""A crafted, corrupt or foreign checkpoint runs nothing and deletes nothing: one error line, or a safe resume."""

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from core.errors import UserError
from core.runinfo import config_hash
from tests.conftest import FAST_DATA, FAST_LSTM, ROOT, make_cfg
from tests.trainer.untrusted.helpers import Touch, assert_one_error_line
from trainer.resume import resume_checkpoint

RESUMABLE = [*FAST_LSTM, *FAST_DATA, "model.max_epochs=1"]


def _cli(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    return subprocess.run(
        [sys.executable, str(ROOT / "train.py"), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )


def _zip_payload(path: Path, marker: Path) -> None:
    """A checkpoint in torch's own zip format, complete but for one object that runs a command."""
    torch.save({"state_dict": {}, "epoch": 0, "global_step": 1, "loops": {}, "callbacks": {"x": Touch(marker)}}, path)


def test_a_crafted_checkpoint_given_by_path_runs_nothing(tmp_path):
    marker = tmp_path / "PWNED"
    ckpt = tmp_path / "latest.ckpt"
    ckpt.write_bytes(pickle.dumps(Touch(marker)))
    proc = _cli(*RESUMABLE, f"resume={ckpt}", f"hydra.run.dir={tmp_path / 'run'}")
    assert_one_error_line(proc, "not a usable checkpoint")
    assert not marker.exists()


def test_a_crafted_checkpoint_found_by_resume_true_runs_nothing(tmp_path):
    marker = tmp_path / "PWNED"
    out = tmp_path / "out"
    crashed = out / "runs" / "crashed"
    (crashed / "checkpoints").mkdir(parents=True)
    (crashed / "run.json").write_text(json.dumps({"config_hash": config_hash(make_cfg(*RESUMABLE))}))
    _zip_payload(crashed / "checkpoints" / "latest.ckpt", marker)
    proc = _cli(*RESUMABLE, "resume=true", f"paths.output_dir={out}", f"hydra.run.dir={out / 'runs' / 'new'}")
    assert_one_error_line(proc, "resume=true: not a usable checkpoint")
    assert proc.stderr.strip().endswith(f"({crashed / 'checkpoints' / 'latest.ckpt'})")
    assert not marker.exists()


@pytest.mark.parametrize("content", [b"", b"not a checkpoint\n", "truncated"])
def test_a_corrupt_checkpoint_is_a_user_error(tmp_path, content):
    ckpt = tmp_path / "latest.ckpt"
    if content == "truncated":
        torch.save({"state_dict": {"w": torch.zeros(1000)}, "epoch": 0, "global_step": 1, "loops": {}}, ckpt)
        ckpt.write_bytes(ckpt.read_bytes()[:700])
    else:
        ckpt.write_bytes(content)
    cfg = make_cfg(*RESUMABLE, f"resume={ckpt}", run_dir=tmp_path / "run")
    with pytest.raises(UserError, match="not a usable checkpoint") as err:
        resume_checkpoint(cfg, tmp_path / "run", "hash")
    assert err.value.where == str(ckpt) and err.value.what.startswith(f"resume={ckpt}: ")


def test_a_checkpoint_of_plain_data_that_is_not_a_training_state_is_refused(tmp_path):
    ckpt = tmp_path / "weights.ckpt"
    torch.save({"w": torch.zeros(3)}, ckpt)
    cfg = make_cfg(*RESUMABLE, f"resume={ckpt}", run_dir=tmp_path / "run")
    with pytest.raises(UserError, match="not a Lightning training checkpoint"):
        resume_checkpoint(cfg, tmp_path / "run", "hash")


def test_a_checkpoint_naming_files_elsewhere_deletes_nothing_on_resume(tmp_path):
    """Lightning deletes the checkpoint files it replaces, by the paths a checkpoint recorded (a URL such as
    local:///... recursively): a crafted checkpoint, plain data that a safe load accepts, names folders elsewhere."""
    first = [*FAST_LSTM, *FAST_DATA, "callbacks.checkpoint.keep=true"]
    proc = _cli(
        *[o for o in first if not o.startswith("model.max_epochs")],
        "model.max_epochs=1",
        f"hydra.run.dir={tmp_path / 'first'}",
        f"paths.output_dir={tmp_path / 'out'}",
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    state = torch.load(tmp_path / "first" / "checkpoints" / "latest.ckpt", weights_only=True)
    precious = {name: tmp_path / name for name in ("latest_victim", "best_victim")}
    for folder in precious.values():
        folder.mkdir()
        (folder / "keep.txt").write_text("not a checkpoint")
    for key, cb in state["callbacks"].items():
        if key.startswith("ModelCheckpoint") and cb["monitor"] is None:
            cb["best_model_path"] = f"local://{precious['latest_victim']}"
        elif key.startswith("ModelCheckpoint"):
            worst = f"local://{precious['best_victim']}"
            cb.update(
                best_k_models={worst: torch.tensor(100.0)},
                kth_best_model_path=worst,
                kth_value=torch.tensor(100.0),
                best_model_path=worst,
                best_model_score=torch.tensor(100.0),
            )
    crafted = tmp_path / "received" / "latest.ckpt"
    crafted.parent.mkdir()
    torch.save(state, crafted)
    proc = _cli(
        *FAST_LSTM,
        *FAST_DATA,
        f"resume={crafted}",
        f"hydra.run.dir={tmp_path / 'resumed'}",
        f"paths.output_dir={tmp_path / 'out'}",
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert all((folder / "keep.txt").is_file() for folder in precious.values())
