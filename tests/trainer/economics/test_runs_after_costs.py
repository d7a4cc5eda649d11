"""Whole runs: a planted signal beating costs is promoted, one below costs is not, a random walk never is."""

import json
from pathlib import Path

import pytest

from tests.conftest import make_cfg
from tests.trainer.economics.helpers import FAST
from trainer import train
from trainer.result import RunResult


@pytest.fixture(scope="module")
def registry_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("registry")


def _run(tmp_path: Path, root: Path, *overrides: str) -> RunResult:
    return train(make_cfg(*FAST, "experiment=tradeable", f"registry.root={root}", *overrides, run_dir=tmp_path / "run"))


def test_a_planted_signal_that_beats_costs_is_promoted(tmp_path, registry_root):
    result = _run(tmp_path, registry_root)
    assert result.verdict == {"predictive": True, "tradeable": True, "label": "tradeable after costs", "failed": []}
    econ = result.economic
    assert econ["passed"] and econ["n_trials"] == 1 and econ["dsr"] >= 0.95
    assert econ["checks"]["mean_net_return"]["value_bps"] > 0 and econ["checks"]["profit_factor"]["value"] > 1
    assert result.policy["chosen_on"] == "validation" and result.policy["validation"]["expectancy_bps"] > 0
    assert result.registry["promoted"] and result.gates["passed"]
    card = json.loads((Path(result.model_path) / "model_card.json").read_text())
    assert card["policy"] == result.policy  # the runtime trades exactly what was tested


def test_the_same_signal_with_moves_below_costs_is_predictive_not_tradeable(tmp_path, registry_root):
    # the same planted drift, in units of the per-candle volatility, at the default's 1m-sized moves (8 bps):
    # the direction is as predictable, but a 12-candle move is worth less than the ~29 bps round trip
    result = _run(tmp_path, registry_root, "data.volatility=0.0008")
    assert result.verdict["predictive"] and not result.verdict["tradeable"]
    assert result.verdict["label"] == "predictive, not tradeable after costs"
    assert not result.gates["passed"] and not result.registry["promoted"]
    assert result.registry["stage"] == "candidate"
    assert any("not tradeable after costs" in r for r in result.gates["reasons"])


def test_a_random_walk_is_never_promoted(tmp_path, registry_root):
    result = _run(tmp_path, registry_root, "data.signal_strength=0", "data.rows=20000")
    assert not result.verdict["tradeable"] and not result.registry["promoted"]
    assert not result.economic["passed"]
