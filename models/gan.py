"""Auxiliary-classifier GAN on windows: the discriminator is also the predictor.

A generator maps noise to synthetic windows (B, W, F). The discriminator (dilated convolutions over the
window) feeds two outputs: a real/fake logit, and the shared head of models.nets with the target classes.
Each batch takes two optimiser steps under Lightning manual optimisation: the discriminator on real
windows (smoothed label) against generated ones plus ``cls_weight`` x the class loss on the real labelled
windows, then the generator with the non-saturating loss against the updated discriminator. Predictions
are the class head's; ``train/loss`` and ``val/loss`` are the class loss, comparable with other families.
"""

import dataclasses

import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch import nn

from models.base import FitContext, FitReport, Rows, Task
from models.nets import NetModel, NetModule


class ConvDiscriminator(nn.Module):
    """Dilated 1-D convolutions over the window; features of the last candle and of the window mean."""

    def __init__(self, n_features: int, hidden: int, dropout: float):
        super().__init__()
        self.convs = nn.Sequential(
            nn.Conv1d(n_features, hidden, 3, padding=1),
            nn.LeakyReLU(0.2),
            nn.Conv1d(hidden, hidden, 3, padding=2, dilation=2),
            nn.LeakyReLU(0.2),
            nn.Conv1d(hidden, hidden, 3, padding=4, dilation=4),
            nn.LeakyReLU(0.2),
        )
        self.dropout = nn.Dropout(dropout)
        self.out_features = 2 * hidden

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.convs(x.transpose(1, 2))  # (B, hidden, W)
        return self.dropout(torch.cat([h[:, :, -1], h.mean(dim=2)], dim=1))


class WindowGenerator(nn.Module):
    """Noise (B, latent) -> a synthetic window (B, W, F) in the scaled feature space."""

    def __init__(self, latent: int, hidden: int, window: int, n_features: int):
        super().__init__()
        self.latent, self.window, self.hidden = latent, window, hidden
        self.expand = nn.Sequential(
            nn.Linear(latent, 2 * hidden), nn.LeakyReLU(0.2), nn.Linear(2 * hidden, hidden * window), nn.LeakyReLU(0.2)
        )
        self.to_window = nn.Sequential(
            nn.Conv1d(hidden, hidden, 3, padding=1), nn.LeakyReLU(0.2), nn.Conv1d(hidden, n_features, 1)
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.expand(z).view(-1, self.hidden, self.window)
        return self.to_window(h).transpose(1, 2)


class GANBody(nn.Module):
    """``forward`` is the discriminator's features (what the class head and the real/fake logit read)."""

    def __init__(self, n_features: int, window: int, hidden: int, latent: int, dropout: float):
        super().__init__()
        self.discriminator = ConvDiscriminator(n_features, hidden, dropout)
        self.generator = WindowGenerator(latent, hidden, window, n_features)
        self.out_features = self.discriminator.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.discriminator(x)


class GANModule(NetModule):
    cls_weight = 1.0  # class loss in the discriminator's objective
    real_label = 0.9  # one-sided label smoothing of real windows
    gradient_clip_val = None  # clipped here: Lightning clips only under automatic optimisation

    def __init__(
        self,
        body: nn.Module,
        n_outputs: int,
        regression: bool = False,
        optimizer: dict | None = None,
        scheduler: dict | None = None,
    ):
        super().__init__(body, n_outputs, regression, optimizer, scheduler)
        self.adversary = nn.Linear(body.out_features, 1)  # real/fake logit
        self.automatic_optimization = False

    def sample(self, n: int) -> torch.Tensor:
        return self.body.generator(torch.randn(n, self.body.generator.latent, device=self.device))

    def discriminator_parameters(self) -> list[nn.Parameter]:
        return [*self.body.discriminator.parameters(), *self.head.parameters(), *self.adversary.parameters()]

    def configure_optimizers(self):
        make = instantiate(self.optimizer_cfg)
        optimizers = [make(params=self.discriminator_parameters()), make(params=self.body.generator.parameters())]
        if not self.scheduler_cfg:
            return optimizers
        return optimizers, [instantiate(self.scheduler_cfg)(optimizer=o) for o in optimizers]

    def _update(self, optimizer, loss: torch.Tensor, counted: bool) -> None:
        optimizer.zero_grad()
        self.manual_backward(loss)
        if self.gradient_clip_val:
            self.clip_gradients(optimizer, gradient_clip_val=self.gradient_clip_val, gradient_clip_algorithm="norm")
        if counted:
            optimizer.step()
        else:  # through the strategy (precision plugin, hooks) without advancing global_step
            self.trainer.strategy.optimizer_step(optimizer.optimizer, closure=lambda: None, model=self)

    def training_step(self, batch, batch_idx):
        x, y = batch
        d_opt, g_opt = self.optimizers()
        n = len(y)
        fake = self.sample(n)
        real, generated = torch.full((n,), self.real_label, device=x.device), torch.zeros(n, device=x.device)

        with self.toggled_optimizer(d_opt):
            h = self.body(torch.cat([x, fake.detach()]))
            adv = self.adversary(h)[:, 0]
            d_adv = F.binary_cross_entropy_with_logits(adv[:n], real) + F.binary_cross_entropy_with_logits(
                adv[n:], generated
            )
            cls = self.loss(self.head(h[:n]), y)
            d_loss = d_adv + self.cls_weight * cls
            # global_step counts batches (what progress and its ETA read), so only the generator's step counts
            self._update(d_opt, d_loss, counted=False)

        with self.toggled_optimizer(g_opt):  # discriminator frozen: only the generator learns to fool it
            g_loss = F.binary_cross_entropy_with_logits(self.adversary(self.body(fake))[:, 0], torch.ones_like(real))
            self._update(g_opt, g_loss, counted=True)

        for name, value in (("loss", cls), ("cls_loss", cls), ("d_loss", d_loss), ("g_loss", g_loss)):
            self.log(f"train/{name}", value.detach(), on_step=False, on_epoch=True, batch_size=n)
        return {"loss": cls.detach()}

    def on_train_epoch_end(self):
        schedulers = self.lr_schedulers()  # manual optimisation steps its schedulers itself
        if schedulers is None:
            return
        for scheduler in schedulers if isinstance(schedulers, list) else [schedulers]:
            scheduler.step()


class GANModel(NetModel):
    input = "sequence"
    module_class = GANModule
    ddp_strategy = "ddp_find_unused_parameters_true"  # each step trains one side only

    @staticmethod
    def build_body(arch: dict) -> nn.Module:
        return GANBody(arch["n_features"], arch["window"], arch["hidden"], arch["latent"], arch["dropout"])

    def __init__(self, arch: dict, train_opts: dict | None = None, task: Task = Task()):
        if not task.is_classification:
            raise ValueError("the gan family predicts classes (binary, multiclass), not regression targets")
        super().__init__(arch, train_opts, task)
        self.net.cls_weight = float(arch.get("cls_weight", 1.0))
        self.net.real_label = float(arch.get("real_label", 0.9))

    def fit(self, train: Rows, val: Rows, ctx: FitContext) -> FitReport:
        # Lightning refuses Trainer(gradient_clip_val) under manual optimisation: the module clips instead.
        if ctx.trainer is not None and ctx.trainer.get("gradient_clip_val"):
            self.net.gradient_clip_val = float(ctx.trainer.gradient_clip_val)
            ctx = dataclasses.replace(ctx, trainer=OmegaConf.merge(ctx.trainer, {"gradient_clip_val": None}))
        return super().fit(train, val, ctx)
