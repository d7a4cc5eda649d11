"""reward_based: the loss is the negative trading reward, costs lower turnover, forward returns are required."""

import pytest
import torch

from core.errors import UserError
from models.base import Rows
from tests.models.cpu_families_b.helpers import FAST, build, context, planted


def test_reward_based_loss_is_the_negative_reward():
    from models.reward_based import trading_reward

    model = build("reward_based", "model.cost=0.001", "model.risk_aversion=0.5")
    model.return_scale = 0.003
    pos = torch.tensor([0.5, -0.2, 0.9, 0.9], dtype=torch.float64)
    r = torch.tensor([0.004, -0.001, 0.002, -0.003], dtype=torch.float64)
    s, cost = 0.003, 0.001
    expected = (pos * r / s).mean() - cost / s * (pos[1:] - pos[:-1]).abs().mean() - 0.25 * ((pos * r / s) ** 2).mean()
    assert torch.isclose(model.loss(pos, r), -expected)
    assert torch.isclose(model.loss(pos, r), -trading_reward(pos, r / s, cost / s, "pnl", 0.5))


def test_reward_based_higher_cost_means_lower_turnover(tmp_path):
    train, val, _ = planted()
    turnover = {}
    for cost in (0.0, 0.004):
        model = build("reward_based", *FAST["reward_based"], f"model.cost={cost}")
        turnover[cost] = model.fit(train, val, context(tmp_path)).metrics["val/turnover"]
    assert turnover[0.004] < 0.5 * turnover[0.0]


def test_reward_based_without_forward_returns_is_a_user_error(tmp_path):
    train, val, _ = planted()
    plain = [Rows(r.features, r.rows, r.y) for r in (train, val)]
    with pytest.raises(UserError, match="forward return"):
        build("reward_based", *FAST["reward_based"]).fit(*plain, context(tmp_path))
