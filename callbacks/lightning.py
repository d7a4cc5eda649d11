"""Lightning callbacks: throttled progress and cooperative cancellation checks."""
import pytorch_lightning as pl

from callbacks.cancel import CancellationToken
from callbacks.progress import ProgressReporter


def _scalars(metrics) -> dict:
    return {k: float(v) for k, v in metrics.items() if getattr(v, "numel", lambda: 1)() == 1}


class ProgressCallback(pl.Callback):
    def __init__(self, reporter: ProgressReporter, every_n_batches: int = 10):
        self.reporter = reporter
        self.every = max(1, int(every_n_batches))

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if (batch_idx + 1) % self.every:
            return  # skip, never wait
        done = trainer.global_step
        total = trainer.max_epochs * trainer.num_training_batches if trainer.max_epochs else None
        self.reporter.emit("fit", epoch=trainer.current_epoch, epochs=trainer.max_epochs, iteration=done,
                           iterations=total, metrics=_scalars({"train/loss": outputs["loss"]}),
                           eta=self.reporter.eta(done, total))

    def on_validation_epoch_end(self, trainer, pl_module):
        if trainer.sanity_checking:
            return
        self.reporter.emit("fit", epoch=trainer.current_epoch, epochs=trainer.max_epochs,
                           metrics={k: round(v, 5) for k, v in _scalars(trainer.callback_metrics).items()})


class CancelCallback(pl.Callback):
    def __init__(self, token: CancellationToken, check_every_n_batches: int = 5):
        self.token = token
        self.every = max(1, int(check_every_n_batches))
        self.stopped_at: dict | None = None

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if batch_idx % self.every == 0 and self.token.cancelled:
            trainer.should_stop = True
            self.stopped_at = {"epoch": trainer.current_epoch, "global_step": trainer.global_step}
