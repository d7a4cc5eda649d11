"""Causal temporal convolutions over a window of past feature rows (features are the input channels),
pooled over time; the pooled channels feed the shared head (models.nets)."""

import torch
import torch.nn.functional as F
from torch import nn

from core.errors import UserError
from models.mlp import activation
from models.nets import NetModel

POOLING = ("mean", "max", "last")


class CNN1DBody(nn.Module):
    def __init__(
        self,
        n_features: int,
        channels: int,
        kernel_size: int,
        layers: int,
        dilation: int,
        dropout: float,
        pooling: str,
        act: str = "gelu",
    ):
        super().__init__()
        if pooling not in POOLING:
            raise UserError(f"unknown pooling {pooling!r}; available: {', '.join(POOLING)}", "model.pooling")
        if kernel_size < 1 or layers < 1 or dilation < 1 or channels < 1:
            raise UserError("channels, kernel_size, layers and dilation must be positive", "model")
        self.convs = nn.ModuleList(
            nn.Conv1d(n_features if i == 0 else channels, channels, kernel_size, dilation=dilation**i)
            for i in range(layers)
        )
        # Left padding only: the output at step t sees steps <= t (a window never looks past its end anyway,
        # but causal steps make "last" pooling a summary of the whole window).
        self.pads = [(kernel_size - 1) * dilation**i for i in range(layers)]
        self.act = activation(act)
        self.drop = nn.Dropout(dropout)
        self.pooling = pooling
        self.out_features = channels

    def feature_maps(self, x: torch.Tensor) -> torch.Tensor:
        """(B, W, F) -> (B, channels, W): convolution runs along the time axis."""
        h = x.transpose(1, 2)
        for i, (conv, pad) in enumerate(zip(self.convs, self.pads)):
            out = self.drop(self.act(conv(F.pad(h, (pad, 0)))))
            h = out if i == 0 else h + out  # residual once the channel count is fixed
        return h

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.feature_maps(x)
        if self.pooling == "mean":
            return h.mean(dim=-1)
        if self.pooling == "max":
            return h.amax(dim=-1)
        return h[..., -1]


class CNN1DModel(NetModel):
    input = "sequence"

    @staticmethod
    def build_body(arch: dict) -> nn.Module:
        return CNN1DBody(
            arch["n_features"],
            arch["channels"],
            arch["kernel_size"],
            arch["layers"],
            arch.get("dilation", 1),
            arch["dropout"],
            arch["pooling"],
            arch.get("activation", "gelu"),
        )
