"""Progress (ordered, throttled by skipping) and cancellation (token, signals, stop file) for every
family, with checkpoints/partial models on cancel and LSTM resume."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from callbacks.cancel import CancellationToken, ImmediateStop
from callbacks.sinks import console_is_interactive
from core.errors import UserError
from tests.conftest import FAST_DATA, FAST_LSTM, ROOT, make_cfg
from trainer import load_model, train

PHASE_ORDER = ["load", "features", "labels", "split", "fit", "evaluate", "save", "register", "done"]
# Trees that keep boosting long enough to be stopped mid-way.
SLOW_TREES = {
    "lightgbm": [
        "model=lightgbm",
        "model.n_estimators=400",
        "model.early_stopping_rounds=400",
        "model.params.learning_rate=0.001",
    ],
    "xgboost": [
        "model=xgboost",
        "model.n_estimators=400",
        "model.early_stopping_rounds=400",
        "model.params.learning_rate=0.001",
    ],
    "catboost": [
        "model=catboost",
        "model.n_estimators=400",
        "model.early_stopping_rounds=400",
        "model.params.learning_rate=0.001",
    ],
}


class Recorder:
    def __init__(self, when=None, action=None):
        self.events = []
        self.when, self.action = when, action

    def __call__(self, event):
        self.events.append(event)
        if self.when is not None and self.when(event):
            self.action(event)
            self.when = None


def _phases(events):
    return [e.phase for e in events if e.kind == "phase"]


def test_net_progress_arrives_in_order_with_the_configured_throttle(tmp_path):
    rec = Recorder()
    cfg = make_cfg(
        *FAST_LSTM, *FAST_DATA, "callbacks.progress.every_n_batches=3", "model.batch_size=256", run_dir=tmp_path
    )
    result = train(cfg, progress_callback=rec)
    assert _phases(rec.events) == PHASE_ORDER
    steps = [e for e in rec.events if e.kind == "step"]
    epochs = [e for e in rec.events if e.kind == "epoch"]
    batches = steps[0].batches
    assert all(e.batch % 3 == 0 for e in steps)
    assert len(steps) == result.training_metrics["epochs_run"] * (batches // 3)
    assert [e.epoch for e in epochs] == list(range(result.training_metrics["epochs_run"]))
    assert [e.iteration for e in steps] == sorted(e.iteration for e in steps)
    lines = [json.loads(x) for x in (tmp_path / "progress.jsonl").read_text().splitlines()]
    assert [(x["phase"], x["kind"]) for x in lines] == [(e.phase, e.kind) for e in rec.events]


@pytest.mark.parametrize("family", sorted(SLOW_TREES))
def test_tree_progress_every_n_rounds(tmp_path, family):
    rec = Recorder()
    cfg = make_cfg(
        *SLOW_TREES[family],
        *FAST_DATA,
        "model.n_estimators=40",
        "callbacks.progress.every_n_batches=7",
        run_dir=tmp_path,
    )
    train(cfg, progress_callback=rec)
    assert _phases(rec.events) == PHASE_ORDER
    assert [e.iteration for e in rec.events if e.kind == "step"] == [7, 14, 21, 28, 35]


def test_net_cancelled_mid_epoch_by_token_keeps_a_checkpoint(tmp_path):
    token = CancellationToken()
    rec = Recorder(
        when=lambda e: e.kind == "step" and e.epoch == 1 and e.batch >= 4, action=lambda e: token.cancel("test")
    )
    cfg = make_cfg(
        *FAST_LSTM,
        *FAST_DATA,
        "model.batch_size=256",
        "model.max_epochs=3",
        "callbacks.progress.every_n_batches=2",
        "callbacks.cancel.check_every_n_batches=3",
        run_dir=tmp_path,
    )
    result = train(cfg, progress_callback=rec, cancellation_token=token)
    assert result.status == "cancelled" and result.reason == "test" and result.model_path is None
    stopped = result.training_metrics["cancelled_at"]
    assert stopped["epoch"] == 1 and 4 <= stopped["batch"] <= 4 + 3
    steps = [e for e in rec.events if e.kind == "step"]
    assert stopped["batch"] < steps[-1].batches  # stopped mid-epoch, not at its end
    ckpt = torch.load(result.artifacts.checkpoint, weights_only=True)
    assert ckpt["epoch"] == 1 and "state_dict" in ckpt
    assert json.loads((tmp_path / "result.json").read_text())["status"] == "cancelled"
    assert not (tmp_path / "model").exists()
    assert _phases(rec.events)[-1] == "cancelled"


@pytest.mark.parametrize("family", sorted(SLOW_TREES))
def test_tree_cancelled_mid_boosting_by_token_keeps_the_partial_model(tmp_path, family):
    token = CancellationToken()
    rec = Recorder(when=lambda e: e.kind == "step" and e.iteration >= 20, action=lambda e: token.cancel("test"))
    cfg = make_cfg(*SLOW_TREES[family], *FAST_DATA, "callbacks.progress.every_n_batches=5", run_dir=tmp_path)
    result = train(cfg, progress_callback=rec, cancellation_token=token)
    assert result.status == "cancelled" and result.model_path is None
    assert result.training_metrics["cancelled_at"] == {"iteration": 20}
    partial = load_model(result.artifacts.partial_model)
    assert partial.card["status"] == "cancelled"
    assert 0 < partial.model.n_parameters() and not (tmp_path / "model").exists()


@pytest.mark.parametrize("family", sorted(SLOW_TREES))
def test_stop_file_cancels_a_tree_run(tmp_path, family):
    rec = Recorder(when=lambda e: e.kind == "step" and e.iteration >= 10, action=lambda e: (tmp_path / "STOP").touch())
    cfg = make_cfg(*SLOW_TREES[family], *FAST_DATA, "callbacks.progress.every_n_batches=5", run_dir=tmp_path)
    result = train(cfg, progress_callback=rec)
    assert result.status == "cancelled" and "stop file" in result.reason
    assert result.training_metrics["cancelled_at"] == {"iteration": 10}


def test_stop_file_cancels_a_net_within_the_polling_interval(tmp_path):
    stop = tmp_path / "elsewhere" / "STOP"
    stop.parent.mkdir()
    rec = Recorder(when=lambda e: e.kind == "step" and e.epoch == 0 and e.batch >= 4, action=lambda e: stop.touch())
    cfg = make_cfg(
        *FAST_LSTM,
        *FAST_DATA,
        "model.batch_size=128",
        "callbacks.progress.every_n_batches=4",
        "callbacks.cancel.check_every_n_batches=5",
        f"callbacks.cancel.stop_file={stop}",
        run_dir=tmp_path,
    )
    result = train(cfg, progress_callback=rec)
    assert result.status == "cancelled" and str(stop) in result.reason
    assert result.training_metrics["cancelled_at"]["batch"] == 5  # the first poll after the file appeared


def test_a_stale_stop_file_does_not_cancel_the_next_run(tmp_path):
    (tmp_path / "STOP").touch()
    cfg = make_cfg("model=lightgbm", *FAST_DATA, run_dir=tmp_path)
    assert train(cfg).status == "completed"


def test_second_signal_stops_at_once(tmp_path):
    def double_interrupt(event):
        signal.raise_signal(signal.SIGINT)  # graceful
        signal.raise_signal(signal.SIGINT)  # immediate: raised inside the handler

    rec = Recorder(when=lambda e: e.kind == "step" and e.iteration >= 5, action=double_interrupt)
    cfg = make_cfg(*SLOW_TREES["lightgbm"], *FAST_DATA, "callbacks.progress.every_n_batches=5", run_dir=tmp_path)
    previous = signal.getsignal(signal.SIGINT)
    result = train(cfg, progress_callback=rec)
    assert result.status == "cancelled" and result.reason.startswith("second SIGINT")
    assert signal.getsignal(signal.SIGINT) is previous  # handlers restored


def test_token_signal_handler_graceful_then_immediate():
    token = CancellationToken()
    token._on_signal(signal.SIGTERM, None)
    assert token.cancelled and token.reason.startswith("SIGTERM")
    with pytest.raises(ImmediateStop):
        token._on_signal(signal.SIGTERM, None)


def _fit_tiny(tmp_path, callbacks) -> None:
    """Three epochs of a one-layer module, 8 training and 8 validation batches an epoch."""
    import pytorch_lightning as pl

    class Tiny(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.layer = torch.nn.Linear(3, 1)

        def training_step(self, batch, _):
            return self.layer(batch).pow(2).mean()

        def validation_step(self, batch, _):
            self.log("val/loss", self.layer(batch).pow(2).mean())

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    data = torch.utils.data.DataLoader(torch.randn(64, 3), batch_size=8)
    trainer = pl.Trainer(
        max_epochs=3,
        callbacks=callbacks,
        logger=False,
        enable_progress_bar=False,
        enable_checkpointing=False,
        num_sanity_val_steps=0,
        enable_model_summary=False,
        default_root_dir=str(tmp_path),
    )
    trainer.fit(Tiny(), data, data)


@pytest.mark.parametrize("source", ["token", "sigterm"])
def test_cancel_during_the_first_validation_pass_stops_after_it_with_a_resumable_checkpoint(tmp_path, source):
    """Lightning cannot continue a state taken between an epoch's training and the end of its validation:
    the pass finishes and the next training batch stops (a SIGTERM does not abort the pass either)."""
    import pytorch_lightning as pl

    from callbacks.cancel import Cancelled
    from callbacks.lightning import CancelCallback

    class CancelInValidation(pl.Callback):
        def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
            if batch_idx == 1 and trainer.current_epoch == 0:
                if source == "token":
                    token.cancel("test")
                else:  # what Lightning's SIGTERM handler sets
                    trainer._signal_connector.received_sigterm = True

    token = CancellationToken()
    cancel = CancelCallback(token, tmp_path / "cancelled.ckpt", check_every_n_batches=1000)
    with pytest.raises(Cancelled):
        _fit_tiny(tmp_path, [CancelInValidation(), cancel])
    assert cancel.stopped_at == {"epoch": 1, "batch": 1, "global_step": 9}
    saved = torch.load(tmp_path / "cancelled.ckpt", map_location="cpu", weights_only=True)
    assert saved["global_step"] == 9 and "optimizer_states" in saved
    assert saved["callbacks"]["CancelCallback"]["stopped_at"] == cancel.stopped_at


def test_a_cancel_at_an_epochs_last_batch_lets_its_validation_run(tmp_path):
    import pytorch_lightning as pl

    from callbacks.cancel import Cancelled
    from callbacks.lightning import CancelCallback

    class CancelAtLastBatch(pl.Callback):
        validated = []

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if batch_idx == 7:
                token.cancel("test")

        def on_validation_epoch_end(self, trainer, pl_module):
            self.validated.append(trainer.current_epoch)

    token = CancellationToken()
    cancel = CancelCallback(token, tmp_path / "cancelled.ckpt", check_every_n_batches=1000)
    with pytest.raises(Cancelled):
        _fit_tiny(tmp_path, [CancelAtLastBatch(), cancel])
    assert CancelAtLastBatch.validated == [0] and cancel.stopped_at == {"epoch": 1, "batch": 1, "global_step": 9}


@pytest.mark.parametrize("hook", ["on_train_batch_end", "on_validation_batch_end"])
def test_sigterm_landing_just_after_the_cancel_check_still_keeps_a_checkpoint(tmp_path, hook):
    """The signal arrives after the cancel callback's hook ran and before Lightning's own check in the same
    batch: Lightning raises SIGTERMException, and the state reached is saved all the same."""
    import pytorch_lightning as pl
    from pytorch_lightning.utilities.exceptions import SIGTERMException

    from callbacks.lightning import CancelCallback

    class LateSignal(pl.Callback):  # runs after the cancel callback's hook, as a late signal would
        def _land(self, trainer, batch_idx):
            if batch_idx == 2:
                trainer._signal_connector.received_sigterm = True

    setattr(
        LateSignal, hook, lambda self, trainer, module, outputs, batch, batch_idx, *a: self._land(trainer, batch_idx)
    )
    cancel = CancelCallback(CancellationToken(), tmp_path / "cancelled.ckpt", check_every_n_batches=1000)
    with pytest.raises(SIGTERMException):
        _fit_tiny(tmp_path, [cancel, LateSignal()])
    step, during = (3, "signal") if hook == "on_train_batch_end" else (8, "validation")
    assert cancel.stopped_at == {"epoch": 0, "during": during, "global_step": step}
    saved = torch.load(tmp_path / "cancelled.ckpt", map_location="cpu", weights_only=False)
    assert saved["global_step"] == step and "optimizer_states" in saved


def _wait_for_fit_step(progress: Path, proc: subprocess.Popen, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if progress.exists() and any(json.loads(x)["kind"] == "step" for x in progress.read_text().splitlines()):
            return
        time.sleep(0.05)  # the test polls a file; the training loop never sleeps
    pytest.fail(f"no fit step reported (exit {proc.poll()})")


@pytest.mark.parametrize(
    "family,sig",
    [
        ("lightgbm", signal.SIGINT),
        ("xgboost", signal.SIGINT),
        ("catboost", signal.SIGINT),
        ("lstm", signal.SIGINT),
        ("lstm", signal.SIGTERM),
    ],
)
def test_signal_to_a_cli_run_cancels_it_with_exit_code_3(tmp_path, family, sig):
    run_dir = tmp_path / "run"
    extra = (
        [
            f"model={family}",
            "model.n_estimators=1000000",
            "model.early_stopping_rounds=1000000",
            "model.params.learning_rate=0.0001",
        ]
        if family != "lstm"
        else [*FAST_LSTM, "model.max_epochs=50", "model.patience=50", "model.batch_size=64"]
    )
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    proc = subprocess.Popen(
        [
            sys.executable,
            str(ROOT / "train.py"),
            *extra,
            *FAST_DATA,
            "callbacks.progress.every_n_batches=1",
            f"hydra.run.dir={run_dir}",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    _wait_for_fit_step(run_dir / "progress.jsonl", proc)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 3, err[-2000:]
    assert err.strip().splitlines()[-1].startswith("cancelled: " + sig.name)
    assert "Error executing job" not in err and "Traceback" not in err  # a cancel is not a crash
    result = json.loads((run_dir / "result.json").read_text())
    assert result["status"] == "cancelled"
    kept = result["artifacts"]["checkpoint"] if family == "lstm" else result["artifacts"]["partial_model"]
    assert Path(kept).exists()


def test_lstm_resume_ends_at_the_uninterrupted_epoch_count(tmp_path):
    common = [
        *FAST_LSTM,
        *FAST_DATA,
        "model.batch_size=256",
        "model.max_epochs=4",
        "model.patience=10",
        "model.dropout=0.0",
        f"paths.output_dir={tmp_path}",
    ]
    full = train(make_cfg(*common, run_dir=tmp_path / "runs" / "full"))
    assert full.training_metrics["epochs_run"] == 4

    token = CancellationToken()
    rec = Recorder(when=lambda e: e.kind == "step" and e.epoch == 2, action=lambda e: token.cancel("test"))
    cut = train(make_cfg(*common, run_dir=tmp_path / "runs" / "cut"), progress_callback=rec, cancellation_token=token)
    assert cut.status == "cancelled" and cut.training_metrics["epochs_completed"] == 2

    resumed = train(make_cfg(*common, "resume=true", run_dir=tmp_path / "runs" / "resumed"))
    m = resumed.training_metrics
    assert resumed.status == "completed"
    assert m["epochs_run"] == full.training_metrics["epochs_run"]
    # the state at the batch it stopped at (newer than the last epoch's latest.ckpt)
    assert m["resumed_from"] == str(tmp_path / "runs" / "cut" / "checkpoints" / "cancelled.ckpt")
    # Same batches in the same order from the same weights: the resumed fit retraces the uninterrupted one.
    assert m["best_epoch"] == full.training_metrics["best_epoch"]
    np.testing.assert_allclose(resumed.test_metrics["log_loss"], full.test_metrics["log_loss"], rtol=1e-4)


def test_resume_with_nothing_to_resume_is_a_user_error(tmp_path):
    cfg = make_cfg(*FAST_LSTM, *FAST_DATA, "resume=true", f"paths.output_dir={tmp_path}", run_dir=tmp_path / "r")
    with pytest.raises(UserError, match="nothing to resume"):
        train(cfg)


def test_console_bar_is_quiet_under_ci(monkeypatch):
    monkeypatch.setenv("CI", "true")
    assert not console_is_interactive()


def test_a_tree_cancelled_before_its_first_round_still_ends_cancelled(tmp_path):
    token = CancellationToken()
    # set as the fit phase starts: the first round's hook stops the booster before anything is recorded
    rec = Recorder(when=lambda e: e.phase == "fit" and e.kind == "phase", action=lambda e: token.cancel("test"))
    cfg = make_cfg(*SLOW_TREES["lightgbm"], *FAST_DATA, run_dir=tmp_path)
    result = train(cfg, progress_callback=rec, cancellation_token=token)
    assert result.status == "cancelled"
    assert Path(result.artifacts.partial_model).is_dir()
