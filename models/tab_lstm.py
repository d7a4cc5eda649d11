"""LSTM reading one candle's feature vector as a sequence of F tokens (each feature value embedded by its
own affine map); the final hidden state(s) feed the shared head (models.nets). Not lstm, which reads time."""

import torch
from torch import nn

from models.nets import NetModel
from models.tab_transformer import FeatureTokenizer


class TabLSTMBody(nn.Module):
    def __init__(self, n_features: int, embed_dim: int, hidden: int, layers: int, dropout: float, bidirectional: bool):
        super().__init__()
        self.tokenizer = FeatureTokenizer(n_features, embed_dim)
        self.lstm = nn.LSTM(
            embed_dim,
            hidden,
            num_layers=layers,
            batch_first=True,
            bidirectional=bidirectional,
            dropout=dropout if layers > 1 else 0.0,
        )
        self.directions = 2 if bidirectional else 1
        self.out_features = hidden * self.directions

    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 1, F) -> (B, F, embed_dim): the row's features as a sequence of F tokens."""
        return self.tokenizer(x[:, -1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, (h_n, _) = self.lstm(self.tokens(x))
        # top layer's final state per direction (the backward one has read from the last feature to the first)
        return h_n[-self.directions :].transpose(0, 1).reshape(len(x), -1)


class TabLSTMModel(NetModel):
    input = "tabular"

    @staticmethod
    def build_body(arch: dict) -> nn.Module:
        return TabLSTMBody(
            arch["n_features"],
            arch["embed_dim"],
            arch["hidden"],
            arch["layers"],
            arch["dropout"],
            arch.get("bidirectional", False),
        )
