"""Multilayer perceptron over the current candle's feature vector (tabular: windows of one row)."""

import torch
from torch import nn

from core.errors import UserError
from models.nets import NetModel

ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "silu": nn.SiLU, "tanh": nn.Tanh, "elu": nn.ELU}


def activation(name: str, where: str = "model.activation") -> nn.Module:
    if name not in ACTIVATIONS:
        raise UserError(f"unknown activation {name!r}; available: {', '.join(ACTIVATIONS)}", where)
    return ACTIVATIONS[name]()


def mlp_stack(
    n_inputs: int, hidden_sizes: list[int], dropout: float, act: str, where: str = "model.hidden_sizes"
) -> nn.Sequential:
    """Linear -> activation -> dropout per hidden size; an empty list is the identity (a linear model)."""
    sizes = list(hidden_sizes or [])
    if any(not isinstance(w, int) or isinstance(w, bool) or w < 1 for w in sizes):
        raise UserError(f"hidden sizes must be positive integers, got {sizes}", where)
    layers: list[nn.Module] = []
    for width in sizes:
        layers += [nn.Linear(n_inputs, width), activation(act), nn.Dropout(dropout)]
        n_inputs = width
    return nn.Sequential(*layers)


class MLPBody(nn.Module):
    def __init__(self, n_features: int, hidden_sizes: list[int], dropout: float, act: str):
        super().__init__()
        self.net = mlp_stack(n_features, hidden_sizes, dropout, act)
        self.out_features = hidden_sizes[-1] if hidden_sizes else n_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x[:, -1])  # (B, 1, F) -> the row's features (B, F)


class MLPModel(NetModel):
    input = "tabular"

    @staticmethod
    def build_body(arch: dict) -> nn.Module:
        return MLPBody(arch["n_features"], list(arch["hidden_sizes"]), arch["dropout"], arch["activation"])
