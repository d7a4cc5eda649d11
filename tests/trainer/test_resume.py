"""`resume=true` continues a cancelled or crashed net run from wherever it stopped (first epoch and
mid-epoch included) and ends with the weights an uninterrupted run ends with."""

import json
import os
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from callbacks.cancel import CancellationToken
from core.errors import UserError
from data.windows import WindowBatches
from tests.conftest import FAST_DATA, FAST_LSTM, make_cfg
from trainer import train
from trainer.result import RunResult
from trainer.resume import resume_checkpoint

COMMON = [
    *FAST_LSTM,
    *FAST_DATA,
    "model.batch_size=256",
    "model.max_epochs=2",
    "model.patience=10",
    "model.dropout=0.0",
    "callbacks.progress.every_n_batches=1",
]


def _weights(result: RunResult) -> dict:
    return load_file(str(Path(result.model_path) / "model.safetensors"))


def test_a_run_cancelled_in_its_first_epoch_resumes_to_the_uninterrupted_weights(tmp_path):
    common = [*COMMON, f"paths.output_dir={tmp_path}"]
    full = train(make_cfg(*common, run_dir=tmp_path / "runs" / "full"))

    token = CancellationToken()

    def cancel_at_batch_7(event):
        if event.kind == "step" and event.epoch == 0 and event.batch == 7:
            token.cancel("test")

    cut = train(
        make_cfg(*common, run_dir=tmp_path / "runs" / "cut"),
        progress_callback=cancel_at_batch_7,
        cancellation_token=token,
    )
    assert cut.status == "cancelled" and cut.training_metrics["cancelled_at"]["batch"] == 7
    checkpoints = tmp_path / "runs" / "cut" / "checkpoints"
    assert (checkpoints / "cancelled.ckpt").is_file() and not (checkpoints / "latest.ckpt").exists()

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        resumed = train(make_cfg(*common, "resume=true", run_dir=tmp_path / "runs" / "resumed"))
    assert not [w for w in caught if "not resumable" in str(w.message)]
    assert resumed.status == "completed"
    assert resumed.training_metrics["resumed_from"] == str(checkpoints / "cancelled.ckpt")
    assert resumed.training_metrics["epochs_run"] == full.training_metrics["epochs_run"]
    # the 7 batches already trained on are skipped, the rest come in the same order from the same weights
    ours, theirs = _weights(resumed), _weights(full)
    assert ours.keys() == theirs.keys()
    for name in ours:
        torch.testing.assert_close(ours[name], theirs[name], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(resumed.test_metrics["log_loss"], full.test_metrics["log_loss"], rtol=1e-6)


def _batches(seed=3) -> WindowBatches:
    features = torch.arange(200 * 2, dtype=torch.float32).reshape(200, 2)
    return WindowBatches(features, np.arange(4, 200), np.arange(4, 200) % 2, window=5, batch_size=16, shuffle_seed=seed)


def test_window_batches_resume_mid_epoch_where_they_stopped():
    first = _batches()
    epoch0 = [x for x, _ in first]
    stopped = _batches()
    it = iter(stopped)
    for _ in range(5):
        next(it)
    state = stopped.state_dict()
    assert state == {"epoch": 0, "batches_done": 5}

    again = _batches()
    again.load_state_dict(state)
    rest = [x for x, _ in again]
    assert len(rest) == len(epoch0) - 5
    for a, b in zip(rest, epoch0[5:]):
        torch.testing.assert_close(a, b)
    assert len(list(again)) == len(epoch0)  # the next epoch is whole again (in its own order)


def test_window_batches_ignore_a_state_from_another_epoch():
    batches = _batches()
    batches.epoch_source = lambda: 1
    batches.load_state_dict({"epoch": 0, "batches_done": 5})  # the end of epoch 0: epoch 1 starts at its top
    assert len(list(batches)) == len(batches)


def _checkpoint(path: Path, mtime: float, during: str | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    callbacks = {"CancelCallback": {"stopped_at": {"epoch": 0, "during": during}}} if during else {}
    torch.save({"state_dict": {}, "epoch": 0, "global_step": 1, "loops": {}, "callbacks": callbacks}, path)
    os.utime(path, (mtime, mtime))


def test_a_state_taken_inside_a_validation_pass_continues_from_the_epoch_before(tmp_path):
    run = tmp_path / "runs" / "cut"
    _checkpoint(run / "checkpoints" / "cancelled.ckpt", time.time(), during="validation")
    cfg = make_cfg(*COMMON, f"resume={run}", run_dir=tmp_path / "runs" / "new")
    with pytest.raises(UserError, match="inside its first validation pass"):
        resume_checkpoint(cfg, tmp_path / "runs" / "new", "h")
    _checkpoint(run / "checkpoints" / "latest.ckpt", time.time() - 60)
    assert resume_checkpoint(cfg, tmp_path / "runs" / "new", "h") == str(run / "checkpoints" / "latest.ckpt")


def test_resume_true_takes_the_newest_state_of_the_newest_unfinished_run(tmp_path):
    cfg = make_cfg(*COMMON, "resume=true", f"paths.output_dir={tmp_path}", run_dir=tmp_path / "runs" / "new")
    now = time.time()
    for name, status, files in [
        ("older", "cancelled", {"latest.ckpt": now - 300, "cancelled.ckpt": now - 200}),
        ("newer", None, {"latest.ckpt": now - 100, "cancelled.ckpt": now - 150}),
        ("done", "completed", {"latest.ckpt": now - 10}),
        ("other", None, {"cancelled.ckpt": now - 5}),
    ]:
        run = tmp_path / "runs" / name
        for f, t in files.items():
            _checkpoint(run / "checkpoints" / f, t)
        (run / "run.json").write_text(json.dumps({"config_hash": "other" if name == "other" else "h"}))
        if status:
            (run / "result.json").write_text(json.dumps({"status": status}))
    assert resume_checkpoint(cfg, tmp_path / "runs" / "new", "h") == str(
        tmp_path / "runs" / "newer" / "checkpoints" / "latest.ckpt"
    )
    # a run folder given by path: its own newest state
    cfg = make_cfg(*COMMON, f"resume={tmp_path / 'runs' / 'older'}", run_dir=tmp_path / "runs" / "new")
    assert resume_checkpoint(cfg, tmp_path / "runs" / "new", "h").endswith("older/checkpoints/cancelled.ckpt")


@pytest.mark.parametrize(
    "scheduler",
    [
        "{_target_: torch.optim.lr_scheduler.ReduceLROnPlateau, _partial_: true, factor: 0.5, patience: 0}",
        "{_target_: torch.optim.lr_scheduler.StepLR, _partial_: true, step_size: 1, gamma: 0.5}",
    ],
)
def test_schedulers_run_and_the_learning_rate_is_logged_per_epoch(tmp_path, scheduler):
    result = train(
        make_cfg(
            *FAST_LSTM,
            *FAST_DATA,
            "model.max_epochs=3",
            "model.patience=10",
            "logger=csv",
            f"model.scheduler={scheduler}",
            "model.optimizer.lr=0.004",
            run_dir=tmp_path,
        )
    )
    assert result.status == "completed"
    import pandas as pd

    logged = pd.read_csv(tmp_path / "logs" / "metrics.csv")
    lr = logged.dropna(subset=["train/lr"]).groupby("epoch")["train/lr"].first().tolist()
    assert len(lr) == 3 and lr[0] == pytest.approx(0.004)
    if "StepLR" in scheduler:
        assert lr == pytest.approx([0.004, 0.002, 0.001])
    else:  # halved after each epoch whose val/loss did not improve, never raised
        assert all(b in (pytest.approx(a), pytest.approx(a / 2)) for a, b in zip(lr, lr[1:]))
