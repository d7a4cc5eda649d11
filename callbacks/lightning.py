"""Lightning callbacks: throttled progress and cooperative cancellation."""

import signal
import threading
from pathlib import Path

import pytorch_lightning as pl
from pytorch_lightning.utilities.exceptions import SIGTERMException

from callbacks.cancel import CancellationToken, Cancelled
from callbacks.progress import ProgressReporter


def _scalars(metrics) -> dict:
    return {k: float(v) for k, v in metrics.items() if getattr(v, "numel", lambda: 1)() == 1}


class ProgressCallback(pl.Callback):
    """A step event every ``every_n_batches`` batches and an epoch event after each validation."""

    def __init__(self, reporter: ProgressReporter, every_n_batches: int = 10):
        self.reporter = reporter
        self.every = max(1, int(every_n_batches))

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if (batch_idx + 1) % self.every:
            return  # skip, never wait
        done = trainer.global_step
        per_epoch = trainer.num_training_batches
        total = trainer.max_epochs * per_epoch if trainer.max_epochs else None
        self.reporter.emit(
            "fit",
            kind="step",
            epoch=trainer.current_epoch,
            epochs=trainer.max_epochs,
            iteration=done,
            iterations=total,
            batch=batch_idx + 1,
            batches=per_epoch,
            metrics={"train/loss": float(outputs["loss"])},
            eta=self.reporter.eta(done, total),
        )

    def on_validation_epoch_end(self, trainer, pl_module):
        if trainer.sanity_checking:
            return
        total = trainer.max_epochs * trainer.num_training_batches if trainer.max_epochs else None
        self.reporter.emit(
            "fit",
            kind="epoch",
            epoch=trainer.current_epoch,
            epochs=trainer.max_epochs,
            iteration=trainer.global_step,
            iterations=total,
            metrics={k: round(v, 5) for k, v in _scalars(trainer.callback_metrics).items()},
            eta=self.reporter.eta(trainer.global_step, total),
        )


class CancelCallback(pl.Callback):
    """Reads the token's in-memory flag (caller, signals) every batch and polls its stop file every
    ``check_every_n_batches``; on cancel saves a checkpoint of the state reached and leaves the fit at
    once (no end-of-epoch validation pass). A cancel that comes at an epoch's last training batch or during
    its validation takes effect after that validation, at the next training batch: Lightning cannot resume
    a state taken between an epoch's training and the end of its validation."""

    def __init__(self, token: CancellationToken, checkpoint_path: Path, check_every_n_batches: int = 5):
        self.token = token
        self.checkpoint_path = Path(checkpoint_path)
        self.every = max(1, int(check_every_n_batches))
        self.stopped_at: dict | None = None
        self._batches = 0  # training batches of this fit on this rank: the same count on every rank

    def on_train_start(self, trainer, pl_module):
        self._batches = 0
        if trainer.world_size <= 1:
            return
        # Data-parallel ranks act on a cancel only together (below), never alone. Lightning's own SIGTERM
        # handling stops the rank that got the signal at once, and relays it only in the fit that started
        # the other ranks: the token takes SIGTERM back for this fit (Lightning restores handlers after it).
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self.token._on_signal)
        # a cancel that came between two fits (or while a rank prepared its data) is decided here
        if trainer.strategy.reduce_boolean_decision(self.token.cancelled, all=False):
            self._stop(trainer, {"batch": 0})

    def _stop(self, trainer, where: dict) -> None:
        self.stopped_at = {"epoch": trainer.current_epoch, **where, "global_step": trainer.global_step}
        trainer.save_checkpoint(self.checkpoint_path, weights_only=False)
        raise Cancelled(self.token.reason)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self._batches += 1
        if trainer.world_size > 1:
            # Data-parallel ranks must leave the fit at the same batch (the checkpoint save is collective, and
            # a rank that trained on would wait for the others forever): they decide together, every
            # ``every``-th batch of the fit (counted across epochs, so short epochs are checked too), and any
            # rank's request stops all.
            if self._batches % self.every == 0 and trainer.strategy.reduce_boolean_decision(
                self.token.cancelled, all=False
            ):
                self._stop(trainer, {"batch": batch_idx + 1})
            return
        # Lightning chains our SIGTERM handler and then raises its own SIGTERMException at the end of
        # this batch; an attribute read every batch lets the cancellation win with its checkpoint.
        sigterm = getattr(trainer, "received_sigterm", False)
        if sigterm or self.token.is_set() or ((batch_idx + 1) % self.every == 0 and self.token.cancelled):
            if self._validation_follows(trainer, batch_idx):
                return  # stopped at its first batch instead: a resumed fit then runs this epoch's validation
            self._stop(trainer, {"batch": batch_idx + 1})

    @staticmethod
    def _validation_follows(trainer, batch_idx: int) -> bool:
        """Whether this is the epoch's last training batch and the epoch's validation comes next (a checkpoint
        taken between the two resumes with that validation skipped)."""
        every = trainer.check_val_every_n_epoch
        return (
            batch_idx + 1 >= trainer.num_training_batches
            and trainer.enable_validation
            and (every is None or (trainer.current_epoch + 1) % every == 0)
        )

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        # The validation loop raises SIGTERMException after this hook: a signal that lands during validation
        # is taken into the token instead, so the pass ends and the next training batch stops with a
        # resumable state. Data-parallel ranks wait for the next training check, which they take together.
        if trainer.sanity_checking or trainer.world_size > 1:
            return
        if getattr(trainer, "received_sigterm", False):
            self.token.cancel("SIGTERM: graceful stop (send again to stop at once)")
            trainer._signal_connector.received_sigterm = False

    def state_dict(self) -> dict:  # in the checkpoint: where it was taken (resume reads it)
        return {"stopped_at": self.stopped_at}

    def load_state_dict(self, state: dict) -> None:
        pass  # a resumed fit starts with no stop of its own

    def on_exception(self, trainer, pl_module, exception):
        # A SIGTERM that lands after one of the hooks above ran but before Lightning's own check in the same
        # batch (or after the last validation batch) leaves the fit as SIGTERMException with nothing saved;
        # the state is still intact here (before teardown), so it is kept all the same.
        if isinstance(exception, SIGTERMException) and self.stopped_at is None and trainer.world_size <= 1:
            during = "validation" if trainer.validating else "signal"  # the former: not resumable as it is
            self.stopped_at = {"epoch": trainer.current_epoch, "during": during, "global_step": trainer.global_step}
            trainer.save_checkpoint(self.checkpoint_path, weights_only=False)
