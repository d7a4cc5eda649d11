"""A data set too big for memory is refused before any feature is computed, with the estimate and the ways out;
the estimate grows linearly with candles (pooled symbols add, nothing per symbol is kept twice)."""

import json

import pytest

from core.errors import UserError
from data.memory import available_bytes, budget_from, check_fits, peak_bytes_per_candle
from tests.conftest import FAST_DATA, make_cfg
from trainer import train


def test_estimate_is_linear_in_candles_and_grows_with_features():
    per = peak_bytes_per_candle(30, 30, 0.7)
    assert check_fits(10 * 3_080_000, 10, 30, 30, 0.7, budget_gb=1e6) == 10 * check_fits(
        3_080_000, 1, 30, 30, 0.7, budget_gb=1e6
    )
    assert check_fits(1000, 1, 30, 30, 0.7, budget_gb=1e6) == 1000 * per
    assert peak_bytes_per_candle(13, 13, 0.7) < per < peak_bytes_per_candle(60, 30, 0.7)


def test_too_big_is_refused_with_estimate_and_options():
    with pytest.raises(UserError) as err:
        check_fits(10 * 3_080_000, 10, 30, 30, 0.7, budget_gb=4.0)
    message = err.value.line()
    assert "GB at its peak" in message and "4.0 GB is available" in message
    assert "data.rows" in message and "one run per symbol" in message and "features.select" in message


def test_a_run_over_its_memory_budget_stops_before_features(tmp_path):
    cfg = make_cfg(*FAST_DATA, "coin=majors", "trainer.memory_budget_gb=0.01", run_dir=tmp_path / "r")
    with pytest.raises(UserError, match="GB at its peak") as err:
        train(cfg)
    assert err.value.where == "trainer.memory_budget_gb"
    result = json.loads((tmp_path / "r" / "result.json").read_text())
    assert result["status"] == "failed"
    phases = [json.loads(x)["phase"] for x in (tmp_path / "r" / "progress.jsonl").read_text().splitlines()]
    assert "features" not in phases


@pytest.mark.parametrize("value", [0, -1, "lots"])
def test_budget_must_be_positive(value):
    with pytest.raises(UserError, match="memory_budget_gb"):
        budget_from(value)


def test_available_memory_is_read():
    assert available_bytes() is None or available_bytes() > 0
