"""Variational autoencoder on windows, trained jointly with the target head on the latent mean.

The encoder (LSTM over the window) gives mu and logvar; a reparameterised sample z = mu + sigma * eps is
decoded back to the whole window (B, W, F). The loss is the target loss plus ``elbo_weight`` times the
negative ELBO (reconstruction + beta * KL) per window element. ``train/elbo`` is that negative ELBO per
window (a loss: lower is better), beside ``train/recon`` and ``train/kl``. The shared head reads mu, so
predictions are deterministic; ``val/loss`` is the target loss.
"""

import torch
from torch import nn

from models.base import Task
from models.lstm import LSTMBody
from models.nets import NetModel, NetModule


class WindowVAE(nn.Module):
    """``forward`` is the encoder mean (what the head reads); ``encode`` / ``decode`` serve the ELBO."""

    def __init__(self, n_features: int, window: int, hidden: int, layers: int, latent: int, dropout: float):
        super().__init__()
        self.window, self.n_features = window, n_features
        self.encoder = LSTMBody(n_features, hidden, layers, dropout)
        self.to_posterior = nn.Linear(hidden, 2 * latent)
        self.decoder = nn.Sequential(
            nn.Linear(latent, hidden),
            nn.GELU(),
            nn.Linear(hidden, 2 * hidden),
            nn.GELU(),
            nn.Linear(2 * hidden, window * n_features),
        )
        self.out_features = latent

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, logvar = self.to_posterior(self.encoder(x)).chunk(2, dim=1)
        return mu, logvar.clamp(-10.0, 10.0)  # keeps exp(logvar) finite early in training

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z).view(-1, self.window, self.n_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.encode(x)[0]


class VAEModule(NetModule):
    beta = 1.0  # KL weight in the (beta-)ELBO
    elbo_weight = 1.0  # weight of the per-element negative ELBO against the target loss

    def elbo_terms(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per-window reconstruction (sum of squared errors), KL to N(0, I), and the mean mu."""
        mu, logvar = self.body.encode(x)
        z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)
        recon = ((self.body.decode(z) - x) ** 2).sum(dim=(1, 2)).mean()
        kl = (-0.5 * (1.0 + logvar - mu.pow(2) - logvar.exp()).sum(dim=1)).mean()
        return {"mu": mu, "recon": recon, "kl": kl, "elbo": recon + self.beta * kl}

    def training_step(self, batch, batch_idx):
        x, y = batch
        terms = self.elbo_terms(x)
        target = self.loss(self.head(terms["mu"]), y)
        loss = target + self.elbo_weight * terms["elbo"] / (x.shape[1] * x.shape[2])
        n = len(y)
        self.log("train/loss", loss, on_step=False, on_epoch=True, batch_size=n)
        self.log("train/loss_target", target, on_step=False, on_epoch=True, batch_size=n)
        for name in ("elbo", "recon", "kl"):
            self.log(f"train/{name}", terms[name], on_step=False, on_epoch=True, batch_size=n)
        return loss

    def validation_step(self, batch, batch_idx):
        super().validation_step(batch, batch_idx)  # val/loss: the target loss on mu
        x, y = batch
        mu, logvar = self.body.encode(x)
        recon = ((self.body.decode(mu) - x) ** 2).sum(dim=(1, 2)).mean()  # decoded at the mean
        kl = (-0.5 * (1.0 + logvar - mu.pow(2) - logvar.exp()).sum(dim=1)).mean()
        self.log("val/recon", recon, on_epoch=True, batch_size=len(y))
        self.log("val/kl", kl, on_epoch=True, batch_size=len(y))


class VAEModel(NetModel):
    input = "sequence"
    module_class = VAEModule

    @staticmethod
    def build_body(arch: dict) -> nn.Module:
        return WindowVAE(
            arch["n_features"], arch["window"], arch["hidden"], arch["layers"], arch["latent"], arch["dropout"]
        )

    def __init__(self, arch: dict, train_opts: dict | None = None, task: Task = Task()):
        super().__init__(arch, train_opts, task)
        self.net.beta = float(arch.get("beta", 1.0))
        self.net.elbo_weight = float(arch.get("elbo_weight", 1.0))
