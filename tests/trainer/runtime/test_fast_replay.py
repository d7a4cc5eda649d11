"""Fast replay: probabilities computed ahead over the stored candles equal the per-candle path's (features are
causal), and a paper session replayed both ways stores the same signals, fills, trades and equity."""

import json
import sqlite3
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from data.providers import load_candles
from tests.conftest import make_cfg
from trainer import train
from trainer.registry import Registry
from trainer.runtime.session import run
from trainer.runtime.signals import SignalEngine, load_promoted

SLOT = "synthetic-BTC/1m/direction_h15"
DATA = ["data.rows=12000", "logger=none"]
TRAIN = [
    "model=lightgbm",
    *DATA,
    "trainer.num_threads=1",
    "eval.leakage.shuffled_control=false",
    "eval.policy.mode=fixed",
    "eval.trading.threshold=0.52",
]  # a policy that trades: paper fills orders
REPLAYED = 160


@pytest.fixture(scope="module")
def promoted(tmp_path_factory):
    out = tmp_path_factory.mktemp("replay")
    result = train(make_cfg(*TRAIN, f"paths.output_dir={out}", run_dir=out / "train"))
    reg = result.registry
    if reg["stage"] != "promoted":
        Registry(out / "registry").promote(reg["model_id"], reg["version"], force=True)
    return out, result


def test_probabilities_computed_ahead_equal_the_per_candle_path(promoted):
    out, result = promoted
    cfg = make_cfg(*DATA, f"paths.output_dir={out}")
    candles = load_candles(cfg.data, ["BTC"], cfg.seed).by_symbol["BTC"]
    start = pd.Timestamp(result.data_summary.split_cutoffs["test_start"])
    first = int(candles["timestamp"].searchsorted(start))
    per_candle = SignalEngine(load_promoted(out / "registry", [SLOT]))
    ahead = SignalEngine(load_promoted(out / "registry", [SLOT]))
    picks = np.linspace(first, len(candles) - 1, 40).astype(int)
    stored = ahead.precompute({"BTC": candles}, start, chunk=700)  # several chunks: each starts its own features
    assert stored == len(candles) - first
    history = per_candle.history
    (table,) = ahead._precomputed.values()
    assert all(pd.Timestamp(t).value in table for t in candles["timestamp"].iloc[picks])  # read, not recomputed
    for i in picks:
        window = candles.iloc[max(0, i + 1 - history) : i + 1]
        want = per_candle.probabilities("BTC", window)
        got = ahead.probabilities("BTC", window)
        assert np.isfinite(want[0])
        np.testing.assert_allclose(got[:2], want[:2], rtol=0, atol=1e-9)
        assert got[2].keys() == want[2].keys()
    # it really reads what it computed ahead: a stored value is served even for a history that disagrees
    key = next(iter(ahead._precomputed))
    at = candles["timestamp"].iloc[picks[-1]]
    ahead._precomputed[key][pd.Timestamp(at).value] = (0.25, 0.75)
    assert ahead.probabilities("BTC", candles.iloc[: picks[-1] + 1])[:2] == (0.25, 0.75)


def _records(run_dir: Path) -> dict:
    with sqlite3.connect(run_dir / "runtime.db") as db:
        return {
            table: db.execute(f"SELECT * FROM {table} ORDER BY id").fetchall()
            for table in ("fills", "trades", "equity")
        } | {"signals": [json.loads(r[0]) for r in db.execute("SELECT row_json FROM signals ORDER BY id")]}


def test_a_paper_session_replayed_both_ways_is_the_same_session(promoted):
    out, _ = promoted
    runs = {}
    for precompute in (False, True):
        cfg = make_cfg(
            *DATA,
            f"paths.output_dir={out}",
            "runtime.mode=paper",
            f"runtime.replay.max_candles={REPLAYED}",
            f"runtime.replay.precompute={str(precompute).lower()}",
            f"runtime.run_dir={out / f'paper-{precompute}'}",
        )
        runs[precompute] = (run(cfg), _records(out / f"paper-{precompute}"))
    (slow_summary, slow), (fast_summary, fast) = runs[False], runs[True]
    assert slow_summary["steps"] == fast_summary["steps"] == REPLAYED
    assert len(slow["trades"]) > 0 and slow_summary["signals_emitted"] > 0
    assert len(slow["signals"]) == len(fast["signals"]) == REPLAYED
    for a, b in zip(slow["signals"], fast["signals"]):
        assert {k: v for k, v in a.items() if k not in ("p_long", "p_short", "confidence", "models")} == {
            k: v for k, v in b.items() if k not in ("p_long", "p_short", "confidence", "models")
        }
        np.testing.assert_allclose(
            [a["p_long"], a["p_short"], a["confidence"], *a["models"].values()],
            [b["p_long"], b["p_short"], b["confidence"], *b["models"].values()],
            rtol=0,
            atol=1e-9,
        )
    for table in ("fills", "trades", "equity"):
        assert len(slow[table]) == len(fast[table])
        for a, b in zip(slow[table], fast[table]):
            assert [x for x in a if not isinstance(x, float)] == [x for x in b if not isinstance(x, float)]
            np.testing.assert_allclose(
                [x for x in a if isinstance(x, float)], [x for x in b if isinstance(x, float)], rtol=0, atol=1e-9
            )
    assert fast_summary["equity"] == pytest.approx(slow_summary["equity"], abs=1e-9)
