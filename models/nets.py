"""The one LightningModule base and adapter every neural family shares.

A family module defines only its body — an ``nn.Module`` mapping a window ``(B, W, F)`` (tabular
families use W = 1) to features ``(B, body.out_features)`` — and a ``NetModel`` subclass naming it. The
base supplies the head (raw logits, or the value for regression: no sigmoid/softmax in the network), the
class-weighted cross-entropy / MSE loss, optimiser and scheduler from config (``_partial_``), metrics named
``train/...`` and ``val/...``, early stopping, best-checkpoint restore, progress, cancellation, resume,
and safetensors save/load.
"""

import json
import logging
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import EarlyStopping, ModelCheckpoint
from pytorch_lightning.utilities.exceptions import SIGTERMException
from safetensors.torch import load_file, save_file
from torch import nn

from callbacks.cancel import Cancelled
from callbacks.checkpoints import adopt_checkpoint
from callbacks.lightning import CancelCallback, ProgressCallback
from core.devices import remember_workers
from data.windows import WindowBatches
from models.base import CandleModel, FitContext, FitReport, Rows, Task, balanced_weights

# Lightning's start-up banner (GPU/TPU availability, tips) says nothing the run summary does not.
logging.getLogger("pytorch_lightning.utilities.rank_zero").setLevel(logging.WARNING)
warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")
warnings.filterwarnings("ignore", message=r"Checkpoint directory .* exists and is not empty")  # resume adopts files

_WEIGHTS = "model.safetensors"
_META = "net.json"
# Keys of a net family's config that are not architecture.
_NOT_ARCH = {
    "name",
    "_target_",
    "kind",
    "stage",
    "input",
    "tasks",
    "checks",
    "batch_size",
    "max_epochs",
    "patience",
    "class_weight",
    "optimizer",
    "scheduler",
}
DEFAULT_OPTIMIZER = {"_target_": "torch.optim.AdamW", "_partial_": True, "lr": 1e-3, "weight_decay": 0.0}


class NetModule(pl.LightningModule):
    def __init__(
        self,
        body: nn.Module,
        n_outputs: int,
        regression: bool = False,
        optimizer: dict | None = None,
        scheduler: dict | None = None,
    ):
        super().__init__()
        self.body = body
        self.head = nn.Linear(body.out_features, n_outputs)
        self.regression = regression
        self.optimizer_cfg = dict(optimizer or DEFAULT_OPTIMIZER)
        self.scheduler_cfg = dict(scheduler) if scheduler else None
        self.register_buffer("class_weights", torch.ones(n_outputs, dtype=torch.float32))
        self._lr_logged_epoch: int | None = None
        self._epoch_sums: dict = {}  # metric -> (sum of batch value x batch size, rows, epoch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))

    def log(self, name: str, value, **kwargs) -> None:
        # Every metric here is an epoch aggregate: data-parallel ranks average theirs once an epoch, so all
        # ranks see the same val/loss for early stopping and checkpoints (nothing to do on one device).
        kwargs.setdefault("sync_dist", True)
        super().log(name, value, **kwargs)

    def loss(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.regression:
            return F.mse_loss(out[:, 0], y)
        return F.cross_entropy(out, y, weight=self.class_weights)

    def _last_batch(self, validation: bool) -> bool | None:
        """Whether this step is its epoch's last, as Lightning's loop decides (None: unknown)."""
        try:
            if self.trainer.state.fn != "fit":
                return None
            loop = self.trainer.fit_loop.epoch_loop
            return bool(loop.val_loop.batch_progress.is_last_batch if validation else loop._num_ready_batches_reached())
        except (AttributeError, RuntimeError):
            return None

    def _epoch_mean(self, name: str, value: torch.Tensor, n: int, last: bool | None) -> None:
        """Adds a batch to the epoch's batch-size-weighted mean of ``name``, logged once with the epoch's last
        batch: a Lightning log call costs about a millisecond, several % of a small net's step."""
        if last is None:  # outside a fit loop: Lightning aggregates every batch itself
            self.log(name, value, on_step=False, on_epoch=True, batch_size=n)
            return
        epoch = self.trainer.current_epoch
        total, rows, seen = self._epoch_sums.get(name, (0.0, 0, epoch))
        if seen != epoch:  # what an interrupted epoch left behind
            total, rows = 0.0, 0
        total, rows = value.detach() * n + total, rows + n
        self._epoch_sums[name] = (total, rows, epoch)
        if last:
            del self._epoch_sums[name]
            self.log(name, total / rows, on_step=False, on_epoch=True, batch_size=rows)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = self.loss(self(x), y)
        self._epoch_mean("train/loss", loss, len(y), self._last_batch(validation=False))
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        out = self(x)
        last = self._last_batch(validation=True)
        self._epoch_mean("val/loss", self.loss(out, y), len(y), last)
        if self.regression:
            self._epoch_mean("val/mae", (out[:, 0] - y).abs().mean(), len(y), last)
        else:
            self._epoch_mean("val/acc", (out.argmax(1) == y).float().mean(), len(y), last)

    def configure_optimizers(self):
        optimizer = instantiate(self.optimizer_cfg)(params=self.parameters())
        if not self.scheduler_cfg:
            return optimizer
        # stepped once an epoch; a scheduler that reads a metric (ReduceLROnPlateau) reads val/loss
        scheduler = instantiate(self.scheduler_cfg)(optimizer=optimizer)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "epoch", "monitor": "val/loss"},
        }

    def on_train_batch_start(self, batch, batch_idx):
        # the learning rate this epoch trains with (schedulers step after the epoch), as train/lr: logged at the
        # epoch's first batch, or the first of a fit resumed mid-epoch (which skips on_train_epoch_start)
        if self._lr_logged_epoch != self.current_epoch:
            self._lr_logged_epoch = self.current_epoch
            self.log("train/lr", float(self.trainer.optimizers[0].param_groups[0]["lr"]), on_step=False, on_epoch=True)


class _EpochHistory(pl.Callback):
    def __init__(self):
        self.history: dict[str, list[float]] = {
            "train/loss": [],
            "train/lr": [],
            "val/loss": [],
            "val/acc": [],
            "val/mae": [],
        }

    def _record(self, trainer, keys):
        for key in keys:
            if key in trainer.callback_metrics:
                self.history[key].append(float(trainer.callback_metrics[key]))

    def on_validation_epoch_end(self, trainer, pl_module):
        if not trainer.sanity_checking:
            self._record(trainer, ("val/loss", "val/acc", "val/mae"))

    def on_train_epoch_end(self, trainer, pl_module):
        self._record(trainer, ("train/loss", "train/lr"))

    def state_dict(self):  # saved in checkpoints, so a resumed fit keeps the earlier epochs' curves
        return {k: list(v) for k, v in self.history.items()}

    def load_state_dict(self, state):
        self.history.update({k: list(v) for k, v in state.items()})


def _at(values: list[float], epoch: int | None) -> float | None:
    return values[epoch] if epoch is not None and epoch < len(values) else None


def data_placement(device, features: np.ndarray) -> str:
    """Where a fit's feature matrix lives: ``device.data`` [auto] = on the GPU when training there on one
    device and the matrix takes under a quarter of the free GPU memory, else host memory."""
    if device is None or device.get("accelerator") != "gpu":
        return "cpu"
    placement = str(device.get("data", "auto"))
    if placement == "host" or int(device.get("processes", 1)) != 1:  # a rank learns its GPU only inside the fit
        return "cpu"
    gpu = device.get("gpu") or "cuda:0"
    if placement == "gpu":
        return gpu
    free, _ = torch.cuda.mem_get_info(gpu)
    return gpu if features.nbytes < 0.25 * free else "cpu"


class NetModel(CandleModel):
    """Adapter from the CandleModel interface to a Lightning fit of ``build_body``'s network."""

    input = "sequence"
    module_class = NetModule  # families with their own training step (multitask, VAE, GAN) subclass it
    # Lightning strategy for device.strategy=ddp; a family whose steps leave some parameters without gradients
    # (the GAN's alternating generator/discriminator steps) needs DDP to look for them
    ddp_strategy = "ddp"
    predict_device = "cpu"  # a fit on one GPU sets it to that GPU

    @staticmethod
    def build_body(arch: dict) -> nn.Module:
        raise NotImplementedError

    def __init__(self, arch: dict, train_opts: dict | None = None, task: Task = Task()):
        self.arch = dict(arch)
        self.window = int(arch.get("window", 1))
        self.train_opts = dict(train_opts or {})
        self.task = task
        n_out = task.n_classes if task.is_classification else 1
        self.net = self.module_class(
            self.build_body(self.arch),
            n_out,
            regression=not task.is_classification,
            optimizer=self.train_opts.get("optimizer"),
            scheduler=self.train_opts.get("scheduler"),
        )

    @classmethod
    def from_config(cls, cfg: DictConfig, n_features: int, seed: int, num_threads: int, task: Task = Task()):
        container = OmegaConf.to_container(cfg, resolve=True)
        arch = {k: v for k, v in container.items() if k not in _NOT_ARCH}
        arch["n_features"] = n_features
        if cfg.get("input") == "tabular":
            arch["window"] = 1
        opts = {
            "batch_size": cfg.batch_size,
            "max_epochs": cfg.max_epochs,
            "patience": cfg.patience,
            "seed": seed,
            "optimizer": container.get("optimizer") or DEFAULT_OPTIMIZER,
            "scheduler": container.get("scheduler"),
        }
        return cls(arch, opts, task)

    def _batches(self, data: Rows, shuffle_seed=None, with_labels=True) -> WindowBatches:
        labels = None
        if with_labels:
            labels = data.y.astype(np.int64 if self.task.is_classification else np.float32)
        return WindowBatches(
            torch.from_numpy(np.ascontiguousarray(data.features)),
            data.rows,
            labels,
            self.window,
            self.train_opts.get("batch_size", 1024),
            shuffle_seed,
        )

    def fit(self, train: Rows, val: Rows, ctx: FitContext) -> FitReport:
        if self.task.is_classification and self.task.class_weight == "balanced":  # from train labels only
            weights = balanced_weights(train.y, self.task.n_classes)
            self.net.class_weights.copy_(torch.tensor(weights, dtype=torch.float32))
        ckpt_dir = ctx.run_dir / "checkpoints"
        checkpoint = ModelCheckpoint(
            dirpath=ckpt_dir,
            filename="best-{epoch}",
            monitor="val/loss",
            mode="min",
            save_top_k=1,
            save_weights_only=True,
        )
        # Every completed epoch's full state (weights, optimiser, loops, callbacks): what resume continues.
        latest = ModelCheckpoint(
            dirpath=ckpt_dir, filename="latest", save_top_k=1, every_n_epochs=1, enable_version_counter=False
        )
        history = _EpochHistory()
        cbs = ctx.callbacks
        callbacks = [
            checkpoint,
            latest,
            history,
            EarlyStopping(monitor="val/loss", mode="min", patience=int(self.train_opts["patience"])),
        ]
        if ctx.hooks:
            callbacks.append(ProgressCallback(ctx.reporter, cbs.progress.every_n_batches if cbs else 10))
        cancel = None
        if ctx.token is not None and ctx.hooks:
            cancel = CancelCallback(
                ctx.token, ckpt_dir / "cancelled.ckpt", cbs.cancel.check_every_n_batches if cbs else 5
            )
            callbacks.append(cancel)
        dev = ctx.device
        trainer = pl.Trainer(
            max_epochs=int(self.train_opts["max_epochs"]),
            accelerator=dev.accelerator if dev is not None else "cpu",
            devices=dev.devices if dev is not None else 1,
            precision=dev.precision if dev is not None else "32-true",
            strategy=(self.ddp_strategy if dev.get("strategy") == "ddp" else dev.get("strategy", "auto"))
            if dev is not None
            else "auto",
            callbacks=callbacks,
            logger=ctx.logger if ctx.logger is not None else False,
            enable_progress_bar=False,
            enable_model_summary=False,
            num_sanity_val_steps=0,
            # GPU kernels need it to repeat a fit; CPU kernels give the same bits without it, ~10% faster (LSTM)
            deterministic=dev is not None and dev.get("accelerator") == "gpu",
            default_root_dir=str(ctx.run_dir),
            gradient_clip_val=ctx.trainer.gradient_clip_val if ctx.trainer is not None else None,
            limit_train_batches=ctx.trainer.get("limit_train_batches") if ctx.trainer is not None else None,
        )
        main_rank = trainer.global_rank == 0  # extra data-parallel ranks leave the checkpoint folder alone
        if main_rank and ckpt_dir.exists() and ctx.resume_from is None:  # never pick up another fit's "best"
            shutil.rmtree(ckpt_dir)
        resume_from = None
        if ctx.resume_from:  # rank 0 copies it in before it starts the other ranks; they read that same copy
            resume_from = adopt_checkpoint(Path(ctx.resume_from), ckpt_dir, write=main_rank, module=self.net)
        train_batches = self._batches(train, shuffle_seed=ctx.seed)
        val_batches = self._batches(val)
        data_device = data_placement(dev, train.features)
        if data_device != "cpu":  # the whole matrix on the GPU: batches are gathered where the model runs
            shared = train_batches.features.to(data_device)
            train_batches.to(data_device, shared)
            val_batches.to(data_device, shared if val.features is train.features else None)
        train_batches.epoch_source = lambda: trainer.current_epoch
        # batches the loop has trained on this epoch (what a mid-epoch checkpoint records; the loop fetches ahead)
        train_batches.progress_source = lambda: trainer.fit_loop.epoch_loop.batch_progress.current.processed
        train_batches.rank_source = lambda: (trainer.global_rank, trainer.world_size)
        for batches in (train_batches, val_batches):
            batches.device_source = lambda: trainer.strategy.root_device
        gpu = dev.get("gpu") if dev is not None and dev.get("accelerator") == "gpu" else None
        self.predict_device = gpu or "cpu"
        try:
            trainer.fit(
                self.net,
                train_dataloaders=train_batches,
                val_dataloaders=val_batches,
                ckpt_path=resume_from,
                weights_only=True,
            )  # a checkpoint is never unpickled
        except (Cancelled, SIGTERMException):  # the latter: Lightning acted on a SIGTERM first (state kept)
            saved = cancel is not None and cancel.stopped_at is not None
            latest_path = ckpt_dir / "latest.ckpt"
            stopped = cancel.stopped_at if saved else {"epoch": trainer.current_epoch, "during": "signal"}
            kept = cancel.checkpoint_path if saved else (latest_path if latest_path.exists() else None)
            return FitReport(
                metrics={"cancelled_at": stopped, "epochs_completed": len(history.history["val/loss"])},
                cancelled=True,
                checkpoint=str(kept) if kept else None,
                history=history.history,
            )
        finally:  # the ranks a data-parallel fit started, for rank 0 to end should it fail later
            remember_workers(getattr(trainer.strategy.launcher, "procs", None) or [])
        if not main_rank:  # rank 0 restores the best epoch and reports; this rank's part is done
            return FitReport(metrics={"rank": trainer.global_rank})
        best_path = checkpoint.best_model_path
        best_epoch = None
        if best_path:  # restore the best epoch's weights from disk, not the last in-memory ones
            best = torch.load(best_path, map_location="cpu", weights_only=True)
            self.net.load_state_dict(best["state_dict"])
            best_epoch = int(best["epoch"])
        score = "val/acc" if self.task.is_classification else "val/mae"
        metrics = {
            "best_epoch": best_epoch,
            "epochs_run": trainer.current_epoch,
            "train/loss": _at(history.history["train/loss"], best_epoch),
            "val/loss": float(checkpoint.best_model_score) if checkpoint.best_model_score is not None else None,
            score: _at(history.history[score], best_epoch),
            "best_checkpoint": best_path or None,
        }
        if ctx.resume_from:
            metrics["resumed_from"] = str(ctx.resume_from)
        return FitReport(metrics=metrics, history={k: v for k, v in history.history.items() if v})

    @torch.no_grad()
    def predict_proba(self, data: Rows) -> np.ndarray:
        """Probabilities (or values) in float64, computed where the net was trained (``predict_device``: the
        GPU after a single-GPU fit, else the CPU), without mixed precision."""
        device = torch.device(self.predict_device)
        self.net.eval()
        self.net.to(device)
        head = (lambda o: o) if not self.task.is_classification else (lambda o: torch.softmax(o, dim=1))
        # windows gathered on the host and copied a batch at a time (the matrix holds every row, not only these)
        out = [head(self.net(x.to(device))).double() for (x,) in self._batches(data, with_labels=False)]
        if not out:
            return np.zeros((0, self.net.head.out_features))
        return torch.cat(out).cpu().numpy()

    def save(self, directory: Path) -> None:
        state = {k: v.detach().cpu().contiguous() for k, v in self.net.state_dict().items()}
        save_file(state, str(directory / _WEIGHTS))
        (directory / _META).write_text(
            json.dumps({"arch": self.arch, "train_opts": self.train_opts, "task": vars(self.task)})
        )

    @classmethod
    def load(cls, directory: Path) -> "NetModel":
        meta = json.loads((directory / _META).read_text())
        # a loaded net only predicts: the optimiser and scheduler a folder names (``_target_``s) are never built
        opts = {k: v for k, v in meta["train_opts"].items() if k not in ("optimizer", "scheduler")}
        model = cls(meta["arch"], opts, Task(**meta["task"]))
        model.net.load_state_dict(load_file(str(directory / _WEIGHTS)))
        model.net.eval()
        return model

    def n_parameters(self) -> int:
        return int(sum(p.numel() for p in self.net.parameters()))
