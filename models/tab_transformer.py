"""FT-Transformer over one candle's feature vector: every feature becomes a token (its own linear
embedding plus a feature bias), a learned [CLS] token is prepended, and the [CLS] state after the encoder
feeds the shared head (models.nets). Attention runs across features, not time."""

import math

import torch
from torch import nn

from models.nets import NetModel
from models.transformer import encoder_stack


class FeatureTokenizer(nn.Module):
    """(B, F) -> (B, F, d): token_f = x_f * weight_f + bias_f, a separate embedding per feature."""

    def __init__(self, n_features: int, d: int):
        super().__init__()
        bound = 1.0 / math.sqrt(d)
        self.weight = nn.Parameter(torch.empty(n_features, d).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(n_features, d).uniform_(-bound, bound))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.unsqueeze(-1) * self.weight + self.bias


class TabTransformerBody(nn.Module):
    def __init__(self, n_features: int, d_model: int, heads: int, layers: int, dropout: float, ff_mult: int):
        super().__init__()
        self.tokenizer = FeatureTokenizer(n_features, d_model)
        self.cls = nn.Parameter(torch.randn(1, 1, d_model) * 0.02)
        self.encoder = encoder_stack(d_model, heads, layers, dropout, ff_mult)
        self.norm = nn.LayerNorm(d_model)
        self.act = nn.ReLU()
        self.out_features = d_model

    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 1, F) -> (B, F, d_model): the row's features as a sequence of F tokens."""
        return self.tokenizer(x[:, -1])

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 1, F) -> (B, 1 + F, d_model): [CLS] then one state per feature."""
        t = self.tokens(x)
        return self.encoder(torch.cat([self.cls.expand(len(t), -1, -1), t], dim=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.norm(self.encode(x)[:, 0]))


class TabTransformerModel(NetModel):
    input = "tabular"

    @staticmethod
    def build_body(arch: dict) -> nn.Module:
        return TabTransformerBody(
            arch["n_features"], arch["d_model"], arch["heads"], arch["layers"], arch["dropout"], arch.get("ff_mult", 2)
        )
