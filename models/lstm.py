"""LSTM over windows of past feature rows; the last hidden state feeds the shared head (models.nets)."""

import torch
from torch import nn

from models.nets import NetModel


class LSTMBody(nn.Module):
    def __init__(self, n_features: int, hidden: int, layers: int, dropout: float):
        super().__init__()
        self.lstm = nn.LSTM(
            n_features, hidden, num_layers=layers, batch_first=True, dropout=dropout if layers > 1 else 0.0
        )
        self.out_features = hidden

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm(x)
        return out[:, -1]


class LSTMModel(NetModel):
    input = "sequence"

    @staticmethod
    def build_body(arch: dict) -> nn.Module:
        return LSTMBody(arch["n_features"], arch["hidden"], arch["layers"], arch["dropout"])
