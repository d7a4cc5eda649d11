"""Train one model family on the configured symbols: `python train.py model=lstm coin=BTC`."""

import os
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

import core.runinfo  # noqa: F401  registers ${run_stamp:}, which names run folders in conf/hydra

ROOT = Path(__file__).resolve().parent
os.environ.setdefault("CANDLELAB_ROOT", str(ROOT))


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float:
    from trainer.cli import run

    return run(cfg)


if __name__ == "__main__":
    from trainer.cli import guarded

    sys.exit(guarded(main, ROOT / "conf"))
