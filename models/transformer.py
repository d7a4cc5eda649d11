"""Transformer encoder over a window's time steps: each candle's feature row is one token; the last (or
mean) token state feeds the shared head (models.nets)."""

import math

import torch
from torch import nn

from core.errors import UserError
from models.nets import NetModel

POSITIONS = ("learned", "sinusoidal")
POOLING = ("last", "mean")


def encoder_stack(d_model: int, heads: int, layers: int, dropout: float, ff_mult: int) -> nn.TransformerEncoder:
    """Pre-norm encoder layers (stable without warm-up at these sizes), batch first: (B, tokens, d_model)."""
    if d_model % heads:
        raise UserError(f"d_model ({d_model}) must be a multiple of heads ({heads})", "model.d_model")
    layer = nn.TransformerEncoderLayer(
        d_model,
        heads,
        dim_feedforward=ff_mult * d_model,
        dropout=dropout,
        activation="gelu",
        batch_first=True,
        norm_first=True,
    )
    return nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)


def sinusoidal_positions(length: int, d_model: int) -> torch.Tensor:
    position = torch.arange(length, dtype=torch.float32)[:, None]
    freq = torch.exp(torch.arange(0, d_model, 2, dtype=torch.float32) * (-math.log(10000.0) / d_model))
    table = torch.zeros(length, d_model)
    table[:, 0::2] = torch.sin(position * freq)
    table[:, 1::2] = torch.cos(position * freq[: d_model // 2])
    return table


class TransformerBody(nn.Module):
    def __init__(
        self,
        n_features: int,
        window: int,
        d_model: int,
        heads: int,
        layers: int,
        dropout: float,
        ff_mult: int,
        positions: str,
        causal: bool,
        pooling: str,
    ):
        super().__init__()
        if positions not in POSITIONS:
            raise UserError(f"unknown positions {positions!r}; available: {', '.join(POSITIONS)}", "model.positions")
        if pooling not in POOLING:
            raise UserError(f"unknown pooling {pooling!r}; available: {', '.join(POOLING)}", "model.pooling")
        self.embed = nn.Linear(n_features, d_model)
        if positions == "learned":
            self.positions = nn.Parameter(torch.randn(window, d_model) * 0.02)
        else:  # a function of the window length, not a weight: rebuilt on load
            self.register_buffer("positions", sinusoidal_positions(window, d_model), persistent=False)
        self.encoder = encoder_stack(d_model, heads, layers, dropout, ff_mult)
        self.norm = nn.LayerNorm(d_model)
        self.causal = bool(causal)
        # -inf above the diagonal: token t attends to tokens <= t
        self.register_buffer(
            "mask", torch.triu(torch.full((window, window), float("-inf")), diagonal=1), persistent=False
        )
        self.pooling = pooling
        self.out_features = d_model

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """(B, W, F) -> token states (B, W, d_model): attention runs across the W time steps."""
        steps = x.shape[1]
        h = self.embed(x) + self.positions[:steps]
        mask = self.mask[:steps, :steps] if self.causal else None
        return self.norm(self.encoder(h, mask=mask))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.encode(x)
        return h[:, -1] if self.pooling == "last" else h.mean(dim=1)


class TransformerModel(NetModel):
    input = "sequence"

    @staticmethod
    def build_body(arch: dict) -> nn.Module:
        return TransformerBody(
            arch["n_features"],
            arch["window"],
            arch["d_model"],
            arch["heads"],
            arch["layers"],
            arch["dropout"],
            arch.get("ff_mult", 2),
            arch["positions"],
            arch["causal"],
            arch["pooling"],
        )
