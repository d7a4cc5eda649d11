"""A small promoted LightGBM on synthetic 1m candles, trained once per test session, and what the runtime
tests feed it: the candles after its test start, served poll by poll."""

import json
import shutil
from pathlib import Path

import pandas as pd

from tests.conftest import FAST_DATA, make_cfg

TRAIN = [*FAST_DATA, "data.rows=6000", "target.horizon=4"]
SLOT = "synthetic-BTC/1m/direction_h4"
# the runtime reads the same generator further on: ~4,900 candles after the model's test start
SERVE = [*FAST_DATA, "data.rows=10000", "target.horizon=4", f"runtime.slots=[{SLOT}]"]


def promoted_world(base: Path) -> Path:
    """``base`` holding a registry whose slot serves a LightGBM with a policy that trades (trained once)."""
    done = base / "trained"
    if not done.exists():
        from trainer import train
        from trainer.registry import Registry

        result = train(
            make_cfg(
                "model=lightgbm",
                *TRAIN,
                "eval.policy.mode=fixed",
                "eval.trading.threshold=0.52",
                f"paths.output_dir={base}",
                run_dir=base / "train",
            )
        )
        reg = result.registry
        if reg["stage"] != "promoted":
            Registry(base / "registry").promote(reg["model_id"], reg["version"], force=True)
        done.write_text(result.data_summary.split_cutoffs["test_start"])
    return base


def runtime_overrides(base: Path, *extra: str) -> list[str]:
    """The runtime's config over the world in ``base``: a short feature history keeps each candle cheap."""
    return [*SERVE, f"paths.output_dir={base}", "runtime.history=300", *extra]


def candles_after_test_start(base: Path) -> tuple[pd.DataFrame, int]:
    """The BTC candles the runtime reads and the index of the first one after the model's test start."""
    from data.providers import load_candles

    cfg = make_cfg(*runtime_overrides(base))
    frame = load_candles(cfg.data, [str(s) for s in cfg.coin.symbols], cfg.seed).by_symbol
    ((symbol, candles),) = frame.items()
    test_start = pd.Timestamp((base / "trained").read_text())
    return candles.reset_index(drop=True), int(pd.DatetimeIndex(candles["timestamp"]).searchsorted(test_start))


class Polls:
    """A provider over stored candles: the first poll returns them up to ``first`` (exclusive), each next poll
    ``per_poll`` more, up to ``until``; polls listed in ``failing`` raise ConnectionError instead."""

    def __init__(self, candles: pd.DataFrame, first: int, per_poll: int, until: int, failing=(), symbol="BTC"):
        self.candles, self.end, self.per_poll, self.until = candles, first, per_poll, until
        self.failing, self.symbol, self.polls = set(failing), symbol, 0

    def __call__(self) -> dict[str, pd.DataFrame]:
        self.polls += 1
        if self.polls in self.failing:
            raise ConnectionError(f"provider unreachable (poll {self.polls})")
        frame = self.candles.iloc[: self.end].reset_index(drop=True)
        self.end = min(self.until, self.end + self.per_poll)
        return {self.symbol: frame}

    def polls_needed(self) -> int:
        """Polls until every candle up to ``until`` has been served (failing polls included)."""
        n = 1 + -(-max(0, self.until - self.end) // self.per_poll) + 1
        return n + sum(1 for p in self.failing if p <= n + len(self.failing))


def register_copy(reg, model_dir: Path, tmp: Path, slot_symbol: str, run_id: str, edit=None) -> dict:
    """A trained model dir registered again (under ``slot_symbol``'s slot, as ``run_id``) and promoted by
    force; ``edit(staged)`` may change its card or label first."""
    staged = tmp / f"stage-{slot_symbol}-{run_id}"
    shutil.copytree(model_dir, staged)
    card = json.loads((staged / "model_card.json").read_text())
    card["run_id"] = run_id
    (staged / "model_card.json").write_text(json.dumps(card))
    if edit:
        edit(staged)
    row = reg.register(
        {
            "family": "lightgbm",
            "symbol": slot_symbol,
            "timeframe": "1m",
            "target": "direction_h15",
            "headline": "accuracy",
            "headline_value": 0.5,
            "metrics": {},
            "gates": {"passed": False},
            "run_id": run_id,
            "run_dir": None,
            "git_commit": None,
            "config_hash": run_id,
            "data_fingerprint": "d",
        },
        staged,
        auto_promote=False,
    )
    reg.promote(row["model_id"], row["version"], force=True)
    return row
