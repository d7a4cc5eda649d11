"""Multitask net: one LSTM trunk over the window feeds three heads — the run's target (the shared head of
models.nets), the forward return and the forward volatility — trained on a weighted sum of their losses.

The auxiliary targets come from ``Rows.aux``; they are standardised with training-row statistics, which
live in the module's buffers and so travel with the safetensors weights. ``train/loss`` is the weighted
sum (beside ``train/loss_<component>``); predictions are the target head's alone, and ``val/loss`` is the
target loss, so early stopping and the kept epoch follow what is predicted, comparable with other families.
"""

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from data.windows import WindowBatches
from models.base import FitContext, FitReport, Rows, Task
from models.lstm import LSTMBody
from models.nets import NetModel, NetModule

AUX_TARGETS = ("forward_return", "forward_volatility")
# loss_weights key -> logged as train/loss_<key>
LOSS_NAMES = ("target", "forward_return", "volatility")
DEFAULT_LOSS_WEIGHTS = {"target": 1.0, "forward_return": 0.5, "volatility": 0.5}


class MultitaskModule(NetModule):
    def __init__(
        self,
        body: nn.Module,
        n_outputs: int,
        regression: bool = False,
        optimizer: dict | None = None,
        scheduler: dict | None = None,
    ):
        super().__init__(body, n_outputs, regression, optimizer, scheduler)
        self.return_head = nn.Linear(body.out_features, 1)
        self.volatility_head = nn.Linear(body.out_features, 1)
        self.loss_weights = dict(DEFAULT_LOSS_WEIGHTS)
        # train-row mean / std of (forward_return, forward_volatility), saved with the weights
        self.register_buffer("aux_mean", torch.zeros(len(AUX_TARGETS)))
        self.register_buffer("aux_std", torch.ones(len(AUX_TARGETS)))

    def components(self, x: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Target logits and each loss component; ``labels`` columns: target, standardised return, volatility."""
        h = self.body(x)
        out = self.head(h)
        y = labels[:, 0] if self.regression else labels[:, 0].long()
        losses = {
            "target": self.loss(out, y),
            "forward_return": F.mse_loss(self.return_head(h)[:, 0], labels[:, 1]),
            "volatility": F.mse_loss(self.volatility_head(h)[:, 0], labels[:, 2]),
        }
        return out, losses

    def training_step(self, batch, batch_idx):
        x, labels = batch
        _, losses = self.components(x, labels)
        total = sum(self.loss_weights[name] * losses[name] for name in LOSS_NAMES)
        n = len(labels)
        self.log("train/loss", total, on_step=False, on_epoch=True, batch_size=n)
        for name in LOSS_NAMES:
            self.log(f"train/loss_{name}", losses[name], on_step=False, on_epoch=True, batch_size=n)
        return total

    def validation_step(self, batch, batch_idx):
        x, labels = batch
        out, losses = self.components(x, labels)
        n = len(labels)
        self.log("val/loss", losses["target"], on_epoch=True, batch_size=n)
        for name in ("forward_return", "volatility"):
            self.log(f"val/loss_{name}", losses[name], on_epoch=True, batch_size=n)
        if self.regression:
            self.log("val/mae", (out[:, 0] - labels[:, 0]).abs().mean(), on_epoch=True, batch_size=n)
        else:
            self.log("val/acc", (out.argmax(1) == labels[:, 0].long()).float().mean(), on_epoch=True, batch_size=n)


class MultitaskModel(NetModel):
    input = "sequence"
    module_class = MultitaskModule

    @staticmethod
    def build_body(arch: dict) -> nn.Module:
        return LSTMBody(arch["n_features"], arch["hidden"], arch["layers"], arch["dropout"])

    def __init__(self, arch: dict, train_opts: dict | None = None, task: Task = Task()):
        super().__init__(arch, train_opts, task)
        weights = {**DEFAULT_LOSS_WEIGHTS, **(arch.get("loss_weights") or {})}
        unknown = set(weights) - set(LOSS_NAMES)
        if unknown:
            raise ValueError(
                f"model.loss_weights: unknown component(s) {sorted(unknown)}; choose from {', '.join(LOSS_NAMES)}"
            )
        self.net.loss_weights = {k: float(v) for k, v in weights.items()}

    def fit(self, train: Rows, val: Rows, ctx: FitContext) -> FitReport:
        aux = self._aux(train)
        self.net.aux_mean.copy_(torch.from_numpy(aux.mean(0)))  # training rows only
        self.net.aux_std.copy_(torch.from_numpy(np.maximum(aux.std(0), 1e-12)))
        return super().fit(train, val, ctx)

    @staticmethod
    def _aux(data: Rows) -> np.ndarray:
        if data.aux is None or any(name not in data.aux for name in AUX_TARGETS):
            raise ValueError(f"the multitask family needs Rows.aux with {', '.join(AUX_TARGETS)}")
        return np.column_stack([np.asarray(data.aux[name], dtype=np.float64) for name in AUX_TARGETS])

    def _batches(self, data: Rows, shuffle_seed=None, with_labels=True) -> WindowBatches:
        if not with_labels:
            return super()._batches(data, shuffle_seed, with_labels=False)
        mean = self.net.aux_mean.double().cpu().numpy()
        std = self.net.aux_std.double().cpu().numpy()
        aux = (self._aux(data) - mean) / std
        # class ids are small integers, exact in float32; the step casts them back
        labels = np.column_stack([data.y.astype(np.float64), aux]).astype(np.float32)
        return WindowBatches(
            torch.from_numpy(np.ascontiguousarray(data.features)),
            data.rows,
            labels,
            self.window,
            self.train_opts.get("batch_size", 1024),
            shuffle_seed,
        )
