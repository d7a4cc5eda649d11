"""Neuro-fuzzy network: membership functions over every input feature (computed in the network, so they
are differentiable and, by default, learned), a rule layer over the memberships, then an MLP whose output
feeds the shared head (models.nets). Features arrive standardised, so sets are placed in z-score units."""

import math

import torch
import torch.nn.functional as F
from torch import nn

from core.errors import UserError
from models.mlp import activation, mlp_stack
from models.nets import NetModel

SHAPES = ("gaussian", "triangular")
RULES = ("product", "min", "dense")


def _inverse_softplus(y: float) -> float:
    return y + math.log(-math.expm1(-y))


class Memberships(nn.Module):
    """(B, F) -> (B, F, n_sets) in [0, 1]: set m of feature f, centred at c[f, m] with width w[f, m].

    Sets start evenly spaced over [-span, span] with neighbours crossing at 0.5 (triangular) or ~0.6
    (gaussian). The two outer sets are shoulders (1 beyond their centres), so no value, however far out in
    the tails, falls outside every set."""

    def __init__(self, n_features: int, n_sets: int, shape: str, learnable: bool, span: float):
        super().__init__()
        if shape not in SHAPES:
            raise UserError(f"unknown membership {shape!r}; available: {', '.join(SHAPES)}", "model.membership")
        if n_sets < 2:
            raise UserError(f"n_sets must be at least 2, got {n_sets}", "model.n_sets")
        centres = torch.linspace(-span, span, n_sets).repeat(n_features, 1)
        raw_width = torch.full((n_features, n_sets), _inverse_softplus(2.0 * span / (n_sets - 1)))
        if learnable:
            self.centres = nn.Parameter(centres)
            self.raw_width = nn.Parameter(raw_width)
        else:  # fixed at initialisation, still saved with the weights
            self.register_buffer("centres", centres)
            self.register_buffer("raw_width", raw_width)
        self.shape = shape
        shoulder = torch.zeros(n_sets)
        shoulder[0], shoulder[-1] = -1.0, 1.0
        self.register_buffer("shoulder", shoulder, persistent=False)

    def widths(self) -> torch.Tensor:
        return F.softplus(self.raw_width) + 1e-3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        d = (x.unsqueeze(-1) - self.centres) / self.widths()
        d = torch.where(d * self.shoulder > 0, torch.zeros_like(d), d)  # beyond an outer centre: fully in the set
        if self.shape == "gaussian":
            return torch.exp(-0.5 * d * d)
        return torch.clamp(1.0 - d.abs(), min=0.0)


class FuzzyMLPBody(nn.Module):
    def __init__(
        self,
        n_features: int,
        n_sets: int,
        membership: str,
        learn_memberships: bool,
        span: float,
        rule: str,
        n_rules: int,
        hidden_sizes: list[int],
        dropout: float,
        act: str,
    ):
        super().__init__()
        if rule not in RULES:
            raise UserError(f"unknown rule layer {rule!r}; available: {', '.join(RULES)}", "model.rule")
        self.memberships = Memberships(n_features, n_sets, membership, learn_memberships, span)
        self.rule = rule
        if rule == "dense":
            self.rule_layer = nn.Sequential(nn.Linear(n_features * n_sets, n_rules), activation(act))
            width = n_rules
        else:  # one rule per (feature i set a, feature j set b), i < j: firing = t-norm(mu_ia, mu_jb)
            if n_features < 2:
                raise UserError("product/min rules pair features: at least 2 features needed", "model.rule")
            i, j = torch.triu_indices(n_features, n_features, offset=1)
            self.register_buffer("pair_i", i, persistent=False)
            self.register_buffer("pair_j", j, persistent=False)
            width = len(i) * n_sets * n_sets
        self.n_rules = width
        self.mlp = mlp_stack(width, hidden_sizes, dropout, act)
        self.out_features = hidden_sizes[-1] if hidden_sizes else width

    def firing(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 1, F) -> rule firing strengths (B, n_rules)."""
        mu = self.memberships(x[:, -1])
        if self.rule == "dense":
            return self.rule_layer(mu.flatten(1))
        a = mu.index_select(1, self.pair_i).unsqueeze(-1)  # (B, pairs, sets, 1)
        b = mu.index_select(1, self.pair_j).unsqueeze(-2)  # (B, pairs, 1, sets)
        fired = a * b if self.rule == "product" else torch.minimum(a, b)
        return fired.flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.firing(x))


class FuzzyMLPModel(NetModel):
    input = "tabular"

    @staticmethod
    def build_body(arch: dict) -> nn.Module:
        return FuzzyMLPBody(
            arch["n_features"],
            arch["n_sets"],
            arch["membership"],
            arch["learn_memberships"],
            float(arch.get("span", 2.0)),
            arch["rule"],
            arch.get("n_rules", 64),
            list(arch["hidden_sizes"]),
            arch["dropout"],
            arch.get("activation", "gelu"),
        )
