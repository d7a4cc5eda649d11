"""1-D convolutions over the *feature axis* of one candle's feature vector: each feature value is embedded
into ``embed_dim`` channels by its own affine map, the F features form a length-F sequence, and filters
slide across neighbouring features (the order of features.feature_names). Not cnn1d, which convolves time."""

import torch
from torch import nn

from core.errors import UserError
from models.mlp import activation
from models.nets import NetModel
from models.tab_transformer import FeatureTokenizer

POOLING = ("flatten", "mean", "max")


class TabCNNBody(nn.Module):
    def __init__(
        self,
        n_features: int,
        embed_dim: int,
        channels: int,
        kernel_size: int,
        layers: int,
        dropout: float,
        pooling: str,
        act: str = "gelu",
    ):
        super().__init__()
        if pooling not in POOLING:
            raise UserError(f"unknown pooling {pooling!r}; available: {', '.join(POOLING)}", "model.pooling")
        if kernel_size < 1 or layers < 1 or channels < 1 or embed_dim < 1:
            raise UserError("embed_dim, channels, kernel_size and layers must be positive", "model")
        self.tokenizer = FeatureTokenizer(n_features, embed_dim)
        self.convs = nn.ModuleList(
            nn.Conv1d(embed_dim if i == 0 else channels, channels, kernel_size, padding="same") for i in range(layers)
        )
        self.act = activation(act)
        self.drop = nn.Dropout(dropout)
        self.pooling = pooling
        # flatten keeps which feature each position is; mean/max forget it
        self.out_features = channels * n_features if pooling == "flatten" else channels

    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 1, F) -> (B, F, embed_dim): the row's features as a sequence of F tokens."""
        return self.tokenizer(x[:, -1])

    def feature_maps(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 1, F) -> (B, channels, F): convolution runs along the feature axis."""
        h = self.tokens(x).transpose(1, 2)
        for i, conv in enumerate(self.convs):
            out = self.drop(self.act(conv(h)))
            h = out if i == 0 else h + out
        return h

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.feature_maps(x)
        if self.pooling == "flatten":
            return h.flatten(1)
        return h.mean(dim=-1) if self.pooling == "mean" else h.amax(dim=-1)


class TabCNNModel(NetModel):
    input = "tabular"

    @staticmethod
    def build_body(arch: dict) -> nn.Module:
        return TabCNNBody(
            arch["n_features"],
            arch["embed_dim"],
            arch["channels"],
            arch["kernel_size"],
            arch["layers"],
            arch["dropout"],
            arch["pooling"],
            arch.get("activation", "gelu"),
        )
