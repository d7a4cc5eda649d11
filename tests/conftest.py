import os
import sys
import tempfile
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
os.environ.setdefault("CANDLELAB_ROOT", str(ROOT))
os.environ.setdefault("WANDB_MODE", "offline")
# runs, sweeps and the registry that tests create stay out of the checkout's outputs/
os.environ.setdefault("CANDLELAB_OUTPUT_DIR", tempfile.mkdtemp(prefix="candlelab-tests-"))
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def make_cfg(*overrides: str, run_dir: Path | None = None):
    """Compose the real config tree with overrides, as `python train.py ...` would."""
    extra = [f"paths.run_dir={run_dir}"] if run_dir is not None else []
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose(config_name="config", overrides=[*overrides, *extra])


# Small, fast variants of the two families for tests.
FAST_LSTM = [
    "model=lstm",
    "model.hidden=16",
    "model.layers=1",
    "model.window=16",
    "model.max_epochs=2",
    "model.batch_size=1024",
]
# The shuffled-label control (a second fit) is exercised in test_promotion; elsewhere it only costs time.
FAST_DATA = ["data.rows=20000", "trainer.num_threads=2", "logger=none", "eval.leakage.shuffled_control=false"]


@pytest.fixture
def shared_data() -> Path:
    if not (SHARED_DATA / "ohlcv").is_dir():
        pytest.skip(f"real market data not found at {SHARED_DATA} (expected beside the checkout)")
    return SHARED_DATA
